"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

# Browser tests run the live server in a thread next to Playwright's event loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
