"""`atlas sql`: read-only SQL on an atlas, printed as a table or written to CSV / Parquet.

The statement runs on the hardened read-only connection (atlas.db.connect_readonly): it cannot
write, ATTACH, COPY, read files or change settings; a text of more than one statement is refused.
The result is streamed as Arrow record batches (``BATCH_ROWS`` rows at a time, never the whole
result in memory): printing stops after ``max_rows`` rows, and the files are written batch by
batch by this process with pyarrow, never by DuckDB. Values are printed as plain text, never as
rich markup (a token like ``[/`` or ``[bold]`` is data).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from atlas import db
from atlas.errors import AtlasError

BATCH_ROWS = 65536


def _one_statement(con, query: str) -> None:
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise AtlasError(f"SQL refused or failed: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise AtlasError(f"one SQL statement at a time: the text holds {len(statements)}")


def run_sql(
    path: str | Path,
    query: str,
    csv: Path | None = None,
    parquet: Path | None = None,
    max_rows: int = 100,
    timeout_ms: int = 60000,
) -> int:
    """Run ``query``; returns the number of rows written to the files, or printed."""
    if max_rows < 0:
        raise AtlasError(f"--max-rows {max_rows}: must be 0 or more")
    con = db.connect_readonly(path, db.ReadOnlyLimits(max_execution_time_ms=timeout_ms))
    try:
        cur = con.cursor()  # a fresh cursor: the schema check left a result open
        _one_statement(cur, query)
        try:
            relation = cur.sql(query)  # a relation streams; a DB-API result (execute) would be copied whole
            if relation is None:
                raise AtlasError("the statement returned no result")
            reader = relation.to_arrow_reader(BATCH_ROWS)
            if csv is None and parquet is None:
                return _print_rows(reader, max_rows)
            return _write_files(reader, csv, parquet)
        except duckdb.InterruptException as exc:
            raise AtlasError(f"the query exceeded the time limit of {timeout_ms} ms") from exc
        except duckdb.Error as exc:
            raise AtlasError(f"SQL refused or failed: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()


def _write_files(reader, csv: Path | None, parquet: Path | None) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    writers = []
    if csv is not None:
        writers.append(pacsv.CSVWriter(csv, reader.schema))
    if parquet is not None:
        writers.append(pq.ParquetWriter(parquet, reader.schema))
    n = 0
    try:
        for batch in reader:
            for w in writers:
                w.write_batch(batch)
            n += batch.num_rows
    finally:
        for w in writers:
            w.close()
    for target in (csv, parquet):
        if target is not None:
            print(f"{n} rows -> {target}")
    return n


def _print_rows(reader, max_rows: int) -> int:
    """Print the first ``max_rows`` rows; read one batch past them at most, to say whether there are more."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows: list[dict] = []  # the rows printed, as pyarrow's to_pylist gives them
    more = False
    for batch in reader:
        take = batch.slice(0, max_rows - len(rows)).to_pylist()
        rows += take
        if len(take) < batch.num_rows:
            more = True
        if len(rows) >= max_rows:
            more = more or next(iter(reader), None) is not None
            break
    out = Table(show_lines=False)
    for name in reader.schema.names:
        out.add_column(Text(name))
    for row in rows:
        out.add_row(*[Text("NULL" if v is None else str(v)) for v in row.values()])
    console = Console(width=200, markup=False, highlight=False, emoji=False)
    console.print(out)
    if more:
        console.print(Text(f"(more than {max_rows} rows, {max_rows} shown; --csv or --parquet writes all)"))
    return len(rows)
