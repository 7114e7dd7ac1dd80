"""`atlas db ...`: create, upgrade, check and publish atlas databases."""

from __future__ import annotations

from pathlib import Path

import typer

from atlas.errors import AtlasError
from cli.common import JsonOption, emit

app = typer.Typer(help="Create, upgrade and check atlas databases.", rich_markup_mode=None, no_args_is_help=True)


@app.command("init")
def db_init(path: Path = typer.Argument(..., help="The DuckDB file to create.")) -> None:
    """Create an atlas database (or upgrade an existing one) to the newest schema."""
    from atlas import db

    rev = db.upgrade(path)
    print(f"{path}: schema at revision {rev}")


@app.command("upgrade")
def db_upgrade(path: Path = typer.Argument(..., help="The DuckDB file to upgrade.")) -> None:
    """Apply any newer schema migrations to an existing atlas database."""
    from atlas import db

    if not path.exists():
        raise AtlasError(f"no atlas database at {path}; create one with `atlas db init {path}`")
    rev = db.upgrade(path)
    print(f"{path}: schema at revision {rev}")


@app.command("status")
def db_status(path: Path = typer.Argument(..., help="An atlas database."), as_json: JsonOption = False) -> None:
    """Verify the file (every table read to its end) and print the schema revision and row counts."""
    from atlas import db

    checked = db.verify(path)
    head = db.head_revision()
    report = {"path": str(path), "revision": checked.revision, "head_revision": head, "rows": checked.rows()}

    def summary() -> str:
        lines = [f"{path}: schema revision {checked.revision} (head {head}); every table read to its end"]
        return "\n".join(lines + [f"  {t.table:<22} {t.rows:>12,}" for t in checked.tables])

    emit(report, as_json, summary)


@app.command("publish")
def db_publish(
    source: Path = typer.Argument(..., help="The working atlas database (not open by a writer)."),
    link: Path = typer.Argument(..., help="The served path: a symlink flipped atomically to the new version."),
    keep: int = typer.Option(3, help="Versioned files to keep beside the link."),
) -> None:
    """Publish a working atlas for serving: versioned read-optimized copy, then an atomic symlink flip."""
    from atlas.publish import publish

    version = publish(source, link, keep=keep)
    print(f"{link} -> {version.name}")
