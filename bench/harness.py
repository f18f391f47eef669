"""What every benchmark here shares: running wrk and reading its report."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, *, threads: int, conns: int, duration: int, headers: dict[str, str] | None = None,
        cpus: str | None = None) -> dict:
    """One wrk run (with --latency), on the given cores (taskset) if any. ``errors`` is
    non-2xx/3xx answers plus socket errors."""
    args = (["taskset", "-c", cpus] if cpus else []) + ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]  # "Name: value" with the space, or wrk sends a second Host
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)) if sock else {}
    result = {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": float(p50.group(1)) * _UNITS[p50.group(2)],
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors,
    }
    result["errors"] = result["non_2xx"] + sum(socket_errors.values())
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (clock ticks of /proc/<pid>/stat). CPU time per
    request is what a request costs a worker whatever else the machine is doing; requests/s on a
    busy machine mostly measures the neighbours."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_facts(load_before: tuple[float, float, float]) -> dict:
    """What every recorded result starts with: when, on what machine, how busy, at which commit."""
    root = Path(__file__).resolve().parents[1]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip(),
    }
