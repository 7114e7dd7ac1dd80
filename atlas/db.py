"""STORE: every connection to an atlas database goes through this module.

- The schema is created and upgraded only by the numbered alembic scripts in ``migrations/``
  (``upgrade``); a database made by a newer version of atlas is refused (``SchemaError``).
- Ingest has one writer (``AtlasWriter``). Work is written in *units* (e.g. one layer of one
  job): the unit's old rows are deleted, the new ones inserted and the unit marked done in one
  transaction, so a job killed half-way leaves no half-written unit and a re-run resumes at the
  first unit that is not done.
- Serving opens the file read-only and hardened (``connect_readonly``): no file access, no
  extensions, no settings changes, a memory cap and a per-statement time limit.
- ``verify`` proves a file whole (schema, every table read to its end); publishing a working atlas
  for serving is atlas/publish.py.
- SQL uses named parameters only (``$name``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from atlas import __version__
from atlas.dbfile import open_duckdb, read_every_table
from atlas.errors import AtlasError, CorruptDatabaseError, SchemaError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Fault injection for the crash-and-resume tests and bench/reliability.py. ATLAS_FAULT_AFTER_UNITS
# names a point: "N" (or "N:mid-unit"): after N committed units, inside the next unit's
# transaction, before its commit; "N:after-commit": right after the N-th unit's commit, before
# anything else. There the process dies (os._exit(137): no cleanup, no rollback, no commit), or,
# with ATLAS_FAULT_MODE=raise, raises InjectedFault (for in-process tests).
FAULT_ENV = "ATLAS_FAULT_AFTER_UNITS"
FAULT_MODE_ENV = "ATLAS_FAULT_MODE"


class InjectedFault(BaseException):
    """The fault ATLAS_FAULT_AFTER_UNITS asked for (a BaseException: no job code catches it)."""


# ---- schema --------------------------------------------------------------------------------


def _alembic_config():
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # only if migrations/versions/ lost its scripts: the package is broken
        raise RuntimeError("migrations/versions/ holds no revision: this install of atlas is incomplete")
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def current_revision(con: duckdb.DuckDBPyConnection) -> str | None:
    """The schema revision stored in the database, or None for a database with no atlas schema."""
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alembic_version'"
    ).fetchall()[0][0]
    if not has_table:
        return None
    rows = con.execute("SELECT version_num FROM alembic_version").fetchall()
    return rows[0][0] if rows else None


def check_schema(con: duckdb.DuckDBPyConnection, path: str | Path) -> str:
    """Raise SchemaError unless the database holds the schema this version of atlas writes."""
    try:
        rev = current_revision(con)
    except duckdb.Error as exc:
        raise CorruptDatabaseError(
            f"{path} is damaged: its schema revision cannot be read ({str(exc).splitlines()[0]})"
        ) from None
    if rev is None:
        raise SchemaError(f"{path} is not an atlas database (no schema); create it with `atlas db init {path}`")
    if rev not in known_revisions():
        raise SchemaError(
            f"{path} has schema revision {rev!r}, made by a newer version of atlas "
            f"(this one knows up to {head_revision()!r}); upgrade atlas to read it"
        )
    if rev != head_revision():
        raise SchemaError(
            f"{path} has schema revision {rev!r}; run `atlas db upgrade {path}` (head is {head_revision()!r})"
        )
    return rev


def upgrade(path: str | Path) -> str:
    """Create the database if needed and bring its schema to the newest revision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with open_duckdb(path, read_only=False) as con:  # read-write: a lock another process holds is refused here
            try:
                rev = current_revision(con)
            except duckdb.Error as exc:
                raise CorruptDatabaseError(f"{path} is damaged: {str(exc).splitlines()[0]}") from None
        if rev is not None and rev not in known_revisions():
            raise SchemaError(
                f"{path} has schema revision {rev!r}, made by a newer version of atlas; refusing to touch it"
            )
        if rev == head_revision():
            return rev
    _migrate(path)
    return head_revision()


def _migrate(path: Path) -> None:
    """Run the alembic scripts from the file's revision to head (SQLAlchemy through duckdb_engine)."""
    import sqlalchemy
    from alembic import command

    atexit.unregister(_release_duckdb_engine)  # one entry however many migrations the process runs
    atexit.register(_release_duckdb_engine)
    engine = sqlalchemy.create_engine(f"duckdb:///{path}")
    try:
        with engine.begin() as connection:
            cfg = _alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()


def _release_duckdb_engine() -> None:
    """Clear duckdb_engine's module namespaces at interpreter exit, after its last use.

    In a process that loaded torch and duckdb_engine's SQLAlchemy dialect (which only migrations
    use), CPython's finalization leaves objects of duckdb's bindings reachable until after nanobind's
    exit-time check, which then reports duckdb's type constants, and the functions and types they
    keep, as "leaked" (found by bisection: dropping duckdb_engine's namespaces first ends it; nothing
    leaks while the process runs). Clearing them here lets finalization free everything in order.
    """
    for name, module in list(sys.modules.items()):
        if (name == "duckdb_engine" or name.startswith("duckdb_engine.")) and module is not None:
            module.__dict__.clear()


# ---- read-only serving -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOnlyLimits:
    memory_limit: str = "2GB"
    threads: int = 2
    max_execution_time_ms: int = 5000  # per statement
    # DuckDB answers `ORDER BY .. LIMIT n` (n <= 50) by a top-n over row ids and a second scan to
    # fetch the other columns. That wins for analytical SQL over whole tables (2-3x, `atlas sql`)
    # and loses for the API's lookups of one feature's rows (a top-k of upstream edges: 1.2 ms
    # with it, 0.8 ms without), so the server turns it off.
    late_materialization: bool = True


def connect_readonly(path: str | Path, limits: ReadOnlyLimits = ReadOnlyLimits()) -> duckdb.DuckDBPyConnection:
    """A hardened read-only connection: no writes, no file access, no extensions, no SET."""
    path = Path(path)
    con = open_duckdb(
        path,
        read_only=True,
        config={
            "enable_external_access": False,
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
            "memory_limit": limits.memory_limit,
            "threads": limits.threads,
        },
    )
    check_schema(con, path)  # before the time limit: a tiny limit must not refuse a good file
    ms = int(limits.max_execution_time_ms)
    locked, current_ms = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('max_execution_time')"
    ).fetchall()[0]
    if locked:  # this process already opened the file read-only: DuckDB shares one instance per file
        if int(current_ms) != ms:
            con.close()
            raise AtlasError(f"{path} is already open in this process with a time limit of {current_ms} ms, not {ms}")
        return con
    # GLOBAL, not a session SET: cursors (per-thread connections) inherit it.
    con.execute(f"SET GLOBAL max_execution_time = {ms}")
    if not limits.late_materialization:
        con.execute("SET GLOBAL late_materialization_max_rows = 0")
    con.execute("SET lock_configuration = true")
    return con


# ---- the single writer -------------------------------------------------------------------------


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable hash of a job's configuration: a unit is 'done' for one configuration only."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AtlasWriter:
    """The one read-write connection of an ingest job."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        upgrade(self.path)
        self.con = open_duckdb(self.path, read_only=False)
        check_schema(self.con, self.path)
        self._units_committed = 0

    def close(self) -> None:
        self.con.execute("CHECKPOINT")
        self.con.close()

    def __enter__(self) -> AtlasWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- queries

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.con.execute(sql, params or {})

    def fetchall(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return self.con.execute(sql, params or {}).fetchall()

    # -- runs

    def start_run(self, job: str, model_id: str | None, config: Mapping[str, Any]) -> str:
        """Record a new run. Runs still 'running' are stale: this writer holds the only read-write
        connection, so the process that started them is gone (killed); they are marked failed."""
        run_id = uuid.uuid4().hex
        self.execute(
            "UPDATE ingest_runs SET status = 'failed', finished_at = current_timestamp, "
            "error = 'interrupted: the process ended before the run finished (found when run ' || $run_id "
            "|| ' started)' WHERE status = 'running'",
            {"run_id": run_id},
        )
        self.execute(
            "INSERT INTO ingest_runs (run_id, job, model_id, config, status, atlas_version) "
            "VALUES ($run_id, $job, $model_id, $config, 'running', $version)",
            {
                "run_id": run_id,
                "job": job,
                "model_id": model_id,
                "config": json.dumps(config, default=str),
                "version": __version__,
            },
        )
        return run_id

    def finish_run(self, run_id: str, error: str | None = None) -> None:
        self.execute(
            "UPDATE ingest_runs SET status = $status, finished_at = current_timestamp, error = $error "
            "WHERE run_id = $run_id",
            {"status": "failed" if error else "done", "error": error, "run_id": run_id},
        )

    @contextmanager
    def run(self, job: str, model_id: str | None, config: Mapping[str, Any]) -> Iterator[str]:
        run_id = self.start_run(job, model_id, config)
        try:
            yield run_id
        except BaseException as exc:  # record the failure, then let it propagate
            self.finish_run(run_id, error=f"{type(exc).__name__}: {exc}")
            raise
        self.finish_run(run_id)

    # -- units of work

    def unit_done(self, job: str, scope: str, unit: str, chash: str) -> bool:
        row = self.fetchall(
            "SELECT 1 FROM ingest_units WHERE job = $job AND scope = $scope AND unit = $unit AND config_hash = $h",
            {"job": job, "scope": scope, "unit": unit, "h": chash},
        )
        return bool(row)

    def write_unit(
        self,
        *,
        job: str,
        scope: str,
        unit: str,
        chash: str,
        run_id: str,
        deletes: Sequence[tuple[str, Mapping[str, Any]]] = (),
        inserts: Mapping[str, Any] = {},
    ) -> int:
        """Replace one unit's rows atomically.

        ``deletes`` are (sql, params) statements that remove the unit's old rows; ``inserts``
        maps a table name to a pyarrow Table / pandas DataFrame whose columns are inserted by
        name (missing columns take their defaults). Returns the number of rows inserted.
        """
        n_rows = 0
        self.con.execute("BEGIN TRANSACTION")
        try:
            for sql, params in deletes:
                self.con.execute(sql, dict(params))
            for table, data in inserts.items():
                n_rows += self.insert(table, data)
            self._maybe_fault("mid-unit")
            self.con.execute(
                "INSERT OR REPLACE INTO ingest_units (job, scope, unit, config_hash, run_id, n_rows) "
                "VALUES ($job, $scope, $unit, $h, $run_id, $n)",
                {"job": job, "scope": scope, "unit": unit, "h": chash, "run_id": run_id, "n": n_rows},
            )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self._units_committed += 1
        self._maybe_fault("after-commit")
        return n_rows

    def insert(self, table: str, data: Any) -> int:
        """Bulk-insert a pyarrow Table or pandas DataFrame into ``table`` by column name."""
        if table not in _WRITABLE_TABLES:
            raise ValueError(f"unknown table {table!r}")
        n = len(data)
        if n == 0:
            return 0
        self.con.register("_atlas_insert", data)  # replaced by the next insert; no unregister, which
        self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _atlas_insert")  # fails in an aborted transaction
        return n

    def _maybe_fault(self, point: str) -> None:
        spec = os.environ.get(FAULT_ENV)
        if spec is None:
            return
        count, _, at = spec.partition(":")
        at = at or "mid-unit"
        if at not in ("mid-unit", "after-commit"):
            raise ValueError(f"{FAULT_ENV}={spec!r}: the point is 'mid-unit' or 'after-commit'")
        n = int(count)
        if at == point and (self._units_committed == n if at == "after-commit" else self._units_committed >= n):
            if os.environ.get(FAULT_MODE_ENV) == "raise":
                raise InjectedFault(f"{FAULT_ENV}={spec}")
            os._exit(137)  # as if killed: no cleanup, no rollback, no commit

    # -- models and sources

    def upsert_model(self, row: Mapping[str, Any]) -> None:
        cols = list(row)
        values = {k: (json.dumps(v) if k == "provenance" and v is not None else v) for k, v in row.items()}
        self.execute(
            f"INSERT OR REPLACE INTO models ({', '.join(cols)}) VALUES ({', '.join('$' + c for c in cols)})",
            values,
        )

    def upsert_source(self, row: Mapping[str, Any]) -> int:
        """Register one transcoder layer (and its feature rows); returns its integer key ``sid``."""
        existing = self.fetchall(
            "SELECT sid, d_sae FROM sources WHERE model_id = $model_id AND source_id = $source_id",
            {"model_id": row["model_id"], "source_id": row["source_id"]},
        )
        values = {k: (json.dumps(v) if k == "provenance" and v is not None else v) for k, v in row.items()}
        cols = [c for c in values if c != "sid"]
        self.con.execute("BEGIN TRANSACTION")
        try:
            if existing:
                sid, d_sae = existing[0]
                if d_sae != row["d_sae"]:
                    raise SchemaError(
                        f"source {row['model_id']}/{row['source_id']} is in the atlas with width {d_sae}, "
                        f"not {row['d_sae']}; use a new set name or a new database"
                    )
                changed = {c: values[c] for c in cols if c not in ("model_id", "source_id")}
                assignments = ", ".join(f"{c} = ${c}" for c in changed)
                self.con.execute(f"UPDATE sources SET {assignments} WHERE sid = {int(sid)}", changed)
            else:
                sid = self.con.execute(
                    f"INSERT INTO sources ({', '.join(cols)}) "
                    f"VALUES ({', '.join('$' + c for c in cols)}) RETURNING sid",
                    values,
                ).fetchall()[0][0]
                self.con.execute(
                    "INSERT INTO features (fid, sid, layer, idx) "
                    "SELECT make_fid($sid, i), $sid, $layer, i FROM range($d_sae) t(i)",
                    {"sid": sid, "layer": row["layer"], "d_sae": row["d_sae"]},
                )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return int(sid)


_WRITABLE_TABLES = {
    "models",
    "sources",
    "features",
    "source_metrics",
    "feature_weightlens",
    "feature_tokens",
    "edges",
    "feature_stats",
    "examples",
    "attributions",
    "clusters",
    "cluster_members",
    "explanations",
    "scores",
}


# ---- proving a file whole (`atlas db status`, `atlas db publish`) --------------------------------


@dataclass(frozen=True)
class VerifiedAtlas:
    path: Path  # the file checked
    revision: str  # its schema revision (this version's head)
    tables: tuple  # of atlas.dbfile.TableRows: every base table and its row count, read to its end

    def rows(self) -> dict[str, int]:
        return {t.table: t.rows for t in self.tables}


def verify(path: str | Path) -> VerifiedAtlas:
    """Prove an atlas file whole: it opens read-only, holds this version's schema, and every column
    of every table reads to its end (atlas/dbfile.py). Raises a named AtlasError otherwise."""
    path = Path(path)
    con = open_duckdb(
        path, read_only=True, config={"enable_external_access": False, "autoload_known_extensions": False}
    )
    try:
        rev = check_schema(con, path)
        return VerifiedAtlas(path, rev, tuple(read_every_table(con, path)))
    finally:
        con.close()
