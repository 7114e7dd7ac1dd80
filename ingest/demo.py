"""`atlas demo`: build the embedded-default atlas (Gemma 3 270M) offline, then serve it.

1. assets: the GGUF, the converted model and the public-domain corpus (atlas/assets.py; cached).
2. model: load the converted Gemma 3 270M (~15 s).
3. transcoders: train the default TrainConfig's layers, or find them trained (ingest/transcoders.py),
   and register model, sources and metrics in ``{data_dir}/atlas.duckdb``.
4. the other ingest jobs, where this build has them (STEPS below: each imports its module lazily
   and is skipped with a note when the module is absent, so merging a job lights it up).
5. serve the atlas with the API server, where this build has one (skipped with ``--no-serve``).
Each step is resumable, so a second run reuses everything and starts serving in seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from atlas.config import AssetsConfig, CorpusConfig, DemoConfig, TrainConfig, cache_dir


@dataclass
class DemoContext:
    db_path: Path
    model_id: str
    model: Any                    # HookedTransformer
    transcoders: Any              # atlas.transcoders.TranscoderSet
    corpus: CorpusConfig
    train: TrainConfig
    timings: dict[str, float] = field(default_factory=dict)


# ---- 4. the other ingest jobs -------------------------------------------------------------------------
# MERGE NOTE: each entry names the ingest module of another branch and calls its entry point with the
# demo's model, transcoder set and database. A missing module is skipped with a printed note.


def _weightlens(ctx: DemoContext, module) -> None:
    module.run(db_path=ctx.db_path, model=ctx.model, model_id=ctx.model_id, transcoders=ctx.transcoders)


def _activations(ctx: DemoContext, module) -> None:
    module.run(db_path=ctx.db_path, model=ctx.model, model_id=ctx.model_id, transcoders=ctx.transcoders,
               corpus=ctx.corpus)


STEPS: list[tuple[str, str, Callable[[DemoContext, Any], None]]] = [
    ("weightlens", "ingest.weightlens", _weightlens),
    ("activations", "ingest.activations", _activations),
]


def _optional_steps(ctx: DemoContext) -> None:
    import importlib

    for name, module_name, call in STEPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            print(f"demo: step '{name}' skipped: {module_name} is not in this build", flush=True)
            continue
        t0 = time.monotonic()
        call(ctx, module)
        ctx.timings[name] = time.monotonic() - t0


# ---- the build ----------------------------------------------------------------------------------------


def data_dir(cfg: DemoConfig) -> Path:
    return Path(cfg.data_dir) if cfg.data_dir is not None else cache_dir() / "demo"


def build(cfg: DemoConfig = DemoConfig(), train: TrainConfig = TrainConfig(), corpus: CorpusConfig = CorpusConfig(),
          assets_cfg: AssetsConfig = AssetsConfig()) -> DemoContext:
    from atlas import assets
    from atlas.models import ModelSpec, load_model
    from atlas.train import load_trained
    from ingest import transcoders

    t_start = time.monotonic()
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.monotonic()
        print(f"demo: {name} ...", flush=True)
        out = fn(*args, **kwargs)
        timings[name] = time.monotonic() - t0
        print(f"demo: {name} done ({timings[name]:.1f} s)", flush=True)
        return out

    from atlas.models import DEFAULT_ALIASES

    needed = {"model"} if train.model in DEFAULT_ALIASES else set()   # what this build needs from the cache
    needed |= {"corpus"} if corpus.source == "builtin" else set()
    if needed:
        timed("assets", assets.ensure_all, assets_cfg, only=needed)
    model = timed("load model", load_model, ModelSpec.parse(train.model, device=train.device))
    db_path = data_dir(cfg) / "atlas.duckdb"
    out_dir, _ = timed("transcoders", transcoders.run, train, corpus, model_id=cfg.model_id, db_path=db_path,
                       model=model)
    tset = load_trained(out_dir, list(train.layers), train.set_name)
    ctx = DemoContext(db_path, cfg.model_id, model, tset, corpus, train, timings)
    _optional_steps(ctx)
    timings["total"] = time.monotonic() - t_start
    (data_dir(cfg) / "demo_timings.json").write_text(json.dumps(timings, indent=1))
    print("demo: built " + str(db_path) + " in " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), flush=True)
    return ctx


def serve(cfg: DemoConfig, db_path: Path) -> None:
    """Serve with the API server where this build has one (MERGE NOTE: api.server.serve)."""
    try:
        from api.server import serve as api_serve  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        print(f"demo: the API server is not in this build; the atlas is {db_path} "
              f"(inspect it with `atlas db status {db_path}`)", flush=True)
        return
    print(f"demo: serving {db_path} on http://{cfg.host}:{cfg.port}/graphql", flush=True)
    api_serve(db_path, host=cfg.host, port=cfg.port)
