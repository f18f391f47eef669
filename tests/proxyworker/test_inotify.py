"""The directory watch that wakes the snapshot watcher."""

from __future__ import annotations

import os

from proxyworker import snapshot as snap
from proxyworker.inotify import DirectoryWatch


def test_names_the_file_renamed_into_the_directory(tmp_path):
    watch = DirectoryWatch.open(str(tmp_path))
    assert watch is not None  # Linux: the worker's supported platform
    try:
        assert watch.names() == set()  # nothing yet, and never blocks
        snap.write_file_atomic(str(tmp_path / "snapshot.json"), b"{}")
        names = watch.names()
        assert "snapshot.json" in names
        os.unlink(tmp_path / "snapshot.json")
        assert watch.names() == {"snapshot.json"}
    finally:
        watch.close()


def test_a_missing_directory_means_polling_only(tmp_path):
    assert DirectoryWatch.open(str(tmp_path / "absent")) is None
