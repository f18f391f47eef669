"""The source tree's promises: platform/ is a source root that never shadows the standard library."""

from __future__ import annotations

import importlib
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_platform_is_the_standard_library():
    import platform

    assert platform.system()  # e.g. "Linux"; would fail if platform/ were imported as a package
    assert Path(platform.__file__).resolve().parent == Path(sysconfig.get_paths()["stdlib"]).resolve()


def test_platform_folder_is_a_source_root_not_a_package():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert str(ROOT / "platform") in [str(Path(p).resolve()) for p in sys.path if p]


def test_control_plane_apps_import_from_the_source_root():
    for app in ("config", "tenancy", "audit", "edge", "certs", "fleet"):
        module = importlib.import_module(app)
        assert Path(module.__file__).resolve().is_relative_to(ROOT / "platform"), app
