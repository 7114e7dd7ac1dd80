"""Content hashes of every table of an atlas: what a job wrote, without what differs by run.

``table_hashes(path)`` -> {table: (rows, hash)} for every base table, where the hash is the sum of
a hash of each row over its columns except the per-run ones (``run_id`` and timestamps), so two
atlases that hold the same rows (in any order) have equal hashes. ``ingest_runs`` is left out (one
row per run, by nature different); ``ingest_units`` is hashed on (job, scope, unit, config_hash,
n_rows). Used by the resume tests and bench/reliability.py.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

PER_RUN = {"run_id", "created_at", "started_at", "finished_at", "completed_at"}
SKIP_TABLES = {"ingest_runs", "alembic_version"}


def table_hashes(path: str | Path) -> dict[str, tuple[int, int]]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()
        ]
        out = {}
        for t in tables:
            if t in SKIP_TABLES:
                continue
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = $t ORDER BY ordinal_position",
                    {"t": t},
                ).fetchall()
                if r[0] not in PER_RUN
            ]
            n, h = con.execute(
                f"SELECT count(*), coalesce(sum(hash({', '.join(chr(34) + c + chr(34) for c in cols)})"
                f'::HUGEINT), 0) FROM "{t}"'
            ).fetchone()
            out[t] = (int(n), int(h))
        return out
