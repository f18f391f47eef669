"""kombu's filesystem transport, made safe for the embedded quick start.

Stock ``filesystem://`` writes each message straight into its final file name while readers poll
the folder without locking, so a reader can pick up a half-written file (a Celery worker then dies
with JSONDecodeError). Writing to a ``*.part`` name and renaming makes each message appear whole:
readers only pick names ending in ``.<queue>.msg``. Registered as the ``portico-fs://`` transport;
every process must point at the same folder (``data_folder_in == data_folder_out``).
"""

from __future__ import annotations

import os
import time
import uuid

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        with open(final + ".part", "wb") as fh:
            fh.write(dumps(payload).encode())
        os.replace(final + ".part", final)


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES.setdefault("portico-fs", "proxyworker.fsbroker:Transport")
