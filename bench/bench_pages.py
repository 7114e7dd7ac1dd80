"""Server-side time per browser page on a GPT-2-small-scale synthetic atlas, beside the API's figures.

1. Build (or reuse) and publish the synthetic atlas exactly as bench/bench_api.py does (default
   12 layers x 24,576 features, k_up 40 -> ~13M edges), and draw its sample of features
   (targets X in layers >= 3, their strongest upstream Y, a source A three hops up).
2. Server-side, in this process: for each page (index, search by token, search by text, feature
   page, drivers(X via Y), drivers(X via layer), paths(A, X)) over the samples, the time of the
   page's builder (api/pages/data.py: its named SQL on a read-only connection, with the API's
   limits) plus its HTML rendering, one request at a time; p50 / p99. Every page runs once
   untimed per sample first (warm caches, as the API benchmark does).
3. Through HTTP (`atlas serve` in its own process on loopback, httpx, one client): the same pages,
   and, as the API figures beside them, the GraphQL feature lookup of bench_api and an empty
   GraphQL query (the HTTP + GraphQL floor).
4. Machine reference measured in the same run: DuckDB's full-scan rate over the edges, cores and
   load average.

    PYTHONPATH=. python -m bench.bench_pages [--out DIR] [--layers 12 --d-sae 24576 --k-up 40] [--n 200]
                                             [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx

from api.context import Context, Version
from api.limits import ApiLimits
from api.pages import data, render
from bench.bench_api import Q_LOOKUP, build_atlas, pct, sample, start_server

# page -> (builder, renderer, path params of a sample, query params of a sample, URL of a sample)
PAGES = {
    "index": (data.index, render.index, lambda s: {}, lambda s: {}, lambda s: "/"),
    "search_token": (data.index, render.index, lambda s: {}, lambda s: {"q": " Paris"}, lambda s: "/?q=+Paris"),
    "search_text": (
        data.index,
        render.index,
        lambda s: {},
        lambda s: {"q": "river", "by": "text"},
        lambda s: "/?q=river&by=text",
    ),
    "feature": (
        data.feature,
        render.feature,
        lambda s: dict(zip(("model", "source", "index"), s["x"].split("/"))),
        lambda s: {},
        lambda s: f"/feature/{s['x']}",
    ),
    "drivers_via": (
        data.drivers,
        render.drivers,
        lambda s: {},
        lambda s: {"target": s["x"], "via": s["y"]},
        lambda s: f"/circuit/drivers?target={s['x']}&via={s['y']}",
    ),
    "drivers_layer": (
        data.drivers,
        render.drivers,
        lambda s: {},
        lambda s: {"target": s["x"], "viaLayer": str(s["l"])},
        lambda s: f"/circuit/drivers?target={s['x']}&viaLayer={s['l']}",
    ),
    "paths": (
        data.paths,
        render.paths,
        lambda s: {},
        lambda s: {"source": s["a"], "target": s["x"]},
        lambda s: f"/circuit/paths?source={s['a']}&target={s['x']}",
    ),
}


def server_side(version: Version, page: str, samples: list[dict]) -> list[float]:
    build, draw, path, params, _ = PAGES[page]
    times = []
    for s in samples:
        t = time.perf_counter()
        draw(build(Context(version, ApiLimits()), path(s), params(s)))
        times.append(time.perf_counter() - t)
    return times


def over_http(url: str, paths: list[str]) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=60, headers={"accept": "text/html"}) as c:
        for p in paths:
            t = time.perf_counter()
            r = c.get(p)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, (p, r.status_code, r.text[-300:])
    return times


def graphql(url: str, bodies: list[dict]) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for b in bodies:
            t = time.perf_counter()
            r = c.post("/graphql", json=b)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200 and "errors" not in r.json(), r.text[-300:]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/atlas-bench")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--k-up", type=int, default=40)
    ap.add_argument("--n", type=int, default=200, help="samples per page")
    ap.add_argument("--republish", action="store_true")
    ap.add_argument("--json", default=None)
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
    results = {
        "atlas": {"layers": args.layers, "d_sae": args.d_sae, "edges": n_edges, **build_times},
        "reference": {"duckdb_scan_rows_per_s": scan, "cores": os.cpu_count()},
        "pages": {},
        "api": {},
    }
    print(
        f"atlas: {args.layers} x {args.d_sae} features, {n_edges:,} edges; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in build_times.items())
    )
    print(f"{'page':<16}{'mode':<14}{'p50 ms':>9}{'p99 ms':>9}{'n':>6}")

    def show(name: str, mode: str, xs: list[float]) -> dict:
        fig = {"p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99), "n": len(xs)}
        print(f"{name:<16}{mode:<14}{fig['p50_ms']:>9.2f}{fig['p99_ms']:>9.2f}{fig['n']:>6}")
        return fig

    for page in PAGES:
        server_side(version, page, samples)  # untimed warm-up pass
        results["pages"][page] = {"server_side": show(page, "server-side", server_side(version, page, samples))}
    proc, url = start_server(link)
    try:
        for page, spec in PAGES.items():
            paths = [spec[4](s) for s in samples]
            over_http(url, paths)
            results["pages"][page]["http"] = show(page, "http", over_http(url, paths))
        bodies = [{"query": Q_LOOKUP, "variables": {"x": s["x"]}} for s in samples]
        graphql(url, bodies)
        results["api"]["feature_lookup"] = show("api lookup", "http graphql", graphql(url, bodies))
        results["api"]["empty_query"] = show(
            "api empty", "http graphql", graphql(url, [{"query": "{ __typename }"}] * len(samples))
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    load = os.getloadavg()
    results["reference"]["load_avg"] = load
    print(
        f"reference: DuckDB full scan {scan / 1e6:.0f} M edges/s; cores {os.cpu_count()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    version.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
