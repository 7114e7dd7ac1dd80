"""Opening a DuckDB file with clear errors, and reading one to its end to prove it is whole.

``open_duckdb`` maps DuckDB's errors on open to named ones: a lock held by another process
(``DatabaseLockedError``, naming the process), a file that is not DuckDB, unreadable or truncated
(``CorruptDatabaseError``). ``read_every_table`` is the full check ``atlas db publish`` and
``atlas db status`` run:
1. list the base tables;
2. for each, one statement that aggregates a hash of every column over every row, so every
   block of the table is read and its checksum verified (``count(*)`` alone is answered from
   metadata and passes a file with random bytes in its middle);
3. return the row count of each table; any DuckDB error on the way is ``CorruptDatabaseError``
   naming the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from atlas.errors import AtlasError, CorruptDatabaseError, DatabaseLockedError, NotFoundError


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def open_duckdb(path: str | Path, read_only: bool, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"no atlas database at {path}")
    if path.is_dir():
        raise CorruptDatabaseError(f"{path} is a directory, not a DuckDB database file")
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.Error as exc:
        text = str(exc)
        if "Could not set lock" in text or "Conflicting lock" in text:
            holder = text.split("Conflicting lock is held in", 1)[-1].split(". See also")[0].strip()
            raise DatabaseLockedError(
                f"{path} is open for writing by another process ({holder}): is an ingest "
                f"job still writing it? Wait for it to finish"
            ) from None
        if isinstance(exc, duckdb.ConnectionException) and "different configuration" in text:
            raise DatabaseLockedError(
                f"{path} is already open in this process with another configuration: is an ingest job still writing it?"
            ) from None
        if "not a valid DuckDB database" in text:
            raise CorruptDatabaseError(f"{path} is not a DuckDB database file") from None
        if "Permission denied" in text:
            raise AtlasError(f"{path} cannot be read: permission denied") from None
        raise CorruptDatabaseError(f"{path} cannot be opened as a DuckDB database: {_first_line(exc)}") from None


@dataclass(frozen=True)
class TableRows:
    table: str
    rows: int


def read_every_table(con: duckdb.DuckDBPyConnection, path: str | Path) -> list[TableRows]:
    """Read every column of every base table to its end; the row counts, or CorruptDatabaseError."""
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        ]
    except duckdb.Error as exc:
        raise CorruptDatabaseError(f"{path} is damaged: its catalog cannot be read ({_first_line(exc)})") from None
    out = []
    for table in tables:
        try:
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = $t AND table_schema = 'main' "
                    "ORDER BY ordinal_position",
                    {"t": table},
                ).fetchall()
            ]
            hashes = ", ".join(f'bit_xor(hash("{c}"))' for c in cols)
            # count(*) yields exactly one row; fetchall() says so to the type checker where fetchone() cannot
            n = con.execute(f'SELECT count(*){", " + hashes if hashes else ""} FROM "{table}"').fetchall()[0][0]
        except duckdb.Error as exc:
            raise CorruptDatabaseError(
                f"{path} is damaged: table {table} cannot be read to its end ({_first_line(exc)})"
            ) from None
        out.append(TableRows(table, int(n)))
    return out
