"""Reliability under attack: hostile GraphQL, publishes under load, and jobs killed at random.

    python bench/reliability.py [--hostile-s 5] [--publish-s 20] [--clients 8] [--kills 20] [--out FILE]

Three parts, against real components (a uvicorn server on loopback, `atlas db publish`, job
processes killed with SIGKILL), each printing its figures next to a reference measured in the same
run:

1. Hostile GraphQL. For each class (depth, aliases, fragment fan-out, tokens, bodies: huge /
   not JSON / deep JSON, ids: non-ASCII digits / leading zeros / 5,000 digits, arguments, expensive
   fields), ``--hostile-threads`` threads send it back to back for ``--hostile-s`` seconds while one
   thread measures ``{ __typename }``. Reported: requests, the share answered with the expected
   clear error (else a failure), the slowest hostile answer, and `{ __typename }` p50/p99 under the
   attack against the same measured without it (the reference).
2. Publish under load. ``--clients`` threads query one feature's strongest edge, whose weight names
   the version that answered, while a publisher publishes, in turn, a good version, a truncated
   file and a file with random bytes in a data block (both must be refused, link unchanged), and
   bursts of rapid publishes (keep=1). Reported: requests, errors, stale reads (a request started
   after a publish returned, answered by an older version), refused and accepted publishes, and
   whether the link ever dangled.
3. Kills. Every job in turn, WeightLens, activations (with ERA over WeightLens's virtual edges),
   CircuitLens and scores (random:tiny model, tiny transcoders), run as one process, is started on a
   fresh atlas and SIGKILLed at a random time of its work, again and again, until a run finishes
   (a cycle); then the content hashes of every table (bench/content_hash.py) are compared with an
   uninterrupted run's. Cycles repeat until ``--kills`` kills are done. Reported: kills, runs,
   cycles, tables that differ, rows lost / extra, 'running' rows left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

M = "gpt2-small"


# ---- a server on loopback ------------------------------------------------------------------------


def serve(path: Path):
    import uvicorn

    from api.app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(path), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ---- 1. hostile GraphQL ----------------------------------------------------------------------------


def fragment_bomb(levels: int) -> str:
    frags = " ".join(f"fragment F{i} on Feature {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels))
    return f'{{ feature(id: "{M}/2-synth/1") {{ ...F0 }} }} {frags} fragment F{levels} on Feature {{ id }}'


def hostile_classes() -> dict[str, tuple[dict, str]]:
    """class -> (httpx.post kwargs, a substring of the expected clear error)."""
    deep = "id"
    for _ in range(12):
        deep = f"upstream(topK: 1) {{ source {{ {deep} }} }}"

    def q(text):
        return {"json": {"query": text}}

    def raw(body):
        return {"content": body, "headers": {"content-type": "application/json"}}

    return {
        "depth": (q(f'{{ feature(id: "{M}/3-synth/1") {{ {deep} }} }}'), "exceeds maximum operation depth"),
        "aliases": (
            q("{ " + " ".join(f'a{i}: feature(id: "{M}/2-synth/{i}") {{ id }}' for i in range(60)) + " }"),
            "aliases found",
        ),
        "fragment fan-out (2**30)": (q(fragment_bomb(30)), "fields (fragments spread in full)"),
        "tokens": (q(f'{{ feature(id: "{M}/2-synth/1") {{ {" ".join(["id"] * 5000)} }} }}'), "token"),
        "body 5 MB": (raw(b'{"query": "{ __typename }", "v": "' + b"a" * (5 << 20) + b'"}'), "over the limit of"),
        "body not JSON": (raw(b"\xff\xfe{{{"), "not valid UTF-8"),
        "body JSON string": (raw(b'"{ __typename }"'), "must be a JSON object"),
        "body deep JSON": (raw(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
        "id non-ASCII digit": (q(f'{{ feature(id: "{M}/2-synth/\u0665") {{ id }} }}'), "is not of the form"),
        "id leading zero": (q(f'{{ feature(id: "{M}/2-synth/05") {{ id }} }}'), "is not of the form"),
        "id 5,000 digits": (q(f'{{ feature(id: "{M}/2-synth/{"9" * 5000}") {{ id }} }}'), "is not of the form"),
        "argument out of range": (q("{ features(first: 100000) { nodes { id } } }"), "out of range"),
        "expensive fields x20": (
            q("{ " + " ".join(f"s{i}: stats {{ nFeatures }}" for i in range(20)) + " }"),
            "query cost",
        ),
        "cost": (
            q(
                "{ features(first: 100) { nodes { upstream(topK: 100) { source { downstream(topK: 100) "
                "{ weight } } } } } }"
            ),
            "query cost",
        ),
    }


@dataclass
class HostileResult:
    name: str
    requests: int
    clear_errors: int
    slowest_s: float
    typename_p50_ms: float
    typename_p99_ms: float


def typename_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=60) as http:
        while not stop.is_set():
            t = time.perf_counter()
            r = http.post(f"{url}/graphql", json={"query": "{ __typename }"})
            out.append((time.perf_counter() - t) * 1000)
            assert r.json() == {"data": {"__typename": "Query"}}, r.text
            time.sleep(0.01)


def hostile(url: str, seconds: float, threads: int) -> tuple[dict, list[HostileResult]]:
    stop, base = threading.Event(), []
    t = threading.Thread(target=typename_latencies, args=(url, stop, base))
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    reference = {
        "typename_p50_ms": statistics.median(base),
        "typename_p99_ms": percentile(base, 0.99),
        "requests": len(base),
    }
    results = []
    for name, (kwargs, expected) in hostile_classes().items():
        counts = {"n": 0, "ok": 0, "slowest": 0.0}
        lock, stop, lat = threading.Lock(), threading.Event(), []

        def attack():
            with httpx.Client(timeout=60) as http:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = http.post(f"{url}/graphql", **kwargs)
                    dt = time.perf_counter() - t0
                    with lock:
                        counts["n"] += 1
                        counts["slowest"] = max(counts["slowest"], dt)
                        counts["ok"] += int(expected in r.text and r.status_code in (200, 400, 413))

        workers = [threading.Thread(target=attack) for _ in range(threads)]
        probe = threading.Thread(target=typename_latencies, args=(url, stop, lat))
        for w in workers + [probe]:
            w.start()
        time.sleep(seconds)
        stop.set()
        for w in workers + [probe]:
            w.join()
        results.append(
            HostileResult(
                name, counts["n"], counts["ok"], counts["slowest"], statistics.median(lat), percentile(lat, 0.99)
            )
        )
    return reference, results


# ---- 2. publish under load -------------------------------------------------------------------------


@dataclass
class PublishResult:
    requests: int
    errors: int
    stale_reads: int
    published: int
    refused: int
    refused_wrongly_accepted: int
    dangling_link_seen: int
    seconds: float


def publish_under_load(root: Path, seconds: float, clients: int) -> PublishResult:
    from atlas.errors import AtlasError
    from atlas.publish import publish
    from bench.synthetic_atlas import SyntheticSpec, build
    from tests.test_api_publish import QUERY, strongest_weight
    from tests.test_publish_integrity import damaged_copies

    spec = dict(n_layers=4, d_sae=64, k_up=6, n_tokens=2, n_examples=1)
    works = [build(root / f"work{seed}.duckdb", SyntheticSpec(**spec, seed=seed)) for seed in range(4)]
    weights = [strongest_weight(w) for w in works]
    assert len(set(weights)) == len(works)
    version_of = {w: i for i, w in enumerate(weights)}
    bad = []
    for i, w in enumerate(works[:2]):
        (root / f"bad{i}").mkdir()
        d = damaged_copies(w, root / f"bad{i}")
        bad += [d["truncated"], d["random-middle"]]
    link = root / "current.duckdb"
    publish(works[0], link)
    url, server = serve(link)

    # the publisher records (time the publish returned, work index) for stale-read detection
    published_at: list[tuple[float, int]] = [(time.monotonic(), 0)]
    counts = {"req": 0, "err": 0, "stale": 0, "pub": 1, "refused": 0, "wrong": 0, "dangling": 0}
    lock, stop = threading.Lock(), threading.Event()

    def client():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                start = time.monotonic()
                with lock:  # the last publish that returned before this request started
                    s = max(j for j, (t, _) in enumerate(published_at) if t <= start)
                try:
                    body = http.post(f"{url}/graphql", json={"query": QUERY}).json()
                    got = (
                        version_of.get(body["data"]["feature"]["upstream"][0]["weight"])
                        if "errors" not in body
                        else None
                    )
                except Exception:  # noqa: BLE001 - a dropped connection is an error
                    got = None
                with lock:
                    counts["req"] += 1
                    if got is None:
                        counts["err"] += 1
                    elif got not in {w for _, w in published_at[s:]}:  # older than what was live at the start
                        counts["stale"] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    t0, k = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        k += 1
        step = k % 4
        if step == 0:  # a burst of rapid publishes, keep=1
            for _ in range(5):
                i = random.randrange(len(works))
                publish(works[i], link, keep=1)
                with lock:
                    published_at.append((time.monotonic(), i))
                    counts["pub"] += 1
        elif step in (1, 3):  # a damaged file
            before = os.readlink(link)
            try:
                publish(random.choice(bad), link, keep=3)
                counts["wrong"] += 1
            except AtlasError:
                counts["refused"] += 1
            if os.readlink(link) != before:
                counts["wrong"] += 1
        else:
            i = random.randrange(len(works))
            publish(works[i], link, keep=3)
            with lock:
                published_at.append((time.monotonic(), i))
                counts["pub"] += 1
        if not (link.parent / os.readlink(link)).exists():
            counts["dangling"] += 1
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    server.should_exit = True
    return PublishResult(
        counts["req"],
        counts["err"],
        counts["stale"],
        counts["pub"],
        counts["refused"],
        counts["wrong"],
        counts["dangling"],
        time.monotonic() - t0,
    )


# ---- 3. kills ----------------------------------------------------------------------------------------

JOB = """
import sys, torch
sys.path.insert(0, {repo!r})
from tests.factories import random_transcoder_set
from atlas.config import ActivationsConfig, CircuitLensConfig, ScoringConfig, WeightLensConfig
from atlas.models import load_model
from ingest import activations, circuitlens, scoring
from ingest.weightlens import run_weightlens
model = load_model("random:tiny")
tset = random_transcoder_set(model, d_sae={d_sae}, seed=3)
tokens = torch.randint(0, 50000, ({n_docs}, 16), generator=torch.Generator().manual_seed(0))
print("started", flush=True)
run_weightlens(model, tset, sys.argv[1], WeightLensConfig(input_z=2.0, edge_z=2.0), model_id="tiny",
               model_spec="random:tiny")
acfg = ActivationsConfig(batch_size=8, n_samples=8, n_top=3, window_before=4, window_after=2)
activations.run(sys.argv[1], model, tset, tokens, acfg, model_id="tiny", model_spec="random:tiny")
ccfg = CircuitLensConfig(batch_size=32, min_samples=3, min_examples=4, n_output_positions=1, features_per_unit=4)
circuitlens.run(sys.argv[1], model, tset, tokens, ccfg, model_id="tiny", model_spec="random:tiny")
scoring.run(sys.argv[1], model, tset, tokens[::2], ScoringConfig(seq_len=16), model_id="tiny", model_spec="random:tiny")
print("finished", flush=True)
"""


@dataclass
class KillResult:
    kills: int
    runs: int
    cycles: int  # fresh atlases, each killed until a run finished, then compared
    tables_differing: list
    rows_lost: int
    rows_extra: int
    reference_run_s: float
    stale_running_rows: int


def kills(root: Path, n_kills: int, d_sae: int = 12, n_docs: int = 24) -> KillResult:
    from bench.content_hash import table_hashes

    script = root / "job.py"
    script.write_text(JOB.format(repo=str(REPO), d_sae=d_sae, n_docs=n_docs))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def start(path):
        return subprocess.Popen(
            [sys.executable, str(script), str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    ref = root / "reference.duckdb"
    t = time.monotonic()
    p = start(ref)
    assert p.stdout.readline().strip() == "started"
    t_started = time.monotonic()
    out = p.communicate()[0]
    assert p.returncode == 0 and "finished" in out, out
    work_s = time.monotonic() - t_started
    reference_s = time.monotonic() - t
    want = table_hashes(ref)

    import duckdb

    n, runs, cycles, differing, lost, extra, stale = 0, 0, 0, set(), 0, 0, 0
    rng = random.Random(0)
    while n < n_kills:  # a cycle: a fresh atlas, killed at random times until a run finishes
        cycles += 1
        path = root / f"killed{cycles}.duckdb"
        while True:
            runs += 1
            p = start(path)
            if p.stdout.readline().strip() != "started":
                p.wait()
                raise RuntimeError("the job did not start")
            time.sleep(rng.uniform(0, work_s))  # a random point of the work, often inside a unit
            if p.poll() is None and n < n_kills:
                p.send_signal(signal.SIGKILL)
                p.wait()
                n += 1
                continue
            out = p.communicate()[0]
            if p.returncode != 0 or "finished" not in out:
                raise RuntimeError(f"a resumed run failed ({p.returncode})")
            break
        got = table_hashes(path)
        with duckdb.connect(str(path), read_only=True) as con:
            stale += con.execute("SELECT count(*) FROM ingest_runs WHERE status = 'running'").fetchone()[0]
        differing |= {t for t in want if got.get(t) != want[t]}
        lost += sum(max(0, want[t][0] - got.get(t, (0, 0))[0]) for t in want)
        extra += sum(max(0, got.get(t, (0, 0))[0] - want[t][0]) for t in want)
        path.unlink()
    differing = sorted(differing)
    return KillResult(n, runs, cycles, differing, lost, extra, reference_s, stale)


# ---- main ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hostile-s", type=float, default=5.0)
    ap.add_argument("--hostile-threads", type=int, default=8)
    ap.add_argument("--publish-s", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--parts", default="hostile,publish,kills")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    report: dict = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    root = Path(tempfile.mkdtemp(prefix="atlas-reliability-"))
    try:
        if "hostile" in parts:
            from atlas.publish import publish
            from bench.synthetic_atlas import SyntheticSpec, build

            work = build(root / "h.duckdb", SyntheticSpec(n_layers=4, d_sae=64, k_up=6, n_tokens=3, n_examples=2))
            publish(work, root / "h-current.duckdb")
            url, server = serve(root / "h-current.duckdb")
            reference, results = hostile(url, args.hostile_s, args.hostile_threads)
            server.should_exit = True
            report["hostile"] = {"reference_no_attack": reference, "classes": [asdict(r) for r in results]}
            print(
                f"reference: {{ __typename }} without attack p50 {reference['typename_p50_ms']:.1f} ms "
                f"p99 {reference['typename_p99_ms']:.1f} ms ({reference['requests']} requests)"
            )
            print(f"{'class':<26} {'requests':>8} {'clear':>6} {'slowest s':>9} {'typename p50':>12} {'p99 ms':>8}")
            for r in results:
                print(
                    f"{r.name:<26} {r.requests:>8} {r.clear_errors:>6} {r.slowest_s:>9.2f} "
                    f"{r.typename_p50_ms:>12.1f} {r.typename_p99_ms:>8.1f}"
                )
        if "publish" in parts:
            (root / "pub").mkdir()
            res = publish_under_load(root / "pub", args.publish_s, args.clients)
            report["publish"] = asdict(res)
            print(
                f"publish under load ({args.clients} clients, {res.seconds:.0f} s): {res.requests} requests, "
                f"{res.errors} errors, {res.stale_reads} stale reads; {res.published} publishes, "
                f"{res.refused} damaged files refused, {res.refused_wrongly_accepted} wrongly accepted, "
                f"dangling link seen {res.dangling_link_seen} times"
            )
        if "kills" in parts:
            (root / "kills").mkdir()
            res = kills(root / "kills", args.kills)
            report["kills"] = asdict(res)
            print(
                f"kills: {res.kills} SIGKILLs over {res.runs} runs in {res.cycles} cycles; "
                f"tables differing from the uninterrupted run: "
                f"{res.tables_differing or 'none'}; rows lost {res.rows_lost}, extra {res.rows_extra}; "
                f"'running' rows left {res.stale_running_rows} (reference run {res.reference_run_s:.1f} s)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["load_avg_end"] = os.getloadavg()
    print(
        f"load average at start {report['load_avg_start'][0]:.2f}, at end {report['load_avg_end'][0]:.2f} "
        f"({report['cpus']} CPUs)"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
