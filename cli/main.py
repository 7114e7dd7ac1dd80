"""The `atlas` command line. Commands are thin: parse, build a config, call one function.

Heavy libraries (torch, transformer_lens, sae_lens) are imported inside command bodies only, so
`atlas --help` answers fast; tests/test_cli.py checks that.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

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
# The options every job command shares, declared once.
ModelSpecOption = Annotated[str, typer.Option("--model", help=MODEL_HELP)]
ModelIdOption = Annotated[Optional[str], typer.Option("--model-id", help="Model id in the atlas (default: from the spec).")]
# Every job takes `--set NAME=VALUE` for any field of its config dataclass, parsed by the field's type
# hint (atlas.config.with_overrides); the named options are applied first, --set after them.
SetOption = Annotated[list[str], typer.Option("--set", help="Any field of the job's config as NAME=VALUE "
                                                            "(repeatable; parsed by the field's type).")]


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
    """Verify the file (every table read to its end) and print the schema revision and row counts."""
    from atlas import db

    checked = db.verify(path)
    print(f"{path}: schema revision {checked.revision} (head {db.head_revision()}); every table read to its end")
    for t in checked.tables:
        print(f"  {t.table:<22} {t.rows:>12,}")

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
        overrides["layers"] = () if layers.strip().lower() == "all" else tuple(parse_layers(layers))
    if width:
        overrides["d_sae"] = width
    if tokens:
        overrides["n_tokens"] = tokens
    if model:
        overrides["model"] = model
    return TrainConfig.gpu(**overrides) if gpu else TrainConfig(**overrides)


def _overridden(config, setting: list[str]):
    from atlas.config import with_overrides

    return with_overrides(config, list(setting))


@app.command("train-transcoders")
def train_transcoders_cmd(
    db: Optional[Path] = typer.Option(None, help="Register the transcoders and their metrics in this atlas."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP + " Default: 'default' (Gemma 3 270M)."),
    model_id: str = typer.Option("gemma-3-270m", help="Model id in the atlas."),
    layers: Optional[str] = typer.Option(None, help="'all', or layers like '0,1,5' / '0-3,7' (default: the TrainConfig default)."),
    width: Optional[int] = typer.Option(None, help="Features per layer (d_sae)."),
    tokens: Optional[int] = typer.Option(None, help="Training tokens per layer."),
    corpus: str = typer.Option("builtin", help="'builtin', a txt/jsonl/parquet file or directory, or an HF dataset."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: in the cache, by config hash)."),
    gpu: bool = typer.Option(False, help="Use the larger GPU configuration (TrainConfig.gpu)."),
    setting: SetOption = [],
) -> None:
    """Train transcoders (MLP in -> MLP out) for chosen layers, save them in the SAELens format; resumable."""
    from atlas.config import CorpusConfig
    from ingest.transcoders import run

    train = _overridden(_train_config(layers, width, tokens, gpu, model), setting)
    out_dir, metrics = run(train, CorpusConfig(source=corpus),
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
    layers: Optional[str] = typer.Option(None, help="Layers to train: 'all', or '0,1,5' / '0-3,7' (default config otherwise)."),
    width: Optional[int] = typer.Option(None, help="Features per layer."),
    tokens: Optional[int] = typer.Option(None, help="Training tokens per layer."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP + " Default: 'default' (Gemma 3 270M)."),
    corpus: str = typer.Option("builtin", help="'builtin', a txt/jsonl/parquet file or directory, or an HF dataset."),
    setting: SetOption = [],
) -> None:
    """Build the embedded-default atlas offline (assets, transcoders, ingest jobs) and serve it."""
    from atlas.config import CorpusConfig, DemoConfig
    from ingest import demo

    cfg = _overridden(DemoConfig(data_dir=data, port=port, serve=serve), setting)
    ctx = demo.build(cfg, _train_config(layers, width, tokens, False, model), CorpusConfig(source=corpus))
    if serve:
        demo.serve(cfg, ctx.db_path)


# ---- inspect -------------------------------------------------------------------------------------

TRANSCODERS_HELP = ("Transcoder set FORMAT:LOCATION: saelens:DIR, saelens-release:RELEASE[/ID], dunefsky:DIR|FILE, "
                    "gemmascope:DIR, circuit-tracer:DIR, gemmascope2:DIR (DIR may be hf://OWNER/REPO), an existing "
                    "path (format detected), a preset (gpt2-small, gemma-2-2b, gemma-3-270m), or a cross-layer "
                    "transcoder circuit-tracer-clt:DIR / gemmascope2-clt:DIR (local).")


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
    model: ModelSpecOption,
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


# ---- weightlens ----------------------------------------------------------------------------------


@ingest_app.command("weightlens")
def ingest_weightlens(
    model: ModelSpecOption,
    transcoders: str = typer.Option(..., "--transcoders", help="Transcoder set FORMAT:LOCATION (see atlas.transcoders)."),
    db_path: Path = typer.Option(..., "--db", help="The atlas DuckDB file (created if absent)."),
    model_id: ModelIdOption = None,
    profile: Optional[str] = typer.Option(None, help="'atlas' (default: atlas's own choices) or 'reference' (the "
                                          "authors' code, step for step; docs/weightlens.md lists the differences)."),
    family: Optional[str] = typer.Option(None, help="Model family gpt2, gemma or llama (default: inferred)."),
    input_z: Optional[float] = typer.Option(None, help="Input-token z threshold (default 5.5, the reference)."),
    edge_z: Optional[float] = typer.Option(None, help="Virtual-weight z threshold (default 4, the reference)."),
    zmode: Optional[str] = typer.Option(None, help="Token z-score population: 'pool' (reference) or 'full' vocabulary."),
    edge_variant: Optional[str] = typer.Option(None, help="'raw' (reference) or 'ln_centered' (fold the read norm)."),
    inherit_layers: Optional[str] = typer.Option(None, help="'auto' (GPT-2: layer0), 'all' or 'layer0'."),
    dtype: Optional[str] = typer.Option(None, help="Lens matmul dtype: float32, bfloat16 or float64."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda."),
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
) -> None:
    """Compute WeightLens (docs/method.md §2) for every feature and load it; prints coverage per layer."""
    from atlas.config import WeightLensConfig, with_overrides

    named = dict(profile=profile, family=family, input_z=input_z, edge_z=edge_z, token_zmode=zmode, edge_variant=edge_variant,
                 inherit_layers=inherit_layers, dtype=dtype, device=device)
    cfg = with_overrides(WeightLensConfig(), [f"{k}={v}" for k, v in named.items() if v is not None] + list(setting))
    ex = _executor(executor, address, workers, shards)                         # refused before any loading
    from atlas.models import ModelSpec, load_model

    spec = ModelSpec.parse(model, device=cfg.device)
    from atlas.transcoders.loading import TranscoderSpec, load_transcoders

    lm = load_model(spec)
    tset = load_transcoders(TranscoderSpec.parse(transcoders), lm)
    from ingest.weightlens import run_weightlens

    report = run_weightlens(lm, tset, db_path, cfg, model_id=model_id or spec.default_model_id(),
                            model_spec=str(spec), executor=ex)
    print(f"{db_path}: WeightLens ({cfg.profile} profile) for {len(tset)} layers ({len(report.layers_computed)} computed, "
          f"{len(report.layers_skipped)} already done)")
    print("layer  coverage (share of features with a validated weight description)")
    for layer, value in report.coverage.items():
        print(f"{layer:>5}  {value:8.1%}")


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
    """Serve the GraphQL API and the feature browser (/, GraphiQL at /graphql) over an atlas, read-only."""
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


@app.command("export")
def export_cmd(
    fmt: str = typer.Argument(..., help="circuit-tracer (feature files for its local viewer) or neuronpedia (JSONL)."),
    db_path: Path = typer.Option(..., "--db", help="The atlas database."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    feature: Optional[list[str]] = typer.Option(None, "--feature", help="A public id model/source/index (repeat)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Only these layers, e.g. '3,6' or '0-5'."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many features (fid order)."),
) -> None:
    """Write an atlas (or a selection) in the file formats of circuit-tracer's viewer or Neuronpedia."""
    from atlas.viewer_export import export

    r = export(db_path, out, fmt, ids=feature or None, layers=parse_layers(layers), limit=limit)
    print(f"exported {r.features} features, {r.activations} activations, {r.explanations} explanations "
          f"into {r.files} files under {out}")


# ---- circuitlens ---------------------------------------------------------------------------------
# Activation statistics, examples and ERA/TWERA (docs/method.md §3, §4.1); CircuitLens attributions,
# clusters and descriptions (4.2-4.5); token-membership scores of weight descriptions (5).

ExecutorOption = Annotated[str, typer.Option("--executor", help="Where shards run: 'local' (in this process) or "
                                             "'ray' (Ray actors; docs/scale.md).")]
AddressOption = Annotated[Optional[str], typer.Option("--address", help="Ray cluster HOST:PORT, or 'auto' for the one "
                                                      "`ray start` made (default: start a local Ray).")]
WorkersOption = Annotated[Optional[int], typer.Option("--workers", help="Ray actors (default: the cluster's CPUs).")]
ShardsOption = Annotated[Optional[Path], typer.Option("--shards", help="Shard directory: Parquet files + manifest "
                                                      "(default: DB.shards/JOB-...; on a cluster, shared storage).")]


def _executor(executor: str, address: Optional[str], workers: Optional[int], shards: Optional[Path]):
    from ingest.shards import ExecutorConfig

    if executor not in ("local", "ray"):
        raise AtlasError(f"--executor {executor!r}: use 'local' or 'ray'")
    if executor == "local" and (address or workers):
        raise AtlasError("--address and --workers need --executor ray")
    return ExecutorConfig(kind=executor, address=address, workers=workers, shard_dir=str(shards) if shards else None)


TC_HELP = "Transcoder set spec (see `atlas ingest weightlens --help`)."
TranscodersOption = Annotated[str, typer.Option("--transcoders", help=TC_HELP)]
MaxSequencesOption = Annotated[Optional[int], typer.Option("--max-sequences",
                                                           help="Use at most this many sequences of the corpus.")]
TEXT_HELP = ("Corpus, all of it: a .txt file (documents separated by blank lines), .jsonl ('text' per line), "
             ".parquet ('text' column), a directory of those, 'builtin', or a Hugging Face dataset (online).")


def _circuit_inputs(model: str, transcoders: str, text: str, seq_len: int, max_sequences: Optional[int],
                    model_id: Optional[str]):
    from atlas.models import ModelSpec
    from ingest.inputs import load_inputs

    m, tset, tokens = load_inputs(model, transcoders, text, seq_len, max_sequences)
    return m, tset, tokens, model_id or ModelSpec.parse(model).default_model_id()


@ingest_app.command("activations")
def ingest_activations(
    db_path: Annotated[Path, typer.Argument(help="The atlas database.")],
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    text: str = typer.Option(..., help=TEXT_HELP),
    model_id: ModelIdOption = None,
    seq_len: int = typer.Option(128, help="Tokens per sequence."),
    batch_size: int = typer.Option(16, help="Sequences per forward pass."),
    max_sequences: MaxSequencesOption = None,
    n_samples: int = typer.Option(100, help="Bin-weighted examples per feature (paper: 100)."),
    n_top: int = typer.Option(20, help="Top-activation examples per feature."),
    no_era: bool = typer.Option(False, "--no-era", help="Skip ERA/TWERA edges."),
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
) -> None:
    """Activation statistics, top and bin-weighted examples, and ERA/TWERA edges over a corpus."""
    from atlas.config import ActivationsConfig
    from ingest import activations

    cfg = _overridden(ActivationsConfig(seq_len=seq_len, batch_size=batch_size, n_samples=n_samples, n_top=n_top,
                                        era=not no_era), setting)                # refused before any loading
    ex = _executor(executor, address, workers, shards)
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, cfg.seq_len, max_sequences, model_id)
    print(activations.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model, executor=ex))


@ingest_app.command("circuitlens")
def ingest_circuitlens(
    db_path: Annotated[Path, typer.Argument(help="The atlas database (after `atlas ingest activations`).")],
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    text: str = typer.Option(..., help=TEXT_HELP + " The same corpus as for activations."),
    model_id: ModelIdOption = None,
    seq_len: int = typer.Option(128, help="Tokens per sequence (as for activations)."),
    max_sequences: MaxSequencesOption = None,
    batch_size: int = typer.Option(16, help="Examples per attribution batch."),
    eps: float = typer.Option(0.5, help="DBSCAN eps on Jaccard distances."),
    min_samples: int = typer.Option(5, help="DBSCAN min_samples."),
    explainer_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint (e.g. http://host:8000/v1); "
                                                "key from $ATLAS_EXPLAINER_API_KEY. Default: template descriptions."),
    explainer_model: Optional[str] = typer.Option(None, help="The explainer model's name at that endpoint."),
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
) -> None:
    """CircuitLens: attribute each sampled example, cluster by mechanism, describe each cluster."""
    from atlas.config import CircuitLensConfig
    from ingest import circuitlens

    if explainer_url and not explainer_model:
        raise AtlasError("--explainer-url needs --explainer-model")
    cfg = _overridden(CircuitLensConfig(batch_size=batch_size, eps=eps, min_samples=min_samples,
                                        explainer_url=explainer_url, explainer_model=explainer_model), setting)
    ex = _executor(executor, address, workers, shards)
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, seq_len, max_sequences, model_id)
    print(circuitlens.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model, executor=ex))


@ingest_app.command("scores")
def ingest_scores(
    db_path: Annotated[Path, typer.Argument(help="The atlas database (with WeightLens descriptions).")],
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    text: str = typer.Option(..., help="Held-out text (not used for training or sampling). " + TEXT_HELP),
    model_id: ModelIdOption = None,
    seq_len: int = typer.Option(128, help="Tokens per sequence."),
    max_sequences: MaxSequencesOption = None,
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
) -> None:
    """Score weight-based descriptions: precision, recall and AUROC of 'token in description'."""
    from atlas.config import ScoringConfig
    from ingest import scoring

    cfg = _overridden(ScoringConfig(seq_len=seq_len), setting)
    ex = _executor(executor, address, workers, shards)
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, cfg.seq_len, max_sequences, model_id)
    print(scoring.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model,
                      data_name=str(text), executor=ex))


def main() -> None:
    try:
        app()
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
