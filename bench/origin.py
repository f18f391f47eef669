"""A small origin server for the fault and soak benchmarks, run as a process of its own so that a
benchmark can kill it: ``python -m bench.origin --port P --name NAME [--body-bytes N] [--cache-control V]``.

HTTP/1.1 with keep-alive; every answer names the origin in ``X-Backend`` so clients can see where a
request went. The body is HTML-like text (compressible) of ``--body-bytes``; ``/health`` answers 200.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.origin")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--body-bytes", type=int, default=64)
    ap.add_argument("--cache-control", default="no-store")
    args = ap.parse_args(argv)
    line = f"<p>{args.name}: the quick brown fox jumps over the lazy dog.</p>\n".encode()
    body = (line * (args.body_bytes // len(line) + 1))[: args.body_bytes]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            payload = b"ok" if self.path.startswith("/health") else body
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", args.cache_control)
            self.send_header("X-Backend", args.name)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
