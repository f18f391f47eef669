from __future__ import annotations

import os

from celery import Celery

import proxyworker.fsbroker  # noqa: F401  registers the portico-fs:// transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("portico")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
