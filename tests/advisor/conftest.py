from tests.platform.conftest import cast  # noqa: F401  the owner/admin/editor/viewer/outsider cast
