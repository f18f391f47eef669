"""A small origin server for the quick start's demo site."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Portico demo origin</title></head>
<body><h1>Hello from the demo origin</h1><p>This page reached you through a Portico proxy worker.</p></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-origin/1.0"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Cache-Control", "public, max-age=60")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    ThreadingHTTPServer((host, port), Handler).serve_forever()
