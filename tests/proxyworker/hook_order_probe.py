"""Run by test_hook_order.py in its own process: an embedded mitmproxy in reverse mode, with or
without the worker's patches, records the hooks each flow sees while clients send requests
(in sequence on one connection, and on several connections at once; some requests make an addon
suspend). Prints what was seen as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

from mitmproxy import options
from mitmproxy.addons import errorcheck, next_layer, proxyserver
from mitmproxy.master import Master

from proxyworker import patches

HOOKS = ["requestheaders", "request", "responseheaders", "response"]


class Recorder:
    def __init__(self):
        self.seen: dict[str, list[str]] = {}

    def _record(self, name, flow):
        self.seen.setdefault(flow.request.path, []).append(name)

    def requestheaders(self, flow):
        self._record("requestheaders", flow)

    async def request(self, flow):
        self._record("request", flow)
        if "slow" in flow.request.path:
            await asyncio.sleep(0.01)  # this hook suspends: it completes through the lock

    def responseheaders(self, flow):
        self._record("responseheaders", flow)

    def response(self, flow):
        self._record("response", flow)
        flow.response.headers["x-hooks"] = ",".join(self.seen[flow.request.path])


async def backend(reader, writer):
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()


async def client(port, paths, answers):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for path in paths:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: probe.test\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(2)
        hooks = [line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"x-hooks")]
        answers[path] = {"status": int(head.split()[1]), "body": body.decode(), "hooks": hooks[0] if hooks else None}
    writer.close()


async def main(patched: bool, proxy_port: int) -> None:
    if patched:
        patches.apply(reuse_port=False, max_header_bytes=32 * 1024)
    origin = await asyncio.start_server(backend, "127.0.0.1", 0)
    origin_port = origin.sockets[0].getsockname()[1]
    opts = options.Options(mode=[f"reverse:http://127.0.0.1:{origin_port}@127.0.0.1:{proxy_port}"])
    master = Master(opts)
    recorder = Recorder()
    master.addons.add(proxyserver.Proxyserver(), next_layer.NextLayer(), errorcheck.ErrorCheck(), recorder)
    opts.update(connection_strategy="lazy")
    run = asyncio.create_task(master.run())
    for _ in range(100):
        await asyncio.sleep(0.05)
        try:
            (await asyncio.open_connection("127.0.0.1", proxy_port))[1].close()
            break
        except OSError:
            pass
    answers: dict[str, dict] = {}
    await client(proxy_port, [f"/seq/{i}" + ("/slow" if i % 3 == 0 else "") for i in range(12)], answers)
    await asyncio.gather(*(client(proxy_port, [f"/par/{c}/{i}" + ("/slow" if (c + i) % 2 else "") for i in range(6)], answers)
                           for c in range(4)))
    master.shutdown()
    await run
    print(json.dumps({"seen": recorder.seen, "answers": answers}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] == "patched", int(sys.argv[2])))
