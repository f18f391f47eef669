"""Pebble validates HTTP-01 on one port; this front accepts its connections there and hands
them, in turn, to each worker's HTTP port, like DNS with one A record per worker: any worker may
be the one asked. Used by the tests and the issuance benchmark."""

from __future__ import annotations

import socket
import threading
from collections import Counter

from tests.e2e.processes import free_port


class ChallengeFront:
    """Accepts pebble's validation connections on one port and hands them, in turn, to each
    worker's HTTP port. Counts connections per worker so a test can show each was asked."""

    def __init__(self) -> None:
        self.port = free_port()
        self.backends: list[tuple[str, int]] = []
        self.asked: Counter[str] = Counter()
        self._next = 0
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="challenge-front")
        self._thread.start()

    def add(self, name: str, port: int) -> None:
        self.backends.append((name, port))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.backends:
                client.close()
                continue
            name, port = self.backends[self._next % len(self.backends)]
            self._next += 1
            self.asked[name] += 1
            threading.Thread(target=self._pipe_pair, args=(client, port), daemon=True).start()

    def _pipe_pair(self, client: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
