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


# ---- inspect -------------------------------------------------------------------------------------

TRANSCODERS_HELP = ("Transcoder set FORMAT:LOCATION: saelens:DIR, saelens-release:RELEASE[/ID], dunefsky:DIR|FILE, "
                    "gemmascope:DIR, circuit-tracer:DIR (DIR may be hf://OWNER/REPO), an existing path "
                    "(format detected), or a preset (gpt2-small, gemma-2-2b).")


def parse_layers(text: Optional[str]) -> Optional[list[int]]:
    """'0,1,5' or '0-3' or '0-3,7' -> sorted layer list; None -> None (every layer found)."""
    if not text:
        return None
    layers: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            layers.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise AtlasError(f"--layers {text!r}: expected layer numbers like '0,1,5' or '0-3'") from None
    return sorted(layers)


@app.command("inspect")
def inspect_cmd(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    transcoders: str = typer.Option(..., "--transcoders", help=TRANSCODERS_HELP),
    layers: Optional[str] = typer.Option(None, "--layers", help="Layers to load, e.g. '0,1' or '0-3' (default: all)."),
    text: Optional[list[str]] = typer.Option(None, "--text", help="A sentence to measure on (repeatable; "
                                             "default: five built-in sentences)."),
    dtype: str = typer.Option("float32", "--dtype", help="Transcoder dtype: float32, bfloat16, float16."),
) -> None:
    """Print what a transcoder set holds, check it against the model, and report reconstruction
    quality (FVE of the MLP output, mean L0) on a few sentences."""
    from atlas.inspect import format_report, inspect_transcoders

    report = inspect_transcoders(model, transcoders, layers=parse_layers(layers), texts=text or None, dtype=dtype)
    print(format_report(report))


def main() -> None:
    try:
        app()
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
