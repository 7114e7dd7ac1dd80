"""The embedded default: `atlas assets`, `atlas train-transcoders` and `atlas demo` (docs/demo.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from atlas.config import CorpusConfig, DemoConfig, TrainConfig
from cli.common import CORPUS_HELP, MODEL_HELP, JsonOption, SetOption, emit, overridden, train_config

app = typer.Typer(rich_markup_mode=None)

DEFAULT_MODEL_HELP = MODEL_HELP + f" Default: {TrainConfig.model!r} (Gemma 3 270M)."
LAYERS_HELP = f"'all', or layers like '0,1,5' / '0-3,7' (default: TrainConfig's {TrainConfig.layers})."
WIDTH_HELP = f"Features per layer, d_sae (default: TrainConfig's {TrainConfig.d_sae})."
TOKENS_HELP = f"Training tokens per layer (default: TrainConfig's {TrainConfig.n_tokens})."


@app.command("assets")
def assets_cmd() -> None:
    """Build the embedded default's offline assets once: Gemma 3 270M (GGUF, converted) and the corpus."""
    from atlas.assets import ensure_all

    for name, path in ensure_all().items():
        print(f"{name}: {path}")


def _layer_metrics(layer: int, m: dict) -> str:
    return (
        f"  layer {layer}: fve {m['fve']:.3f}  L0 {m['l0']:.1f}  dead {m['dead_share']:.1%}  "
        f"loss +{m['loss_increase']:.3f} nats"
    )


@app.command("train-transcoders")
def train_transcoders_cmd(
    db: Path | None = typer.Option(None, help="Register the transcoders and their metrics in this atlas."),
    model: str | None = typer.Option(None, help=DEFAULT_MODEL_HELP),
    model_id: str = typer.Option(DemoConfig.model_id, help="Model id in the atlas."),
    layers: str | None = typer.Option(None, help=LAYERS_HELP),
    width: int | None = typer.Option(None, help=WIDTH_HELP),
    tokens: int | None = typer.Option(None, help=TOKENS_HELP),
    corpus: str = typer.Option(CorpusConfig.source, help=CORPUS_HELP),
    out: Path | None = typer.Option(None, help="Output directory (default: in the cache, by config hash)."),
    gpu: bool = typer.Option(False, help="Use the larger GPU configuration (TrainConfig.gpu)."),
    setting: SetOption = [],
    as_json: JsonOption = False,
) -> None:
    """Train transcoders (MLP in -> MLP out) for chosen layers, save them in the SAELens format; resumable."""
    from ingest.transcoders import run

    train = overridden(train_config(layers, width, tokens, gpu, model), setting)
    out_dir, metrics = run(train, CorpusConfig(source=corpus), model_id=model_id, db_path=db, out_dir=out)
    report = {"out_dir": str(out_dir), "layers": metrics}
    emit(
        report,
        as_json,
        lambda: "\n".join([f"transcoders in {out_dir}"] + [_layer_metrics(l, m) for l, m in sorted(metrics.items())]),
    )


def demo_report(ctx) -> dict:
    """`atlas demo --json`: where the atlas is, each step's seconds and every layer's transcoder quality."""
    return {"db_path": str(ctx.db_path), "model_id": ctx.model_id, "timings": ctx.timings, "quality": ctx.quality}


def demo_summary(ctx) -> str:
    from ingest.transcoders import format_quality

    took = ", ".join(f"{k} {v:.0f} s" for k, v in ctx.timings.items())
    return (
        f"demo: transcoder quality on held-out text\n{format_quality(ctx.quality)}\ndemo: built {ctx.db_path} in {took}"
    )


@app.command("demo")
def demo_cmd(
    data: Path | None = typer.Option(None, help="Directory of the demo atlas (default: CACHE/demo)."),
    serve: bool = typer.Option(DemoConfig.serve, "--serve/--no-serve", help="Serve the atlas after building it."),
    port: int = typer.Option(DemoConfig.port, help="Port to serve on."),
    layers: str | None = typer.Option(None, help=LAYERS_HELP),
    width: int | None = typer.Option(None, help=WIDTH_HELP),
    tokens: int | None = typer.Option(None, help=TOKENS_HELP),
    model: str | None = typer.Option(None, help=DEFAULT_MODEL_HELP),
    corpus: str = typer.Option(CorpusConfig.source, help=CORPUS_HELP),
    setting: SetOption = [],
    as_json: JsonOption = False,
) -> None:
    """Build the embedded-default atlas offline (assets, transcoders, ingest jobs) and serve it."""
    from ingest import demo

    cfg = overridden(DemoConfig(data_dir=data, port=port, serve=serve), setting)
    ctx = demo.build(cfg, train_config(layers, width, tokens, False, model), CorpusConfig(source=corpus))
    emit(demo_report(ctx), as_json, lambda: demo_summary(ctx))
    if cfg.serve:
        demo.serve(cfg, ctx.db_path)
