"""`atlas ingest ...`: the jobs that compute results and load them into an atlas.

WeightLens (docs/method.md §2); activation statistics, examples and ERA/TWERA (§3, §4.1); CircuitLens
attributions, clusters and descriptions (4.2-4.5); token-membership scores of weight descriptions (5).
Each prints a short summary of its report, or the report as one JSON object with --json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from atlas.config import ActivationsConfig, CircuitLensConfig, ScoringConfig, WeightLensConfig, with_overrides
from atlas.errors import AtlasError
from cli.common import (
    TEXT_HELP,
    AddressOption,
    ExecutorOption,
    JsonOption,
    KeepShardsOption,
    MaxSequencesOption,
    ModelIdOption,
    ModelSpecOption,
    SetOption,
    ShardsOption,
    TranscodersOption,
    WorkersOption,
    emit,
    executor_config,
    overridden,
)

app = typer.Typer(help="Compute and load results into an atlas database.", rich_markup_mode=None, no_args_is_help=True)

WL = WeightLensConfig


def _circuit_inputs(
    model: str, transcoders: str, text: str, seq_len: int, max_sequences: int | None, model_id: str | None
):
    from atlas.models import ModelSpec
    from ingest.inputs import load_inputs

    m, tset, tokens = load_inputs(model, transcoders, text, seq_len, max_sequences)
    return m, tset, tokens, model_id or ModelSpec.parse(model).default_model_id()


def _summary(job: str, db_path: Path, report: dict[str, Any]) -> str:
    """'JOB into DB: key value, ...' with the shard figures on a second line."""
    shards = report.get("shards", {})
    main = ", ".join(
        f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
        for k, v in report.items()
        if k != "shards"
    )
    line = f"{db_path}: {job}: {main}"
    if shards:
        seconds = ", ".join(f"{k} {v:.1f} s" for k, v in shards.get("seconds", {}).items())
        line += (
            f"\n  shards: {shards['computed']} computed, {shards['reused']} reused, "
            f"{shards['rerun_bad_files']} re-run (bad files); {shards['rows']:,} rows"
            + (f"; {seconds}" if seconds else "")
        )
    return line


# ---- weightlens ----------------------------------------------------------------------------------


def _weightlens_summary(db_path: Path, cfg: WeightLensConfig, n_layers: int, report) -> str:
    lines = [
        f"{db_path}: WeightLens ({cfg.profile} profile) for {n_layers} layers ({len(report.layers_computed)} "
        f"computed, {len(report.layers_skipped)} already done)",
        "layer  coverage (share of features with a validated weight description)",
    ]
    return "\n".join(lines + [f"{layer:>5}  {value:8.1%}" for layer, value in report.coverage.items()])


@app.command("weightlens")
def ingest_weightlens(
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    db_path: Path = typer.Option(..., "--db", help="The atlas DuckDB file (created if absent)."),
    model_id: ModelIdOption = None,
    profile: str | None = typer.Option(
        None,
        help="'atlas' (atlas's own choices) or 'reference' (the authors' "
        "code, step for step; docs/weightlens.md lists the differences); "
        f"default {WL.profile!r}.",
    ),
    family: str | None = typer.Option(
        None, help=f"Model family gpt2, gemma or llama (default {WL.family!r}: inferred)."
    ),
    input_z: float | None = typer.Option(None, help=f"Input-token z threshold (default {WL.input_z}, the reference)."),
    edge_z: float | None = typer.Option(
        None, help=f"Virtual-weight z threshold (default {WL.edge_z:g}, the reference)."
    ),
    zmode: str | None = typer.Option(
        None, help=f"Token z-score population: 'pool' (reference) or 'full' vocabulary (default {WL.token_zmode!r})."
    ),
    edge_variant: str | None = typer.Option(
        None, help=f"'raw' (reference) or 'ln_centered' (fold the read norm) (default {WL.edge_variant!r})."
    ),
    inherit_layers: str | None = typer.Option(
        None, help=f"'auto' (GPT-2: layer0), 'all' or 'layer0' (default {WL.inherit_layers!r})."
    ),
    dtype: str | None = typer.Option(
        None, help=f"Lens matmul dtype: float32, bfloat16 or float64 (default {WL.dtype})."
    ),
    device: str | None = typer.Option(None, help=f"cpu or cuda (default {WL.device})."),
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
    keep_shards: KeepShardsOption = False,
    as_json: JsonOption = False,
) -> None:
    """Compute WeightLens (docs/method.md §2) for every feature and load it; prints coverage per layer."""
    named = dict(
        profile=profile,
        family=family,
        input_z=input_z,
        edge_z=edge_z,
        token_zmode=zmode,
        edge_variant=edge_variant,
        inherit_layers=inherit_layers,
        dtype=dtype,
        device=device,
    )
    cfg = with_overrides(WeightLensConfig(), [f"{k}={v}" for k, v in named.items() if v is not None] + list(setting))
    ex = executor_config(executor, address, workers, shards, keep_shards)  # refused before any loading
    from atlas.models import ModelSpec, load_model

    spec = ModelSpec.parse(model, device=cfg.device)
    from atlas.transcoders.loading import TranscoderSpec, load_transcoders

    lm = load_model(spec)
    tset = load_transcoders(TranscoderSpec.parse(transcoders), lm)
    from ingest.weightlens import run_weightlens

    report = run_weightlens(
        lm, tset, db_path, cfg, model_id=model_id or spec.default_model_id(), model_spec=str(spec), executor=ex
    )
    emit(report, as_json, lambda: _weightlens_summary(db_path, cfg, len(tset), report))


# ---- activations, circuitlens, scores ---------------------------------------------------------------


@app.command("activations")
def ingest_activations(
    db_path: Annotated[Path, typer.Argument(help="The atlas database.")],
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    text: str = typer.Option(..., help=TEXT_HELP),
    model_id: ModelIdOption = None,
    seq_len: int = typer.Option(ActivationsConfig.seq_len, help="Tokens per sequence."),
    batch_size: int = typer.Option(ActivationsConfig.batch_size, help="Sequences per forward pass."),
    max_sequences: MaxSequencesOption = None,
    n_samples: int = typer.Option(ActivationsConfig.n_samples, help="Bin-weighted examples per feature (paper: 100)."),
    n_top: int = typer.Option(ActivationsConfig.n_top, help="Top-activation examples per feature."),
    no_era: bool = typer.Option(not ActivationsConfig.era, "--no-era", help="Skip ERA/TWERA edges."),
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
    keep_shards: KeepShardsOption = False,
    as_json: JsonOption = False,
) -> None:
    """Activation statistics, top and bin-weighted examples, and ERA/TWERA edges over a corpus."""
    from ingest import activations

    cfg = overridden(
        ActivationsConfig(seq_len=seq_len, batch_size=batch_size, n_samples=n_samples, n_top=n_top, era=not no_era),
        setting,
    )  # refused before any loading
    ex = executor_config(executor, address, workers, shards, keep_shards)
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, cfg.seq_len, max_sequences, model_id)
    report = activations.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model, executor=ex)
    emit(report, as_json, lambda: _summary("activations", db_path, report))


@app.command("circuitlens")
def ingest_circuitlens(
    db_path: Annotated[Path, typer.Argument(help="The atlas database (after `atlas ingest activations`).")],
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    text: str = typer.Option(..., help=TEXT_HELP + " The same corpus as for activations."),
    model_id: ModelIdOption = None,
    seq_len: int = typer.Option(ActivationsConfig.seq_len, help="Tokens per sequence (as for activations)."),
    max_sequences: MaxSequencesOption = None,
    batch_size: int = typer.Option(CircuitLensConfig.batch_size, help="Examples per attribution batch."),
    eps: float = typer.Option(CircuitLensConfig.eps, help="DBSCAN eps on Jaccard distances."),
    min_samples: int = typer.Option(CircuitLensConfig.min_samples, help="DBSCAN min_samples."),
    explainer_url: str | None = typer.Option(
        None,
        help="OpenAI-compatible endpoint (e.g. http://host:8000/v1); "
        "key from $ATLAS_EXPLAINER_API_KEY. Default: template descriptions.",
    ),
    explainer_model: str | None = typer.Option(None, help="The explainer model's name at that endpoint."),
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
    keep_shards: KeepShardsOption = False,
    as_json: JsonOption = False,
) -> None:
    """CircuitLens: attribute each sampled example, cluster by mechanism, describe each cluster."""
    from ingest import circuitlens

    if explainer_url and not explainer_model:
        raise AtlasError("--explainer-url needs --explainer-model")
    cfg = overridden(
        CircuitLensConfig(
            batch_size=batch_size,
            eps=eps,
            min_samples=min_samples,
            explainer_url=explainer_url,
            explainer_model=explainer_model,
        ),
        setting,
    )
    ex = executor_config(executor, address, workers, shards, keep_shards)
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, seq_len, max_sequences, model_id)
    report = circuitlens.run(db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model, executor=ex)
    emit(report, as_json, lambda: _summary("circuitlens", db_path, report))


@app.command("scores")
def ingest_scores(
    db_path: Annotated[Path, typer.Argument(help="The atlas database (with WeightLens descriptions).")],
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    text: str = typer.Option(..., help="Held-out text (not used for training or sampling). " + TEXT_HELP),
    model_id: ModelIdOption = None,
    seq_len: int = typer.Option(ScoringConfig.seq_len, help="Tokens per sequence."),
    max_sequences: MaxSequencesOption = None,
    setting: SetOption = [],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    shards: ShardsOption = None,
    keep_shards: KeepShardsOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score weight-based descriptions: precision, recall and AUROC of 'token in description'."""
    from ingest import scoring

    cfg = overridden(ScoringConfig(seq_len=seq_len), setting)
    ex = executor_config(executor, address, workers, shards, keep_shards)
    m, tset, tokens, mid = _circuit_inputs(model, transcoders, text, cfg.seq_len, max_sequences, model_id)
    report = scoring.run(
        db_path, m, tset, tokens, cfg, model_id=mid, model_spec=model, data_name=str(text), executor=ex
    )
    emit(report, as_json, lambda: _summary("scores", db_path, report))
