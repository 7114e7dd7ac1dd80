"""`atlas demo`: build the embedded-default atlas (Gemma 3 270M) offline, then serve it.

1. assets: the GGUF, the converted model and the public-domain corpus (atlas/assets.py; cached).
2. model: load the converted Gemma 3 270M (~15 s).
3. transcoders: train the default TrainConfig's layers, or find them trained (ingest/transcoders.py),
   and register model, sources and metrics in ``{data_dir}/atlas.duckdb``; every layer's quality on
   held-out text (fve, L0, dead share, loss recovered) is kept in the DemoContext (`atlas demo` prints
   it) and written to transcoder_quality.json. Progress goes to the logger ``ingest.demo`` (INFO).
4. the analysis jobs (STEPS below): WeightLens, activations + ERA/TWERA, CircuitLens on the most
   often active features that WeightLens does not describe, token-membership scores on held-out text.
5. serve the atlas with the GraphQL API (skipped with ``--no-serve``).
Each step is resumable, so a second run reuses everything and starts serving in seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas.config import AssetsConfig, CorpusConfig, DemoConfig, TrainConfig, cache_dir

if TYPE_CHECKING:
    from atlas.corpus import Split

log = logging.getLogger(__name__)  # one line as each step starts and ends, INFO (the CLI sends it to stderr)


@dataclass
class DemoContext:
    db_path: Path
    model_id: str
    model: Any  # HookedTransformer
    transcoders: Any  # atlas.transcoders.TranscoderSet
    corpus: CorpusConfig
    train: TrainConfig
    demo: DemoConfig
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds (and 'total')
    quality: list[dict] = field(default_factory=list)  # per layer: ingest.transcoders.quality's rows


# ---- 4. the analysis jobs ----------------------------------------------------------------------------
# WeightLens over every feature; activation statistics, examples and ERA/TWERA on training text;
# CircuitLens on the most often active features; token-membership scores on held-out text.


def _corpus_tokens(ctx: DemoContext, split: Split, n_tokens: int):
    from dataclasses import replace

    from atlas.config import ActivationsConfig
    from atlas.corpus import Corpus

    cfg = replace(ctx.corpus, seq_len=ActivationsConfig().seq_len)
    return Corpus.for_model(ctx.model, cfg).tokens(split, n_tokens)


def _weightlens(ctx: DemoContext) -> None:
    from ingest.weightlens import run_weightlens

    run_weightlens(ctx.model, ctx.transcoders, ctx.db_path, model_id=ctx.model_id, model_spec=ctx.train.model)


def _activations(ctx: DemoContext) -> None:
    from atlas.config import ActivationsConfig
    from ingest import activations

    tokens = _corpus_tokens(ctx, "train", ctx.demo.activation_tokens)
    activations.run(
        ctx.db_path,
        ctx.model,
        ctx.transcoders,
        tokens,
        ActivationsConfig(n_samples=ctx.demo.samples_per_feature, per_bin_reservoir=ctx.demo.samples_per_feature),
        model_id=ctx.model_id,
        model_spec=ctx.train.model,
    )


def _circuitlens(ctx: DemoContext) -> None:
    from atlas.config import CircuitLensConfig
    from ingest import circuitlens

    tokens = _corpus_tokens(ctx, "train", ctx.demo.activation_tokens)  # the text the examples come from
    circuitlens.run(
        ctx.db_path,
        ctx.model,
        ctx.transcoders,
        tokens,
        CircuitLensConfig(
            max_features_per_layer=ctx.demo.circuitlens_features,
            undescribed_only=True,
            examples_per_feature=ctx.demo.circuitlens_examples,
        ),
        model_id=ctx.model_id,
        model_spec=ctx.train.model,
    )


def _scores(ctx: DemoContext) -> None:
    from ingest import scoring

    tokens = _corpus_tokens(ctx, "heldout", ctx.demo.score_tokens)
    scoring.run(ctx.db_path, ctx.model, ctx.transcoders, tokens, model_id=ctx.model_id, model_spec=ctx.train.model)


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("weightlens", _weightlens),
    ("activations", _activations),
    ("circuitlens", _circuitlens),
    ("scores", _scores),
]


def _analysis_steps(ctx: DemoContext) -> None:
    for name, call in STEPS:
        t0 = time.monotonic()
        log.info(f"demo: {name} ...")
        call(ctx)
        ctx.timings[name] = time.monotonic() - t0
        log.info(f"demo: {name} done ({ctx.timings[name]:.1f} s)")


# ---- the build ----------------------------------------------------------------------------------------


def data_dir(cfg: DemoConfig) -> Path:
    return Path(cfg.data_dir) if cfg.data_dir is not None else cache_dir() / "demo"


def build(
    cfg: DemoConfig = DemoConfig(),
    train: TrainConfig = TrainConfig(),
    corpus: CorpusConfig = CorpusConfig(),
    assets_cfg: AssetsConfig = AssetsConfig(),
) -> DemoContext:
    from atlas import assets
    from atlas.models import ModelSpec, load_model
    from ingest import transcoders

    t_start = time.monotonic()
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.monotonic()
        log.info(f"demo: {name} ...")
        out = fn(*args, **kwargs)
        timings[name] = time.monotonic() - t0
        log.info(f"demo: {name} done ({timings[name]:.1f} s)")
        return out

    from atlas.models import DEFAULT_ALIASES

    needed = {"model"} if train.model in DEFAULT_ALIASES else set()  # what this build needs from the cache
    needed |= {"corpus"} if corpus.source == "builtin" else set()
    if needed:
        timed("assets", assets.ensure_all, assets_cfg, only=needed)
    from atlas.train import resolve_layers, train_budget_check

    model = timed("load model", load_model, ModelSpec.parse(train.model, device=train.device))
    train = resolve_layers(train, model.cfg.n_layers)  # 'all' -> every layer; bad layers refused
    train_budget_check(train, model)  # a build that cannot fit is refused now
    db_path = data_dir(cfg) / "atlas.duckdb"
    out_dir, _ = timed(
        "transcoders", transcoders.run, train, corpus, model_id=cfg.model_id, db_path=db_path, model=model
    )
    from atlas.train import load_trained

    tset = load_trained(out_dir, list(train.layers), train.set_name)
    ctx = DemoContext(db_path, cfg.model_id, model, tset, corpus, train, cfg, timings)
    _analysis_steps(ctx)
    timings["total"] = time.monotonic() - t_start
    (data_dir(cfg) / "demo_timings.json").write_text(json.dumps(timings, indent=1))
    ctx.quality = transcoders.quality(db_path, cfg.model_id, train.set_name)  # every layer's quality
    (data_dir(cfg) / "transcoder_quality.json").write_text(json.dumps(ctx.quality, indent=1))
    return ctx


def serve(cfg: DemoConfig, db_path: Path) -> None:
    """Serve the demo atlas with the GraphQL API (GraphiQL in the browser) until interrupted."""
    import uvicorn

    from api.app import build_app

    log.info(f"demo: serving {db_path} on http://{cfg.host}:{cfg.port}/graphql (Ctrl-C stops)")
    uvicorn.run(build_app(db_path), host=cfg.host, port=cfg.port, log_level="warning")
