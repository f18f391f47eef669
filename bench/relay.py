"""A null proxy for scale: relays bytes between each client and the origin on uvloop, with no
HTTP work at all. What it adds to a request's latency is what the machine itself costs a proxy
(loopback hops, and the wake-ups of whichever core it runs on).

Run: python bench/relay.py PORT ORIGIN_PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Pipe(asyncio.Protocol):
    def __init__(self, peer: _Pipe | None = None):
        self.peer = peer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def connection_lost(self, exc) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(port: int, origin: int) -> None:
    loop = asyncio.get_running_loop()

    class Client(_Pipe):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.early: list[bytes] = []  # what arrives before the origin connection is up
            loop.create_task(self.connect())

        def data_received(self, data: bytes) -> None:
            if self.peer is None:
                self.early.append(data)
            else:
                self.peer.transport.write(data)

        async def connect(self) -> None:
            _, self.peer = await loop.create_connection(lambda: _Pipe(self), "127.0.0.1", origin)
            for data in self.early:
                self.peer.transport.write(data)

    server = await loop.create_server(Client, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
