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

# ---- demo: assets, transcoder training, the embedded-default atlas --------------------------------------


@app.command("assets")
def assets_cmd() -> None:
    """Build the embedded default's offline assets once: Gemma 3 270M (GGUF, converted) and the corpus."""
    from atlas.assets import ensure_all

    for name, path in ensure_all().items():
        print(f"{name}: {path}")


def _train_config(layers: Optional[str], width: Optional[int], tokens: Optional[int], gpu: bool, model: Optional[str]):
    from atlas.config import TrainConfig

    overrides: dict = {}
    if layers:
        try:
            overrides["layers"] = tuple(int(l) for l in layers.split(","))
        except ValueError:
            raise AtlasError(f"--layers {layers!r} is not a comma-separated list of layer numbers")
    if width:
        overrides["d_sae"] = width
    if tokens:
        overrides["n_tokens"] = tokens
    if model:
        overrides["model"] = model
    return TrainConfig.gpu(**overrides) if gpu else TrainConfig(**overrides)


@app.command("train-transcoders")
def train_transcoders_cmd(
    db: Optional[Path] = typer.Option(None, help="Register the transcoders and their metrics in this atlas."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP + " Default: 'default' (Gemma 3 270M)."),
    model_id: str = typer.Option("gemma-3-270m", help="Model id in the atlas."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers (default: the TrainConfig default)."),
    width: Optional[int] = typer.Option(None, help="Features per layer (d_sae)."),
    tokens: Optional[int] = typer.Option(None, help="Training tokens per layer."),
    corpus: str = typer.Option("builtin", help="'builtin', a txt/jsonl/parquet file or directory, or an HF dataset."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: in the cache, by config hash)."),
    gpu: bool = typer.Option(False, help="Use the larger GPU configuration (TrainConfig.gpu)."),
) -> None:
    """Train transcoders (MLP in -> MLP out) for chosen layers, save them in the SAELens format; resumable."""
    from atlas.config import CorpusConfig
    from ingest.transcoders import run

    out_dir, metrics = run(_train_config(layers, width, tokens, gpu, model), CorpusConfig(source=corpus),
                           model_id=model_id, db_path=db, out_dir=out)
    print(f"transcoders in {out_dir}")
    for layer, m in sorted(metrics.items()):
        print(f"  layer {layer}: fve {m['fve']:.3f}  L0 {m['l0']:.1f}  dead {m['dead_share']:.1%}  "
              f"loss +{m['loss_increase']:.3f} nats")


@app.command("demo")
def demo_cmd(
    data: Optional[Path] = typer.Option(None, help="Directory of the demo atlas (default: CACHE/demo)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the atlas after building it."),
    port: int = typer.Option(8000, help="Port to serve on."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers to train (default config otherwise)."),
    width: Optional[int] = typer.Option(None, help="Features per layer."),
    tokens: Optional[int] = typer.Option(None, help="Training tokens per layer."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP + " Default: 'default' (Gemma 3 270M)."),
    corpus: str = typer.Option("builtin", help="'builtin', a txt/jsonl/parquet file or directory, or an HF dataset."),
) -> None:
    """Build the embedded-default atlas offline (assets, transcoders, ingest jobs) and serve it."""
    from atlas.config import CorpusConfig, DemoConfig
    from ingest import demo

    cfg = DemoConfig(data_dir=data, port=port, serve=serve)
    ctx = demo.build(cfg, _train_config(layers, width, tokens, False, model), CorpusConfig(source=corpus))
    if serve:
        demo.serve(cfg, ctx.db_path)


def main() -> None:
    try:
        app()
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
