"""API latency on a GPT-2-small-scale synthetic atlas, against the same questions as raw DuckDB SQL.

1. Build (or reuse) the synthetic atlas (bench/synthetic_atlas.py; default 12 layers x 24,576
   features, k_up 40 -> ~10.8M virtual + ~2.2M ERA/TWERA edges) and publish it (materialized
   adjacency lists); both times are printed.
2. Start `atlas serve` in its own process on a loopback port.
3. For each question (feature lookup, top-k upstream, drivers(X via Y), drivers(X via layer),
   3-hop paths) over a fixed sample of features: p50 / p99 latency through HTTP + GraphQL with
   1 client and with 16 concurrent clients (bench/http_load.py: wrk when installed, for a few
   seconds cycling through the samples; else httpx, each sample once), and the same question
   answered in this process by
   the same named SQL on a read-only connection (1 thread, each sample once; and 16 threads in a
   closed loop for as long as wrk runs). Paths run the same
   beam (api/graph.py) in-process. Also a naive top-k on the raw `edges` table. Every question
   first runs once untimed over all samples on both sides, so both are measured with warm caches.
4. Reference figures measured in the same run: an empty GraphQL query (`{ __typename }`, the
   HTTP + GraphQL floor, with wrk and with httpx) and DuckDB's full-scan rate over the edges.

    PYTHONPATH=. python -m bench.bench_api [--out DIR] [--layers 12 --d-sae 24576 --k-up 40] [--n 200]
                                           [--workers 1] [--client wrk|httpx] [--seconds 4]
                                           [--republish] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from api import graph, queries
from api.context import Context, Version
from api.limits import ApiLimits
from atlas.ids import make_fid
from atlas.publish import publish
from bench.http_load import Load, have_wrk, percentile, run_httpx, run_wrk

Q_LOOKUP = """query($x: ID!) { feature(id: $x) { id layer description validated stats { frequency maxAct }
  inputTokens(first: 5) { token score } outputTokens(first: 5) { token score } } }"""
Q_TOPK = "query($x: ID!) { feature(id: $x) { upstream(topK: 10) { weight source { id } } } }"
Q_VIA = """query($x: ID!, $y: ID!) { drivers(target: $x, via: $y, topK: 10) {
  driver { id } product first { weight } second { weight } } }"""
Q_VIA_LAYER = """query($x: ID!, $l: Int!) { drivers(target: $x, viaLayer: $l, topK: 10, fanout: 20) {
  driver { id } via { id } product } }"""
Q_PATHS = """query($a: ID!, $x: ID!) { paths(source: $a, target: $x, maxHops: 3, fanout: 10, beam: 200, topK: 10) {
  score hops features { id } } }"""


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of durations in seconds, in milliseconds."""
    return percentile(xs, q) * 1e3


def build_atlas(out: Path, args) -> tuple[Path, dict]:
    from bench.synthetic_atlas import SyntheticSpec, build

    work, link = out / f"work-{args.layers}x{args.d_sae}x{args.k_up}.duckdb", out / "current.duckdb"
    times = {}
    if not work.exists():
        t = time.perf_counter()
        build(work, SyntheticSpec(n_layers=args.layers, d_sae=args.d_sae, k_up=args.k_up))
        times["build_s"] = time.perf_counter() - t
    if not link.exists() or args.republish:
        t = time.perf_counter()
        publish(work, link, keep=1)
        times["publish_s"] = time.perf_counter() - t
    return link, times


def sample(con, n: int, seed: int = 0) -> list[dict]:
    """Targets X in layers >= 3 with their strongest upstream Y, and a source A three hops up."""
    rng = random.Random(seed)
    layers = con.execute("SELECT layer, sid, d_sae, model_id, source_id FROM sources ORDER BY layer").fetchall()
    out = []
    while len(out) < n:
        layer, sid, d_sae, model, source = layers[rng.randrange(3, len(layers))]
        x = make_fid(sid, rng.randrange(d_sae))
        chain = [x]
        for _ in range(3):  # walk up the strongest edge into the layer just below, 3 times
            r = con.execute(
                "SELECT src_fid FROM edges WHERE dst_fid = $f AND kind = 'virtual' ORDER BY abs(weight) DESC LIMIT 1",
                {"f": chain[-1]},
            ).fetchone()
            if r is None:
                break
            chain.append(r[0])
        if len(chain) < 4:
            continue
        pid = con.execute(
            "SELECT public_id, layer FROM feature_ids WHERE fid IN ($a, $b, $c) ORDER BY fid",
            {"a": x, "b": chain[1], "c": chain[3]},
        ).fetchall()
        ids = {f: p for f, p in zip(sorted([x, chain[1], chain[3]]), pid)}
        out.append(
            {
                "x": ids[x][0],
                "y": ids[chain[1]][0],
                "a": ids[chain[3]][0],
                "l": ids[chain[1]][1],
                "fx": x,
                "fy": chain[1],
                "fa": chain[3],
            }
        )
    return out


def start_server(link: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--db", str(link), "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.post(f"{url}/graphql", json={"query": "{ __typename }"}, timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def sql_runner(version: Version):
    """The same question as the API, answered in-process by the same named SQL (no HTTP, no GraphQL)."""
    lim = ApiLimits()

    def ask(question: str, s: dict):
        ctx = Context(version, lim)
        if question == "lookup":
            ctx.rows(queries.FEATURE_CORE, {"fid": s["fx"]})
            ctx.rows(queries.feature_tokens(["input"]), {"fid": s["fx"], "limit": 5})
            ctx.rows(queries.feature_tokens(["promoted", "suppressed"]), {"fid": s["fx"], "limit": 5})
        elif question == "topk_upstream":
            ctx.rows(queries.neighbours("edges_in"), {"fid": s["fx"], "kind": "virtual", "limit": 10})
        elif question == "drivers_via":
            ctx.rows(queries.drivers_via_feature(), {"target": s["fx"], "via": s["fy"], "kind": "virtual", "limit": 10})
        elif question == "drivers_via_layer":
            ctx.rows(
                queries.drivers_via_layer(layer=True),
                {
                    "target": s["fx"],
                    "kind": "virtual",
                    "limit": 10,
                    "fanout": 20,
                    "sids": ctx.catalog.sids(None, [s["l"]]),
                },
            )
        elif question == "paths_3hop":
            graph.paths(ctx, s["fa"], s["fx"], 3, "virtual", None, 0, 10, 200, 10)
        elif question == "naive_topk_edges":
            ctx.rows(
                "SELECT src_fid, weight FROM edges WHERE dst_fid = $f AND kind = 'virtual' "
                "ORDER BY abs(weight) DESC LIMIT 10",
                {"f": s["fx"]},
            )

    return ask


def sql_single(ask, question: str, samples: list[dict]) -> Load:
    times = []
    for s in samples:
        t = time.perf_counter()
        ask(question, s)
        times.append(time.perf_counter() - t)
    return Load(pct(times, 0.5), pct(times, 0.99), len(times) / sum(times), len(times), "in-process")


def sql_concurrent(ask, question: str, samples: list[dict], clients: int, seconds: float) -> Load:
    """``clients`` threads in a closed loop for ``seconds``, each cycling through the samples from
    its own offset: the steady state that wrk measures on the API side."""
    times, deadline = [], time.perf_counter() + seconds

    def worker(offset: int):
        i = offset
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            ask(question, samples[i % len(samples)])
            times.append(time.perf_counter() - t)
            i += 1

    threads = [threading.Thread(target=worker, args=(k * len(samples) // clients,)) for k in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return Load(pct(times, 0.5), pct(times, 0.99), len(times) / (time.perf_counter() - t0), len(times), "in-process")


def api_load(client: str, url: str, bodies: list[dict], connections: int, seconds: float) -> Load:
    return run_wrk(url, bodies, connections, seconds) if client == "wrk" else run_httpx(url, bodies, connections)


QUESTIONS = {
    "lookup": (Q_LOOKUP, lambda s: {"x": s["x"]}),
    "topk_upstream": (Q_TOPK, lambda s: {"x": s["x"]}),
    "drivers_via": (Q_VIA, lambda s: {"x": s["x"], "y": s["y"]}),
    "drivers_via_layer": (Q_VIA_LAYER, lambda s: {"x": s["x"], "l": s["l"]}),
    "paths_3hop": (Q_PATHS, lambda s: {"a": s["a"], "x": s["x"]}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/atlas-bench")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--k-up", type=int, default=40)
    ap.add_argument("--n", type=int, default=200, help="requests per question and mode")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="`atlas serve --workers`")
    ap.add_argument(
        "--client",
        choices=["wrk", "httpx"],
        default="wrk" if have_wrk() else "httpx",
        help="HTTP load generator (default: wrk when installed)",
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="wrk: seconds per question and mode")
    ap.add_argument("--republish", action="store_true", help="publish again even if current exists")
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    link, build_times = build_atlas(out, args)

    version = Version(os.path.realpath(link), ApiLimits())
    con = version.cursor()
    n_edges = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    t = time.perf_counter()
    con.execute("SELECT sum(weight), count(*) FROM edges").fetchall()
    scan = n_edges / (time.perf_counter() - t)
    samples = sample(con, args.n)
    ask = sql_runner(version)
    proc, url = start_server(link, args.workers)
    results = {
        "atlas": {"layers": args.layers, "d_sae": args.d_sae, "edges": n_edges, **build_times},
        "reference": {"duckdb_scan_rows_per_s": scan},
        "questions": {},
    }
    try:
        run_httpx(url, [{"query": Q_LOOKUP, "variables": {"x": s["x"]}} for s in samples[:40]], 1)  # warm up
        empty = [{"query": "{ __typename }"}] * args.n
        floor = {"wrk": run_wrk(url, empty, 1, args.seconds)} if have_wrk() else {}
        floor["httpx"] = run_httpx(url, empty, 1)
        results["reference"]["empty_request"] = {k: vars(v) for k, v in floor.items()}
        print(
            f"atlas: {args.layers} x {args.d_sae} features, {n_edges:,} edges; "
            + ", ".join(f"{k} {v:.1f} s" for k, v in build_times.items())
        )
        print(
            f"server: atlas serve --workers {args.workers}; API client: {args.client}; "
            "clients and server share this machine"
        )
        print(
            "reference: empty GraphQL query "
            + ", ".join(f"{k} p50 {v.p50_ms:.2f} ms p99 {v.p99_ms:.2f} ms" for k, v in floor.items())
            + f"; DuckDB full scan {scan / 1e6:.0f} M edges/s; cores {os.cpu_count()}, "
            f"load {os.getloadavg()[0]:.2f}"
        )
        print(f"{'question':<20}{'mode':<10}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'requests':>10}")
        for q, (text, make) in QUESTIONS.items():
            bodies = [{"query": text, "variables": make(s)} for s in samples]
            run_httpx(url, bodies, 1)  # one untimed pass each (checking every answer): both sides warm
            sql_single(ask, q, samples)
            r = {
                "api_1": api_load(args.client, url, bodies, 1, args.seconds),
                "sql_1": sql_single(ask, q, samples),
                f"api_{args.clients}": api_load(args.client, url, bodies, args.clients, args.seconds),
                f"sql_{args.clients}": sql_concurrent(ask, q, samples, args.clients, args.seconds),
            }
            fig = {mode: vars(load) for mode, load in r.items()}
            for mode, load in r.items():
                print(
                    f"{q:<20}{mode:<10}{load.p50_ms:>9.2f}{load.p99_ms:>9.2f}{load.req_per_s:>9.0f}{load.requests:>10}"
                )
            for n in (1, args.clients):
                fig[f"api_over_sql_p50_{n}"] = r[f"api_{n}"].p50_ms / r[f"sql_{n}"].p50_ms
            print(
                f"{q:<20}API/SQL p50: 1 client {fig['api_over_sql_p50_1']:.2f}x, "
                f"{args.clients} clients {fig[f'api_over_sql_p50_{args.clients}']:.2f}x"
            )
            results["questions"][q] = fig
        naive = sql_single(ask, "naive_topk_edges", samples)
        results["questions"]["naive_topk_on_edges_table"] = {"sql_1": vars(naive)}
        print(f"{'naive top-k (edges)':<20}{'sql_1':<10}{naive.p50_ms:>9.2f}{naive.p99_ms:>9.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
