from __future__ import annotations

import importlib
import os

from celery import Celery

from . import paths  # noqa: F401  the repository root, home of proxyworker, on sys.path

# Registers the portico-fs:// transport; imported by name because it needs `paths` first.
importlib.import_module("proxyworker.fsbroker")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("portico")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
