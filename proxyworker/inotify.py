"""Wake up when a file in a directory is replaced, through Linux inotify (ctypes, no dependency).

The snapshot watcher still polls; this only lets it look at once when the agent renames a new
snapshot into place, instead of up to one poll interval later. Where inotify is missing (not
Linux, or the watch limit reached), ``DirectoryWatch.open`` returns None and polling alone serves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct

logger = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


class DirectoryWatch:
    """An inotify descriptor watching one directory for files written, created, renamed in or deleted."""

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def open(cls, directory: str) -> DirectoryWatch | None:
        try:
            libc = _lib()
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
            if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
                err = ctypes.get_errno()
                os.close(fd)
                raise OSError(err, f"inotify_add_watch {directory}")
        except (OSError, AttributeError) as exc:
            logger.info("no inotify for %s (%s): polling only", directory, exc)
            return None
        return cls(fd)

    def names(self) -> set[str]:
        """The names of the files events were seen for since the last call (never blocks)."""
        seen: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return seen
            if not data:
                return seen
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                seen.add(data[start:start + length].rstrip(b"\0").decode(errors="replace"))
                offset = start + length

    def close(self) -> None:
        os.close(self.fd)
