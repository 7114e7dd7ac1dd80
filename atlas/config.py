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


# ---- activations and CircuitLens (science.md sections 3 and 4) -------------------------------


@dataclass(frozen=True)
class ActivationsConfig:
    seq_len: int = 128              # tokens per corpus sequence (atlas's choice; the paper does not say)
    batch_size: int = 16            # sequences per forward pass
    n_bins: int = 20                # science.md 4.1: 20 bins of non-zero activations
    bin_mode: str = "width"         # 'width': equal-width bins over (0, max] (the 1/n^0.9 weights only
                                    # matter when bin sizes differ); 'quantile': equal-count bins
    bin_warmup_seqs: int = 256      # bin edges come from the corpus's first sequences, so collection is one
                                    # pass; the top bin is open-ended (the paper fixes edges after caching)
    weight_exponent: float = 0.9    # science.md 4.1: weight 1 / n_bin^0.9
    n_samples: int = 100            # science.md 4.1: 100 examples drawn without replacement
    per_bin_reservoir: int = 100    # sample candidates kept per (feature, bin) while streaming: = n_samples is
                                    # exact; fewer bounds memory (features x bins x this), checked at the end
    n_top: int = 20                 # top-activation examples kept per feature (atlas's choice)
    window_before: int = 16         # window tokens kept left of the activating token
    window_after: int = 4           # ... and right of it
    hist_bins: int = 256            # log-spaced histogram of non-zero activations (quantile estimates)
    hist_min: float = 1e-4          # histogram range; values outside land in the end bins
    hist_max: float = 1e4
    quantile_levels: tuple = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    seed: int = 0                   # sampling is reproducible
    skip_first: bool = True         # position 0 (BOS, an attention sink with outlier activations) is not counted
    era: bool = True                # science.md 3: ERA/TWERA for the stored 'virtual' edges
    edge_variant: str | None = None  # which virtual-edge variant to weight (None: every variant)


@dataclass(frozen=True)
class CircuitLensConfig:
    features_per_unit: int = 256    # features per resumable unit (a block of one layer)
    batch_size: int = 16            # examples per linearized forward/backward
    example_kinds: tuple = ("quantile",)  # science.md 4.1: clusters are built on the sampled examples
    top_contributors: int = 10      # significant contributors kept per example (atlas's choice)
    min_rel_contribution: float = 0.05  # a contributor is significant if >= 5 % of the example's
                                    # total positive input contribution (atlas's choice)
    n_output_positions: int = 3     # science.md 4.3: next tokens predicted at t .. t+k-1
    min_contributor_fraction: float = 0.05  # science.md 4.4: drop contributors in < 5 % of examples
    eps: float = 0.5                # science.md 4.4: DBSCAN eps on Jaccard distance
    min_samples: int = 5            # science.md 4.4: DBSCAN min_samples
    min_examples: int = 5           # features with fewer examples are not clustered
    stored_per_example: int = 20    # attribution rows stored per example besides bias/error (by |value|)
    explainer_url: str | None = None    # OpenAI-compatible endpoint (None: template descriptions only)
    explainer_model: str | None = None  # the explainer model's name at that endpoint
    explainer_timeout_s: float = 60.0


@dataclass(frozen=True)
class ScoringConfig:
    seq_len: int = 128
    batch_size: int = 16
    method: str = "token-membership"   # science.md 5: 'token in description' predicts 'feature active'
