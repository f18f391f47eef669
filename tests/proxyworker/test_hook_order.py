"""The worker's hook completion in place (patches.py, 8) keeps mitmproxy's order of hooks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.proxyworker.conftest import REPO, free_port
from tests.proxyworker.hook_order_probe import HOOKS


def probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-O", "-m", "tests.proxyworker.hook_order_probe", mode, str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["plain", "patched"])
def test_every_flow_sees_its_hooks_in_order_and_gets_its_answer(mode):
    result = probe(mode)
    paths = [f"/seq/{i}" + ("/slow" if i % 3 == 0 else "") for i in range(12)]
    paths += [f"/par/{c}/{i}" + ("/slow" if (c + i) % 2 else "") for c in range(4) for i in range(6)]
    assert sorted(result["seen"]) == sorted(paths)
    for path in paths:
        assert result["seen"][path] == HOOKS, path
        answer = result["answers"][path]
        assert answer["status"] == 200 and answer["body"] == "ok"
        assert answer["hooks"] == "requestheaders,request,responseheaders,response"  # seen before it was sent
