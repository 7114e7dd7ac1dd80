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


# ---- WeightLens (science.md §2; docs/weightlens.md) -------------------------------------------


@dataclass(frozen=True)
class WeightLensConfig:
    # Step 1, input tokens s = W_E · f_enc: the reference keeps z > 5.5 inside the top-1000 pool.
    input_pool: int = 1000            # reference: top-1000 scores form the pool
    input_z: float = 5.5              # reference threshold (the paper's text reports 4 / 4.5, see docs)
    # Step 3, output tokens u = f_dec · W_U: top-1000 (promoted) and bottom-1000 (suppressed) pools.
    output_pool: int = 1000           # reference pool size, both sides
    output_z: float = 5.5             # "by the same rule" as the input tokens
    # 'pool' = z inside the top-k pool with its sample std (reference); 'full' = mean/std over the
    # whole vocabulary (outliers are still taken from the pool, so at most `*_pool` per feature).
    token_zmode: str = "pool"
    # Step 4, feature-to-feature virtual weights c = W_dec[l'] · f_enc.
    edge_pool: int = 100              # reference: top-100 pool
    edge_z: float = 4.0               # reference threshold
    edge_zmode: str = "pool"          # 'pool' (reference) or 'full' (over all upstream features)
    # 'all_layers': one pool over the concatenation of every earlier layer (atlas default; the
    # reference's exact pooling is unconfirmed, science.md §2) or 'per_layer': one pool and z-score
    # per (downstream feature, upstream layer).
    edge_scope: str = "all_layers"
    edge_sign: str = "positive"       # 'positive' links only (reference) or 'absolute' (pool on |c|)
    # 'raw' = W_dec[l'] · W_enc[l] (reference, stored); 'ln_centered' folds the read norm's linear
    # part: centre W_dec rows over d_model (LayerNorm) and scale by the ln2 gain when the transcoder
    # reads ln2.hook_normalized. 1/scale depends on the input and is never folded.
    edge_variant: str = "raw"
    # Step 2 and 5: the model's own BOS ('model'), or an integer token id. The reference
    # hard-codes 2, a bug for GPT-2 (whose BOS is 50256).
    bos: str = "model"
    # Step 5: which upstream layers a description inherits from: 'all', 'layer0' (the set's lowest
    # layer; the reference for GPT-2: "other layers add noise"), or 'auto' = 'layer0' for GPT-2-family
    # models, 'all' otherwise.
    inherit_layers: str = "auto"
    # Step 7: near-duplicate grouping thresholds (difflib ratio), words / all-punctuation terms.
    dedup_word_ratio: float = 0.85
    dedup_punct_ratio: float = 0.6
    # Compute: lens matrix products in this dtype ('float32', 'bfloat16', 'float64') on this device.
    dtype: str = "float32"
    device: str = "cpu"
    feature_block: int = 1024         # downstream features per block: bounds [f_block, V] scores
    vocab_block: int = 65536          # vocabulary columns per block (GPT-2's 50,257 fit in one)
    upstream_block: int = 32768       # upstream features per block in virtual weights
    forward_batch_tokens: int = 16384 # tokens per batched forward pass (isolation / descriptions)

    def __post_init__(self):
        from atlas.errors import AtlasError

        choices = {"token_zmode": ("pool", "full"), "edge_zmode": ("pool", "full"),
                   "edge_scope": ("all_layers", "per_layer"), "edge_sign": ("positive", "absolute"),
                   "edge_variant": ("raw", "ln_centered"), "inherit_layers": ("auto", "all", "layer0"),
                   "dtype": ("float32", "bfloat16", "float64")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise AtlasError(f"WeightLens {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.bos != "model" and not str(self.bos).isdigit():
            raise AtlasError(f"WeightLens bos={self.bos!r} must be 'model' or a token id")
        for name in ("input_pool", "output_pool", "edge_pool", "feature_block", "vocab_block", "upstream_block",
                     "forward_batch_tokens"):
            if int(getattr(self, name)) < (2 if name.endswith("pool") else 1):
                raise AtlasError(f"WeightLens {name}={getattr(self, name)!r} is too small")


def with_overrides(config, assignments: list[str]):
    """A copy of a config dataclass with 'field=value' strings applied (types from the field)."""
    from dataclasses import fields, replace

    from atlas.errors import AtlasError

    types = {f.name: type(getattr(config, f.name)) for f in fields(config)}
    changes = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep or name not in types:
            raise AtlasError(f"setting {text!r} is not NAME=VALUE with NAME one of {', '.join(types)}")
        try:
            changes[name] = types[name](value)
        except ValueError as exc:
            raise AtlasError(f"setting {text!r}: {value!r} is not a {types[name].__name__}") from exc
    return replace(config, **changes)
