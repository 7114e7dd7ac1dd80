"""One configuration surface: typed dataclasses, defaults = the paper's reference choices.

Each job's configuration is a dataclass here; a comment on each default says where it comes
from (science.md section, the authors' reference code) and where atlas knowingly differs.
The whole configuration of a run is stored as JSON in `ingest_runs.config`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models, corpora and trained transcoders are kept between runs."""
    return Path(os.environ.get("ATLAS_CACHE", Path.cwd() / ".cache" / "atlas"))


def as_dict(config) -> dict:
    return asdict(config)


@dataclass(frozen=True)
class ComputeConfig:
    device: str = "cpu"          # 'cpu' or 'cuda'
    dtype: str = "float32"       # 'float32' or 'bfloat16' for the lenses' matrix products
