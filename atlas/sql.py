"""`atlas sql`: read-only SQL on an atlas, printed as a table or written to CSV / Parquet.

The statement runs on the hardened read-only connection (atlas.db.connect_readonly): it cannot
write, ATTACH, COPY, read files or change settings. The result is fetched as Arrow and the
files are written by this process with pyarrow, never by DuckDB.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from atlas import db
from atlas.errors import AtlasError


def run_sql(path: str | Path, query: str, csv: Path | None = None, parquet: Path | None = None,
            max_rows: int = 100, timeout_ms: int = 60000) -> int:
    """Run ``query``; returns the number of result rows."""
    con = db.connect_readonly(path, db.ReadOnlyLimits(max_execution_time_ms=timeout_ms))
    try:
        relation = con.cursor().sql(query)  # a fresh cursor: the schema check left a result open
        if relation is None:
            raise AtlasError("the statement returned no result")
        table = relation.to_arrow_table()
    except duckdb.InterruptException as exc:
        raise AtlasError(f"the query exceeded the time limit of {timeout_ms} ms") from exc
    except duckdb.Error as exc:
        raise AtlasError(f"SQL refused or failed: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()
    if csv is not None:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, csv)
        print(f"{table.num_rows} rows -> {csv}")
    if parquet is not None:
        import pyarrow.parquet as pq

        pq.write_table(table, parquet)
        print(f"{table.num_rows} rows -> {parquet}")
    if csv is None and parquet is None:
        _print_table(table, max_rows)
    return table.num_rows


def _print_table(table, max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(show_lines=False)
    for name in table.column_names:
        out.add_column(name)
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*["NULL" if v is None else str(v) for v in row.values()])
    console = Console(width=200)
    console.print(out)
    if table.num_rows > max_rows:
        console.print(f"({table.num_rows} rows, {max_rows} shown; --csv or --parquet writes all)")
