"""The served database and the per-request context.

Zero-downtime publishing (atlas/publish.py) flips a ``current`` symlink to a new
versioned file. ``AtlasDatabase`` serves through that path:

1. At the start of each request, ``acquire()`` stats the path (one ``stat``, which follows the
   link). If it is a different file than the current version's (device and inode; the current
   file is open, so its inode cannot be reused), it resolves the new target, opens it read-only
   and hardened (``atlas.db.connect_readonly``) and makes it current; the old version is *retired*.
2. The request holds the version it acquired until it ends (``release()``), so an in-flight
   request finishes on the file it started on.
3. A retired version is closed (its per-thread cursors, then its connection) when its last
   request releases it. Failing to open a new file (half-copied, wrong schema) keeps serving the
   old one and retries on the next request.

A whole GraphQL request executes in one worker thread (api/schema.py, ``AtlasSchema.execute``),
its resolvers synchronous, with that thread's own cursor of the version's connection: one
thread hand-off per request, not per statement. DuckDB's ``max_execution_time`` bounds each
statement and ``Context.deadline`` bounds the request.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from api.errors import TimeLimit
from api.limits import ApiLimits
from atlas import db
from atlas.errors import NotFoundError
from atlas.ids import FeatureRef, make_fid, split_fid


@functools.lru_cache(maxsize=512)
def _names(sql: str) -> frozenset[str]:
    """The named parameters a statement uses (optional filters leave some of a call's params unused)."""
    return frozenset(re.findall(r"\$(\w+)", sql))


@dataclass(frozen=True)
class SourceInfo:
    sid: int
    model_id: str
    source_id: str
    layer: int
    d_sae: int


class Catalog:
    """The sources of one atlas version, in memory: public id <-> fid without SQL."""

    def __init__(self, rows: list[tuple]):
        self.by_sid = {r[0]: SourceInfo(*r) for r in rows}
        self.by_name = {(s.model_id, s.source_id): s for s in self.by_sid.values()}

    def fid(self, public_id: str) -> int:
        ref = FeatureRef.parse(public_id)
        src = self.by_name.get((ref.model, ref.source))
        if src is None or ref.index >= src.d_sae:
            raise NotFoundError(f"feature {public_id!r} is not in the atlas")
        return make_fid(src.sid, ref.index)

    def source(self, fid: int) -> SourceInfo:
        return self.by_sid[split_fid(fid)[0]]

    def public_id(self, fid: int) -> str:
        s = self.source(fid)
        return f"{s.model_id}/{s.source_id}/{split_fid(fid)[1]}"

    def sids(self, model: str | None = None, layers: list[int] | None = None) -> list[int]:
        return [
            s.sid
            for s in self.by_sid.values()
            if (model is None or s.model_id == model) and (layers is None or s.layer in layers)
        ]


class Version:
    """One open atlas file: a connection, its per-thread cursors, and the requests using it."""

    def __init__(self, path: str, limits: ApiLimits):
        self.path = path
        self.con = db.connect_readonly(
            path,
            db.ReadOnlyLimits(
                memory_limit=limits.memory_limit,
                threads=limits.threads,
                max_execution_time_ms=limits.statement_ms,
                late_materialization=False,
            ),
        )  # every statement reads a few rows of one feature (atlas/db.py)
        self.file = file_identity(path)  # while it is open, no other file can have its inode
        self.catalog = Catalog(
            self.con.execute("SELECT sid, model_id, source_id, layer, d_sae FROM sources ORDER BY sid").fetchall()
        )
        self.users = 0
        self.retired = False
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self.con.cursor()
            with self._lock:
                self._cursors.append(cur)
        return cur

    def close(self) -> None:
        for cur in self._cursors:
            cur.close()
        self.con.close()


def file_identity(path: str) -> tuple[int, int]:
    """(device, inode) of the file at ``path``, following symlinks."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class AtlasDatabase:
    """Serves the atlas at ``path`` (a file, or a symlink that ``atlas db publish`` flips)."""

    def __init__(self, path: str | Path, limits: ApiLimits = ApiLimits()):
        self.path = str(path)
        self.limits = limits
        self._lock = threading.Lock()
        self.current = Version(os.path.realpath(self.path), limits)
        self.opened = 1  # versions opened so far (tests and logs)

    def acquire(self) -> Version:
        try:
            identity = file_identity(self.path)
        except OSError:  # a broken link: keep serving the current version
            identity = None
        with self._lock:
            if identity is not None and identity != self.current.file:
                try:
                    new = Version(os.path.realpath(self.path), self.limits)
                except Exception:  # noqa: BLE001 - keep serving the old version, retry next request
                    new = None
                if new is not None:
                    old, self.current = self.current, new
                    self.opened += 1
                    old.retired = True
                    if old.users == 0:
                        old.close()
            version = self.current
            version.users += 1
            return version

    def release(self, version: Version) -> None:
        with self._lock:
            version.users -= 1
            if version.retired and version.users == 0:
                version.close()

    def close(self) -> None:
        with self._lock:
            self.current.retired = True
            if self.current.users == 0:
                self.current.close()


@dataclass
class Context:
    """What every resolver sees: the version of the atlas this request reads, and the limits."""

    version: Version
    limits: ApiLimits
    deadline: float = field(default=0.0)
    statements: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limits.request_s

    @property
    def catalog(self) -> Catalog:
        return self.version.catalog

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one named SQL statement on this thread's cursor; rows as dicts."""
        if time.monotonic() > self.deadline:
            raise TimeLimit(f"request exceeded the time limit of {self.limits.request_s} s")
        self.statements += 1
        cur = self.version.cursor()
        try:  # the time limit may interrupt the statement while it runs or while its rows are fetched
            res = cur.execute(sql, {k: v for k, v in (params or {}).items() if k in _names(sql)})
            names = [d[0] for d in res.description]
            return [dict(zip(names, row)) for row in res.fetchall()]
        except duckdb.InterruptException as exc:
            raise TimeLimit(f"a query exceeded the time limit of {self.limits.statement_ms} ms per statement") from exc
