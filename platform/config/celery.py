from __future__ import annotations

import os

from celery import Celery

from . import paths  # noqa: F401  (the repository root, for proxyworker)
import proxyworker.fsbroker  # noqa: F401,E402  registers the portico-fs:// transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("portico")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
