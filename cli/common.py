"""What the command modules share: option types, help texts, text parsers and report output.

Only typer, the standard library and atlas's light modules (config, errors) are imported here:
everything on the start-up path of `atlas --help` must stay off torch & co. (tests/test_cli.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from atlas.config import TrainConfig, with_overrides
from atlas.errors import AtlasError

MODEL_HELP = "Model spec KIND:VALUE: tl:NAME, hf-dir:PATH, gguf:PATH or random:SHAPE (tiny, gpt2-small)."
CORPUS_HELP = "'builtin', a txt/jsonl/parquet file or directory, or an HF dataset."
TEXT_HELP = (
    "Corpus, all of it: a .txt file (documents separated by blank lines), .jsonl ('text' per line), "
    ".parquet ('text' column), a directory of those, 'builtin', or a Hugging Face dataset (online)."
)
TRANSCODERS_HELP = (
    "Transcoder set FORMAT:LOCATION: saelens:DIR, saelens-release:RELEASE[/ID], dunefsky:DIR|FILE, "
    "gemmascope:DIR, circuit-tracer:DIR, gemmascope2:DIR (DIR may be hf://OWNER/REPO), an existing "
    "path (format detected), a preset (gpt2-small, gemma-2-2b, gemma-3-270m), or a cross-layer "
    "transcoder circuit-tracer-clt:DIR / gemmascope2-clt:DIR (local)."
)

# The options every job command shares, declared once.
ModelSpecOption = Annotated[str, typer.Option("--model", help=MODEL_HELP)]
ModelIdOption = Annotated[
    str | None, typer.Option("--model-id", help="Model id in the atlas (default: from the spec).")
]
TranscodersOption = Annotated[str, typer.Option("--transcoders", help=TRANSCODERS_HELP)]
MaxSequencesOption = Annotated[
    int | None, typer.Option("--max-sequences", help="Use at most this many sequences of the corpus.")
]
# Every job takes `--set NAME=VALUE` for any field of its config dataclass, parsed by the field's type
# hint (atlas.config.with_overrides); the named options are applied first, --set after them.
SetOption = Annotated[
    list[str],
    typer.Option("--set", help="Any field of the job's config as NAME=VALUE (repeatable; parsed by the field's type)."),
]
# Commands with a report print a readable summary, or with --json the report as one JSON object.
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the report as one JSON object on stdout (progress goes to stderr either way)."),
]
# Where an ingest job's shards run (ingest/shards.py, docs/scale.md).
ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor", help="Where shards run: 'local' (in this process) or 'ray' (Ray actors; docs/scale.md)."
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address", help="Ray cluster HOST:PORT, or 'auto' for the one `ray start` made (default: start a local Ray)."
    ),
]
WorkersOption = Annotated[int | None, typer.Option("--workers", help="Ray actors (default: the cluster's CPUs).")]
ShardsOption = Annotated[
    Path | None,
    typer.Option(
        "--shards",
        help="Shard directory: Parquet files + manifest (default: DB.shards/JOB-...; on a cluster, shared storage).",
    ),
]
KeepShardsOption = Annotated[
    bool,
    typer.Option(
        "--keep-shards", help="Keep the shard files and manifest once every unit is in the atlas (deleted by default)."
    ),
]


# ---- text -> values --------------------------------------------------------------------------------


def parse_layers(text: str | None) -> list[int] | None:
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


def overridden(config, setting: list[str]):
    """``config`` with the `--set NAME=VALUE` assignments applied (atlas.config.with_overrides)."""
    return with_overrides(config, list(setting))


def train_config(
    layers: str | None, width: int | None, tokens: int | None, gpu: bool, model: str | None
) -> TrainConfig:
    """The TrainConfig of `train-transcoders` / `demo`: the default (or TrainConfig.gpu) with the named
    options that were given; ``layers`` 'all' means every layer of the model (an empty tuple)."""
    overrides: dict = {}
    if layers:
        # parse_layers gives None only for an empty text, which `if layers` has ruled out
        overrides["layers"] = () if layers.strip().lower() == "all" else tuple(parse_layers(layers) or ())
    if width:
        overrides["d_sae"] = width
    if tokens:
        overrides["n_tokens"] = tokens
    if model:
        overrides["model"] = model
    return TrainConfig.gpu(**overrides) if gpu else TrainConfig(**overrides)


def executor_config(
    executor: str, address: str | None, workers: int | None, shards: Path | None, keep_shards: bool = False
):
    """The ingest.shards.ExecutorConfig of --executor/--address/--workers/--shards, refused when inconsistent."""
    from ingest.shards import ExecutorConfig

    if executor not in ("local", "ray"):
        raise AtlasError(f"--executor {executor!r}: use 'local' or 'ray'")
    if executor == "local" and (address or workers):
        raise AtlasError("--address and --workers need --executor ray")
    return ExecutorConfig(
        kind=executor,
        address=address,
        workers=workers,
        shard_dir=str(shards) if shards else None,
        keep_shards=keep_shards,
    )


# ---- output --------------------------------------------------------------------------------------------


class StderrHandler(logging.StreamHandler):
    """A log handler writing to whatever ``sys.stderr`` is at the time of each record (so an in-process
    CliRunner, which swaps the stream per invocation, sees the progress lines too)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


_HANDLER = StderrHandler()
_HANDLER.setFormatter(logging.Formatter("%(message)s"))
LIBRARY_LOGGERS = ("atlas", "ingest")  # atlas's own packages (api logs as atlas.api); others keep theirs


def configure_logging(level: int = logging.INFO) -> None:
    """Progress lines and notes of atlas's packages to stderr at ``level``; idempotent."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)


def _jsonable(value: Any) -> Any:
    """json.dumps's fallback: dataclasses as dicts, paths as text, numpy scalars and arrays as numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} has no JSON form")


def report_json(report: Any) -> str:
    """The report as one line of JSON (dict keys such as layer numbers become strings)."""
    return json.dumps(report, default=_jsonable, sort_keys=True)


def emit(report: Any, as_json: bool, summary: Callable[[], str]) -> None:
    """Print a command's result on stdout: ``summary()`` for a reader, or the report as one JSON object."""
    print(report_json(report) if as_json else summary(), flush=True)
