.PHONY: run test lint bench

# Quick start: web :8000, Celery worker + beat, a proxy worker on :8080/:8443 and a demo origin,
# on SQLite and a filesystem broker under var/. Ctrl-C stops everything.
run:
	@scripts/run

# The whole suite against real Postgres, Redis and pebble on 127.0.0.1.
test:
	@scripts/test

lint:
	@.venv/bin/ruff check .
