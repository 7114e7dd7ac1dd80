"""One unit-of-work runner for every ingest job: plan shards, skip the done, compute, write, load, report.

A *shard* is a deterministic unit of work of one job (its parameters hash, a layer, a feature block):
its ``unit`` name is the row it gets in ``ingest_units``. The runner, shared by every job:
1. plans the job's shards (``job.plan``, on the driver, which holds the single ``AtlasWriter``);
2. skips shards already loaded into the atlas (``ingest_units`` for the same unit hash), and reuses
   shards already in the manifest whose files are whole (size and sha256 as recorded);
3. computes the others (``job.compute`` on a worker: the local process, or a Ray actor);
4. writes each shard's tables as Parquet files in the shard directory (``<table>.parquet`` under
   ``<unit>/``, written to a temporary name and renamed) and appends a manifest entry: row counts,
   content hash, timings, the code version and the parameters hash;
5. loads finished shards into DuckDB in plan order, one transaction each (``AtlasWriter.write_unit``:
   the shard's old rows deleted, the new ones inserted, the unit marked done), so surrogate ids come
   out the same whatever order the workers finish in; a shard file that is missing or whose hash
   differs is re-computed, never merged half;
6. reports progress (shards and rows per second, ETA) and a ``RunReport``;
7. once every unit is in the atlas, deletes the shard files and manifest (``keep_shards`` keeps them).

A job may instead split its work into *parts* that are not atlas units themselves (the activations
job: blocks of sequences for every layer). It then also has ``outputs(w)`` (the atlas units),
``take(shard, tables)`` (fold a loaded part in, on the driver, in plan order) and ``merge(ctx, out)``
(an output unit's tables, once every part is in). Parts are computed, recorded in the manifest and
reused exactly like units; the outputs are written in plan order once the last part is loaded, and
a run finds its outputs done (``ingest_units``) or computes them from the parts again.

The manifest (``manifest.jsonl``: a header line with the job, scope and parameters hash, then one
line per finished shard) has one writer, the driver. A manifest from other parameters is refused
with ``ManifestMismatchError``. Workers never touch the atlas; they read nothing but their inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from atlas.errors import AtlasError

# Fault injection for the worker-kill tests: "UNIT:MARKER" makes the process computing UNIT SIGKILL
# itself after computing and before writing, once (the marker file records that it happened).
KILL_ENV = "ATLAS_FAULT_KILL_SHARD"


class ManifestMismatchError(AtlasError):
    """A shard directory holds the manifest of another job, scope or parameters."""


@dataclass(frozen=True)
class Shard:
    unit: str  # its ingest_units name, e.g. 'layer-3' or 'layer-1-block-0'
    key: dict  # what compute needs (layer, block, ...); JSON-able
    chash: str  # the unit's parameters hash (ingest_units.config_hash)
    deps: tuple[str, ...] = ()  # units that must be loaded before this one's inputs are read
    deletes: tuple = ()  # (sql, params) removing the unit's old rows when it is loaded


def layer_shard(layer: int, chash: str, **rest) -> Shard:
    """The shard of one whole layer: unit 'layer-L', key {'layer': L}; ``rest`` its deps and deletes."""
    return Shard(unit=f"layer-{layer}", key={"layer": layer}, chash=chash, **rest)


@dataclass(frozen=True)
class Context:
    """What a worker computes with, loaded once per worker: the model, transcoders and corpus."""

    model: Any
    tset: Any
    tokens: Any = None


class ShardJob(Protocol):
    name: str  # ingest_units.job
    scope: str  # '{model_id}/{set_name}'
    params: dict  # the run's configuration (ingest_runs.config)

    def plan(self, w) -> list[Shard]: ...
    def inputs(self, w, shard: Shard) -> Any: ...  # driver side: may read the atlas
    def compute(self, ctx: Context, shard: Shard, inputs: Any) -> tuple[dict, dict]: ...  # tables, info
    def account(self, shard: Shard, info: dict) -> None: ...  # driver side: job report

    # optional: def started(self, w, run_id) -> None, called once the run's ingest_runs row exists
    # optional: the members of PartsJob, for a job of parts


class PartsJob(ShardJob, Protocol):
    """A job of parts (see the module's docstring): its shards are parts, its outputs the atlas units."""

    def outputs(self, w) -> list[Shard]: ...  # driver side: the atlas units, in plan order
    def take(self, shard: Shard, tables: dict) -> None: ...  # driver side: fold a loaded part in
    def merge(self, ctx: Context, out: Shard) -> dict: ...  # an output unit's tables, every part taken


def is_parts_job(job: ShardJob) -> TypeGuard[PartsJob]:
    """Whether ``job`` is a job of parts: it has ``outputs`` (and so ``take`` and ``merge``)."""
    return hasattr(job, "outputs")


@dataclass
class RunReport:
    shards: int = 0
    done_before: int = 0  # already in the atlas
    reused: int = 0  # in the manifest, loaded without computing
    computed: int = 0
    rerun_bad_files: int = 0  # manifest entry with a missing or corrupt file
    written: int = 0  # atlas units written by this run
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # compute, write (workers); load, wall (driver)
    run_id: str | None = None

    @property
    def loaded(self) -> int:
        return self.reused + self.computed

    def summary(self) -> dict:
        """The figures a job's small report carries: shards computed / reused, rows, seconds."""
        return {
            "computed": self.computed,
            "reused": self.reused,
            "rerun_bad_files": self.rerun_bad_files,
            "rows": sum(self.rows.values()),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "local"  # 'local' or 'ray'
    address: str | None = None  # Ray: HOST:PORT, 'auto', or None (start a local one)
    workers: int | None = None  # Ray actors (default: the cluster's CPUs, at most the shards)
    shard_dir: str | None = None  # default: '<db>.shards/<job>-<params hash>'
    keep_shards: bool = False  # keep the shard files once every unit is in the atlas


LOCAL = ExecutorConfig()


@lru_cache(maxsize=1)
def code_version() -> str:
    """atlas's version and a hash of the sources that compute shards (ingest/, atlas/lens/)."""
    from atlas import __version__

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for p in sorted([*root.glob("ingest/*.py"), *root.glob("atlas/lens/*.py")]):
        h.update(p.name.encode() + p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def params_hash(params: dict) -> str:
    from atlas.db import config_hash

    return config_hash(params)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unit_dir(shard_dir: Path, unit: str) -> Path:
    return shard_dir / unit.replace("/", "_")


# ---- the worker side: compute and write one shard --------------------------------------------------


def run_shard(job: ShardJob, ctx: Context, shard: Shard, inputs: Any, shard_dir: str) -> dict:
    """Compute one shard and write its Parquet files; returns its manifest entry (no atlas access)."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    tables, info = job.compute(ctx, shard, inputs)
    t1 = time.perf_counter()
    _maybe_kill(shard.unit)
    out = _unit_dir(Path(shard_dir), shard.unit)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, table in tables.items():
        path = out / f"{name}.parquet"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        files[name] = {
            "path": str(path.relative_to(shard_dir)),
            "rows": len(table),
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }
    return {
        "unit": shard.unit,
        "chash": shard.chash,
        "files": files,
        "info": info,
        "seconds": {"compute": t1 - t0, "write": time.perf_counter() - t1},
        "code_version": code_version(),
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }


def _maybe_kill(unit: str) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    target, _, marker = spec.partition(":")
    if target == unit and marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


# ---- the manifest ------------------------------------------------------------------------------------


class Manifest:
    """``manifest.jsonl`` of one shard directory; the driver is its only writer."""

    def __init__(self, shard_dir: Path, job: ShardJob, phash: str):
        self.dir, self.path = shard_dir, shard_dir / "manifest.jsonl"
        header = {"job": job.name, "scope": job.scope, "params_hash": phash}
        self.entries: dict[str, dict] = {}
        if self.path.exists() and self.path.stat().st_size:
            lines = self.path.read_text().splitlines()
            try:
                got = json.loads(lines[0])
            except json.JSONDecodeError:
                raise ManifestMismatchError(f"{self.path}: not a shard manifest (first line is not JSON)") from None
            if {k: got.get(k) for k in header} != header:
                raise ManifestMismatchError(
                    f"{self.path} is the manifest of job {got.get('job')!r}, scope {got.get('scope')!r}, parameters "
                    f"{got.get('params_hash')!r}; this run is {job.name!r}, {job.scope!r}, parameters {phash!r}: "
                    "use another shard directory (--shards) or remove that one"
                )
            for line in lines[1:]:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: that shard is re-run
                    continue
                self.entries[e["unit"]] = e
        else:
            shard_dir.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({**header, "code_version": code_version()}) + "\n")

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["unit"]] = entry

    def whole(self, entry: dict) -> bool:
        """Every file of the entry is present with the size and hash recorded."""
        for f in entry["files"].values():
            p = self.dir / f["path"]
            if not p.exists() or p.stat().st_size != f["bytes"] or file_sha256(p) != f["sha256"]:
                return False
        return True

    def read(self, entry: dict, run_id: str) -> dict:
        """The entry's tables, their run_id column set to the loading run."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = {}
        for name, f in entry["files"].items():
            t = pq.read_table(self.dir / f["path"])
            if len(t) != f["rows"]:
                raise AtlasError(f"{self.dir / f['path']}: {len(t)} rows, the manifest says {f['rows']}")
            if "run_id" in t.column_names:
                t = t.set_column(t.column_names.index("run_id"), "run_id", pa.array([run_id] * len(t), pa.string()))
            out[name] = t
        return out


# ---- the driver: the same loop for every executor ------------------------------------------------------


def default_shard_dir(db_path, job: ShardJob, phash: str) -> Path:
    return Path(f"{db_path}.shards") / f"{job.name}-{job.scope.replace('/', '_')}-{phash}"


def run_job(
    job: ShardJob, ctx: Context, db_path, w, executor: ExecutorConfig = LOCAL, progress_label: str | None = None
) -> RunReport:
    """Run every shard of ``job`` not yet in the atlas, with the writer ``w`` open on ``db_path``."""
    from atlas.progress import progress

    t_start = time.perf_counter()
    report = RunReport()
    phash = params_hash(job.params)
    shard_dir = Path(executor.shard_dir) if executor.shard_dir else default_shard_dir(db_path, job, phash)
    manifest = Manifest(shard_dir, job, phash)
    shards = job.plan(w)
    parts = job if is_parts_job(job) else None  # a job of parts: its outputs are the atlas units
    units = parts.outputs(w) if parts is not None else shards
    report.shards = len(shards)
    todo_units = [s for s in units if not w.unit_done(job.name, job.scope, s.unit, s.chash)]
    report.done_before = len(units) - len(todo_units)
    if not todo_units:
        _clean(manifest, shards, executor)
        return report
    todo = shards if parts is not None else todo_units
    reuse = _reusable(manifest, todo, report)
    with w.run(job.name, job.params.get("model_id"), job.params) as run_id:
        report.run_id = run_id
        if hasattr(job, "started"):  # optional: a job's own columns of its ingest_runs row
            job.started(w, run_id)
        label = progress_label or f"{job.name} {job.scope}"
        with progress(label, total=len(todo), unit="shards") as bar:

            def load(shard: Shard, entry: dict, computed: bool) -> None:
                t0 = time.perf_counter()
                if computed:
                    manifest.append(entry)
                tables = manifest.read(entry, run_id)
                if parts is not None:
                    parts.take(shard, tables)
                else:
                    _write(w, job, shard, run_id, tables, report)
                report.seconds["load"] = report.seconds.get("load", 0.0) + time.perf_counter() - t0
                for stage, s in entry["seconds"].items():
                    if computed:
                        report.seconds[stage] = report.seconds.get(stage, 0.0) + s
                if computed:
                    report.computed += 1
                else:
                    report.reused += 1
                job.account(shard, entry["info"])
                bar.advance(1)

            _execute(job, ctx, w, todo, reuse, shard_dir, executor, load)
        if parts is not None:  # the outputs, in plan order, from every part
            for out in todo_units:
                t0 = time.perf_counter()
                _write(w, job, out, run_id, parts.merge(ctx, out), report)
                report.seconds["merge"] = report.seconds.get("merge", 0.0) + time.perf_counter() - t0
    _clean(manifest, shards, executor)
    report.seconds["wall"] = time.perf_counter() - t_start
    return report


def _reusable(manifest: Manifest, todo: list[Shard], report: RunReport) -> dict[str, dict]:
    """The manifest entries of ``todo`` with the same parameters and whole files; counts the others."""
    reuse = {}
    for s in todo:
        e = manifest.entries.get(s.unit)
        if e is not None and e["chash"] == s.chash:
            if manifest.whole(e):
                reuse[s.unit] = e
            else:
                report.rerun_bad_files += 1
    return reuse


def _write(w, job: ShardJob, unit: Shard, run_id: str, tables: dict, report: RunReport) -> None:
    """One atlas unit, in one transaction: its old rows deleted, ``tables`` inserted, the unit marked done."""
    w.write_unit(
        job=job.name,
        scope=job.scope,
        unit=unit.unit,
        chash=unit.chash,
        run_id=run_id,
        deletes=list(unit.deletes),
        inserts=tables,
    )
    report.written += 1
    for name, t in tables.items():
        report.rows[name] = report.rows.get(name, 0) + len(t)


def _execute(
    job: ShardJob, ctx: Context, w, todo: list[Shard], reuse: dict, shard_dir: Path, executor: ExecutorConfig, load
) -> None:
    """Compute (or reuse) every shard of ``todo``, calling ``load`` for each in plan order."""
    if executor.kind == "local":
        for s in todo:
            if s.unit in reuse:
                load(s, reuse[s.unit], computed=False)
            else:
                load(s, run_shard(job, ctx, s, job.inputs(w, s), str(shard_dir)), computed=True)
    elif executor.kind == "ray":
        from ingest.ray_executor import run_on_ray

        run_on_ray(job, ctx, w, todo, reuse, str(shard_dir), executor, load)
    else:
        raise AtlasError(f"unknown executor {executor.kind!r}: use 'local' or 'ray'")


def _clean(manifest: Manifest, shards: list[Shard], executor: ExecutorConfig) -> None:
    """Every unit is in the atlas: delete the shards' files and the manifest (unless kept), then the
    shard directory and ``DB.shards/`` if nothing else is left in them."""
    if executor.keep_shards:
        return
    import shutil

    for unit in {*manifest.entries, *(s.unit for s in shards)}:
        d = _unit_dir(manifest.dir, unit)
        if d.is_dir():
            shutil.rmtree(d)
    manifest.path.unlink(missing_ok=True)
    for folder in (manifest.dir, manifest.dir.parent if executor.shard_dir is None else None):
        if folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def table_hashes(db_path, tables, exclude=("run_id", "created_at", "completed_at")) -> dict[str, str]:
    """A content hash per table: every row, every column but ``exclude``, in sorted order."""
    import duckdb

    out = {}
    with duckdb.connect(str(db_path), read_only=True) as con:
        for t in tables:
            cols = [r[0] for r in con.execute(f"DESCRIBE {t}").fetchall() if r[0] not in exclude]
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY ALL").fetchall()
            out[t] = hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
    return out
