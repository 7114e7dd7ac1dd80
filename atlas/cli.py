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


# ---- circuitlens ---------------------------------------------------------------------------------
# Activation statistics, examples and ERA/TWERA (science.md 3, 4.1); CircuitLens attributions,
# clusters and descriptions (4.2-4.5); token-membership scores of weight descriptions (5).

TC_HELP = "Transcoder set spec (see `atlas ingest weightlens --help`)."
TEXT_HELP = "Corpus: a .txt file or a .jsonl file with a 'text' field per line."


def _circuit_inputs(model: str, transcoders: str, text: Path, seq_len: int, max_sequences: Optional[int],
                    model_id: Optional[str]):
    from ingest.inputs import default_model_id, load_inputs

    m, tset, tokens = load_inputs(model, transcoders, text, seq_len, max_sequences)
    return m, tset, tokens, model_id or default_model_id(model)


@ingest_app.command("activations")
def ingest_activations(
    db_path: Path = typer.Argument(..., help="The atlas database."),
    model: str = typer.Option(..., help=MODEL_HELP),
    transcoders: str = typer.Option(..., help=TC_HELP),
    text: Path = typer.Option(..., help=TEXT_HELP),
    model_id: Optional[str] = typer.Option(None, help="Model id in the atlas (default: from the spec)."),
    seq_len: int = typer.Option(128, help="Tokens per sequence."),
    batch_size: int = typer.Option(16, help="Sequences per forward pass."),
    max_sequences: Optional[int] = typer.Option(None, help="Use at most this many sequences."),
    n_samples: int = typer.Option(100, help="Bin-weighted examples per feature (paper: 100)."),
    n_top: int = typer.Option(20, help="Top-activation examples per feature."),
    no_era: bool = typer.Option(False, "--no-era", help="Skip ERA/TWERA edges."),
) -> None:
    """Activation statistics, top and bin-weighted examples, and ERA/TWERA edges over a corpus."""
    from atlas.config import ActivationsConfig
    from ingest import activations

    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, seq_len, max_sequences, model_id)
    cfg = ActivationsConfig(seq_len=seq_len, batch_size=batch_size, n_samples=n_samples, n_top=n_top, era=not no_era)
    print(activations.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model))


@ingest_app.command("circuitlens")
def ingest_circuitlens(
    db_path: Path = typer.Argument(..., help="The atlas database (after `atlas ingest activations`)."),
    model: str = typer.Option(..., help=MODEL_HELP),
    transcoders: str = typer.Option(..., help=TC_HELP),
    text: Path = typer.Option(..., help=TEXT_HELP + " The same corpus as for activations."),
    model_id: Optional[str] = typer.Option(None, help="Model id in the atlas (default: from the spec)."),
    seq_len: int = typer.Option(128, help="Tokens per sequence (as for activations)."),
    max_sequences: Optional[int] = typer.Option(None, help="As for activations."),
    batch_size: int = typer.Option(16, help="Examples per attribution batch."),
    eps: float = typer.Option(0.5, help="DBSCAN eps on Jaccard distances."),
    min_samples: int = typer.Option(5, help="DBSCAN min_samples."),
    explainer_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint (e.g. http://host:8000/v1); "
                                                "key from $ATLAS_EXPLAINER_API_KEY. Default: template descriptions."),
    explainer_model: Optional[str] = typer.Option(None, help="The explainer model's name at that endpoint."),
) -> None:
    """CircuitLens: attribute each sampled example, cluster by mechanism, describe each cluster."""
    from atlas.config import CircuitLensConfig
    from ingest import circuitlens

    if explainer_url and not explainer_model:
        raise AtlasError("--explainer-url needs --explainer-model")
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, seq_len, max_sequences, model_id)
    cfg = CircuitLensConfig(batch_size=batch_size, eps=eps, min_samples=min_samples, explainer_url=explainer_url,
                            explainer_model=explainer_model)
    print(circuitlens.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model))


@ingest_app.command("scores")
def ingest_scores(
    db_path: Path = typer.Argument(..., help="The atlas database (with WeightLens descriptions)."),
    model: str = typer.Option(..., help=MODEL_HELP),
    transcoders: str = typer.Option(..., help=TC_HELP),
    text: Path = typer.Option(..., help="Held-out text (not used for training or sampling). " + TEXT_HELP),
    model_id: Optional[str] = typer.Option(None, help="Model id in the atlas (default: from the spec)."),
    seq_len: int = typer.Option(128, help="Tokens per sequence."),
    max_sequences: Optional[int] = typer.Option(None, help="Use at most this many sequences."),
) -> None:
    """Score weight-based descriptions: precision, recall and AUROC of 'token in description'."""
    from atlas.config import ScoringConfig
    from ingest import scoring

    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, seq_len, max_sequences, model_id)
    print(scoring.run(db_path, m, tset, tokens, ScoringConfig(seq_len=seq_len), model_id=mid, model_spec=model,
                      data_name=str(text)))


def main() -> None:
    try:
        app()
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
