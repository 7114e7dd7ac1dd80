"""The `atlas` command line. Commands are thin: parse, build a config, call one function.

Heavy libraries (torch, transformer_lens, sae_lens) are imported inside command bodies only, so
`atlas --help` answers fast; tests/test_cli.py checks that.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from atlas.errors import AtlasError

app = typer.Typer(
    help="atlas: a database-backed atlas of transcoder features (WeightLens + CircuitLens).",
    rich_markup_mode=None,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Create, upgrade and check atlas databases.", rich_markup_mode=None, no_args_is_help=True)
ingest_app = typer.Typer(help="Compute and load results into an atlas database.", rich_markup_mode=None,
                         no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")

MODEL_HELP = "Model spec KIND:VALUE: tl:NAME, hf-dir:PATH, gguf:PATH or random:SHAPE (tiny, gpt2-small)."


# ---- db ------------------------------------------------------------------------------------------


@db_app.command("init")
def db_init(path: Path = typer.Argument(..., help="The DuckDB file to create.")) -> None:
    """Create an atlas database (or upgrade an existing one) to the newest schema."""
    from atlas import db

    rev = db.upgrade(path)
    print(f"{path}: schema at revision {rev}")


@db_app.command("upgrade")
def db_upgrade(path: Path = typer.Argument(..., help="The DuckDB file to upgrade.")) -> None:
    """Apply any newer schema migrations to an existing atlas database."""
    from atlas import db

    if not path.exists():
        raise AtlasError(f"no atlas database at {path}; create one with `atlas db init {path}`")
    rev = db.upgrade(path)
    print(f"{path}: schema at revision {rev}")


@db_app.command("status")
def db_status(path: Path = typer.Argument(..., help="An atlas database.")) -> None:
    """Print the schema revision and the row count of every table."""
    from atlas import db

    con = db.connect_readonly(path)
    print(f"{path}: schema revision {db.current_revision(con)} (head {db.head_revision()})")
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY table_name"
    ).fetchall()]
    for table in tables:
        n = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        print(f"  {table:<22} {n:>12,}")


# ---- api -----------------------------------------------------------------------------------------


@db_app.command("publish")
def db_publish(
    source: Path = typer.Argument(..., help="The working atlas database (not open by a writer)."),
    link: Path = typer.Argument(..., help="The served path: a symlink flipped atomically to the new version."),
    keep: int = typer.Option(3, help="Versioned files to keep beside the link."),
) -> None:
    """Publish a working atlas for serving: versioned read-optimized copy, then an atomic symlink flip."""
    from atlas import db

    version = db.publish(source, link, keep=keep)
    print(f"{link} -> {version.name}")


@app.command("serve")
def serve(
    db_path: Path = typer.Option(..., "--db", help="The atlas database, or the symlink `atlas db publish` flips."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Server processes (each opens the atlas read-only)."),
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql) over an atlas, read-only."""
    import os

    import uvicorn

    from api.app import build_app

    print(f"serving {db_path} at http://{host}:{port}/graphql ({workers} worker{'s' * (workers > 1)})", flush=True)
    if workers > 1:  # uvicorn starts each worker from an import string; the path travels in the environment
        build_app(db_path).database.close()  # fail here, once, on a bad path
        os.environ["ATLAS_SERVE_DB"] = str(db_path)
        uvicorn.run("api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning")
    else:
        uvicorn.run(build_app(db_path), host=host, port=port, log_level="warning")


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="One read-only SQL statement (docs/sql.md lists the views)."),
    db_path: Path = typer.Option(..., "--db", help="The atlas database."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the result to this CSV file."),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="Write the result to this Parquet file."),
    max_rows: int = typer.Option(100, help="Rows printed (files get every row)."),
    timeout_ms: int = typer.Option(60000, help="Time limit of the statement."),
) -> None:
    """Run read-only SQL on an atlas; print a table or write CSV / Parquet."""
    from atlas.sql import run_sql

    run_sql(db_path, query, csv=csv, parquet=parquet, max_rows=max_rows, timeout_ms=timeout_ms)


def main() -> None:
    try:
        app()
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
