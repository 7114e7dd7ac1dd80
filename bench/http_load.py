"""HTTP load for the API benchmark: POST GraphQL requests, return per-request latencies.

Two clients, the same questions:
- ``wrk`` (a native load generator, `apt install wrk`), the default when it is installed: its own
  cost per request is tens of microseconds, so the figures are the server's and loopback's.
  wrk runs for a fixed time over a connection pool, cycling through the request bodies; a
  Lua ``response`` hook reports the first GraphQL error (which fails the run), and ``done`` prints
  the latency percentiles.
- ``httpx`` (Python), the fallback: what a Python user's client sees, about 0.2 ms more per
  request than wrk on the development machine, and much more CPU per request, which matters
  when 16 clients share the server's cores.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%s}
local i = 0
local reported = false
function request()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
function response(status, headers, body)
  if not reported and (status ~= 200 or string.find(body, '"errors"', 1, true)) then
    reported = true
    io.write("GRAPHQL_ERROR " .. status .. " " .. body .. "\n")
  end
end
function done(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, ' ..
    '"socket_errors": %%d, "non_2xx": %%d}\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


@dataclass
class Load:
    """Latency figures of one load run (milliseconds) and its throughput."""

    p50_ms: float
    p99_ms: float
    req_per_s: float
    requests: int
    client: str


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, bodies: list[dict], connections: int, seconds: float) -> Load:
    """``wrk -t1 -c{connections}``: one client thread, so the client takes at most one core."""
    lua_bodies = ",".join("[==[" + json.dumps(b) + "]==]" for b in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % lua_bodies)
    try:
        proc = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                f.name,
                f"{url}/graphql",
            ],
            capture_output=True,
            text=True,
        )
    finally:
        Path(f.name).unlink()
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
    out = proc.stdout
    lines = out.strip().splitlines()
    fig = json.loads(lines[-1])
    failed = [line for line in lines if line.startswith("GRAPHQL_ERROR")]
    if failed or fig["socket_errors"] or fig["non_2xx"]:
        raise RuntimeError(f"wrk saw errors: {fig} {failed[:1]}")
    return Load(fig["p50_us"] / 1e3, fig["p99_us"] / 1e3, fig["requests"] / fig["seconds"], fig["requests"], "wrk")


def run_httpx(url: str, bodies: list[dict], connections: int) -> Load:
    """Each body once: one client in a loop, or ``connections`` asyncio clients sharing a pool."""
    if connections == 1:
        times = []
        with httpx.Client(timeout=60) as http:
            t0 = time.perf_counter()
            for b in bodies:
                t = time.perf_counter()
                check(http.post(f"{url}/graphql", json=b).json())
                times.append(time.perf_counter() - t)
            wall = time.perf_counter() - t0
    else:
        times, wall = asyncio.run(_httpx_concurrent(url, bodies, connections))
    return Load(percentile(times, 0.5) * 1e3, percentile(times, 0.99) * 1e3, len(times) / wall, len(times), "httpx")


async def _httpx_concurrent(url: str, bodies: list[dict], connections: int) -> tuple[list[float], float]:
    times, queue = [], list(bodies)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=connections)) as http:

        async def worker():
            while queue:
                b = queue.pop()
                t = time.perf_counter()
                check((await http.post(f"{url}/graphql", json=b)).json())
                times.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(connections)])
        return times, time.perf_counter() - t0


def check(body: dict) -> None:
    if "errors" in body:
        raise RuntimeError(f"GraphQL errors: {body['errors']}")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]
