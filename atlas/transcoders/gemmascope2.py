"""Gemma Scope 2 per-layer transcoders (hub ``google/gemma-scope-2-{size}-pt``, folders
``transcoder_all/`` and ``transcoder/``): one folder per layer, width and sparsity,
``layer_{l}_width_{W}_l0_{small|medium|big}[_affine]/`` holding ``params.safetensors`` and
``config.json``.

Tensors (lower-case keys): w_enc [d_in, F], w_dec [F, d_out], b_enc [F], b_dec [d_out],
threshold [F], optional affine_skip_connection [d_in, d_out] (the ``_affine`` sets).
config.json: ``architecture`` ("jump_relu"), ``hf_hook_point_in`` / ``hf_hook_point_out`` in HF
module terms (``model.layers.{l}.pre_feedforward_layernorm.output`` ->
``model.layers.{l}.post_feedforward_layernorm.output``), ``affine_connection``.

1. Discover every ``params.safetensors`` whose folder names ``layer_{l}``; where a layer has
   several, choose deterministically: the narrowest width, then L0 small < medium < big, then
   without the affine skip before with it. (Point the spec at one folder to pin another.)
2. Read config.json (when present); translate its hook points to TransformerLens names
   (atlas/transcoders/hook_points.py: the pre-MLP norm's output is the MLP's input
   ``blocks.l.mlp.hook_in``; the post-MLP norm's output is ``blocks.l.hook_mlp_out``). Without a
   config.json those two are the defaults (SAELens infers the same).
3. Read the tensors and check the layout, naming the key: w_enc and w_dec matrices, the affine
   skip [d_in, d_out].
4. Forward rule: z = x w_enc + b_enc, a = z · 1[z > threshold], y = a w_dec + b_dec + x A
   (A = affine_skip_connection) -> SAELens JumpReLU(Skip)Transcoder with W_skip = Aᵀ (SAELens
   adds x W_skipᵀ).
"""

from __future__ import annotations

import re

from atlas.errors import TranscoderError
from atlas.transcoders.build import build_layer
from atlas.transcoders.hook_points import hf_required_module, hf_to_tl
from atlas.transcoders.source import Source
from atlas.transcoders.transcoder_set import LayerTranscoder

NAME = "gemmascope2"
DEFAULT_SET_NAME = "gemmascope-2-transcoder"
FILE_RULE = "*layer_{l}_width_*_l0_*/params.safetensors (+ config.json)"
KEYS = ("w_enc", "w_dec", "b_enc", "b_dec", "threshold")
SKIP_KEY = "affine_skip_connection"
_FILE = re.compile(r"(?:^|/)layer_(\d+)(?:_width_(\d+)(k|m)?)?(?:_l0_(\w+?))?(_affine)?/params\.safetensors$")
_L0_ORDER = {"small": 0, "medium": 1, "big": 2}
DEFAULT_HF_HOOKS = (
    "model.layers.{layer}.pre_feedforward_layernorm.output",
    "model.layers.{layer}.post_feedforward_layernorm.output",
)


def _choice_key(m: re.Match) -> tuple:
    width = int(m.group(2) or 0) * {"k": 1024, "m": 1024**2, None: 1}[m.group(3)]
    return (width, _L0_ORDER.get(m.group(4) or "", 3), m.group(4) or "", bool(m.group(5)))


def discover(source: Source) -> dict[int, str]:
    files = source.files()
    if "params.safetensors" in files and "config.json" in files:  # the location is one layer's folder
        m = re.search(r"layer_(\d+)", source.location.rstrip("/").rpartition("/")[2])
        cfg = read_config(source, "config.json")
        layer = int(m.group(1)) if m else _layer_of_hf(cfg.get("hf_hook_point_in"))
        if layer is not None:
            return {layer: "params.safetensors"}
    return source.files_by_layer(_FILE, prefer=_choice_key)


def _layer_of_hf(name) -> int | None:
    m = re.match(r"^model\.layers\.(\d+)\.", name or "")
    return int(m.group(1)) if m else None


def read_config(source: Source, rel: str) -> dict:
    from atlas.transcoders.saelens_format import read_json_config

    return read_json_config(source.fetch(rel)) if source.has(rel) else {}


def hooks_from_config(cfg: dict, layer: int, where: str) -> tuple[str, str, tuple]:
    """TransformerLens (hook_in, hook_out, requires) for a Gemma Scope 2 config (HF module names)."""
    hf_in = cfg.get("hf_hook_point_in") or cfg.get("hf_hook_name") or DEFAULT_HF_HOOKS[0].format(layer=layer)
    hf_out = cfg.get("hf_hook_point_out") or cfg.get("hf_hook_name_out") or DEFAULT_HF_HOOKS[1].format(layer=layer)
    hook_in, hook_out = hf_to_tl(hf_in, where), hf_to_tl(hf_out, where)
    for hf, hook in ((hf_in, hook_in), (hf_out, hook_out)):
        if not hook.startswith(f"blocks.{layer}."):
            raise TranscoderError(f"{where}: hook point {hf!r} is not in layer {layer}, the layer of its folder")
    requires = tuple((hf, m) for hf in (hf_in, hf_out) if (m := hf_required_module(hf)) is not None)
    return hook_in, hook_out, requires


def read_tensors(path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise TranscoderError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_layer(source: Source, rel: str, layer: int, dtype: str = "float32") -> LayerTranscoder:
    path = source.fetch(rel)
    folder = rel.rpartition("/")[0]
    cfg_rel = f"{folder}/config.json" if folder else "config.json"
    cfg = read_config(source, cfg_rel)
    arch = cfg.get("architecture", "jump_relu")
    if arch != "jump_relu":
        raise TranscoderError(f"{source.uri(cfg_rel)}: architecture {arch!r}, expected 'jump_relu' (Gemma Scope 2)")
    hook_in, hook_out, requires = hooks_from_config(cfg, layer, source.uri(cfg_rel))
    t = read_tensors(path)
    missing = [k for k in KEYS if k not in t]
    if missing:
        raise TranscoderError(
            f"{path}: missing key(s) {missing} (has {sorted(t)}); Gemma Scope 2 params.safetensors "
            f"holds w_enc [d_in, F], w_dec [F, d_out], b_enc [F], b_dec [d_out], threshold [F], "
            f"optional {SKIP_KEY} [d_in, d_out]"
        )
    for k in ("w_enc", "w_dec"):
        if t[k].ndim != 2:
            raise TranscoderError(
                f"{path}: {k} has shape {tuple(t[k].shape)}, expected a matrix "
                f"({'[d_in, F]' if k == 'w_enc' else '[F, d_out]'}); a 3-D w_dec is a "
                f"cross-layer transcoder (format gemmascope2-clt)"
            )
    skip = t.get(SKIP_KEY)
    if skip is not None:
        want = (t["w_enc"].shape[0], t["w_dec"].shape[1])
        if tuple(skip.shape) != want:
            raise TranscoderError(
                f"{path}: {SKIP_KEY} has shape {tuple(skip.shape)}, expected [d_in, d_out] = {list(want)}"
            )
        skip = skip.T
    tc = build_layer(
        str(path),
        layer,
        hook_in=hook_in,
        hook_out=hook_out,
        format=NAME,
        uri=source.uri(rel),
        W_enc=t["w_enc"],
        b_enc=t["b_enc"],
        W_dec=t["w_dec"],
        b_dec=t["b_dec"],
        threshold=t["threshold"],
        W_skip=skip,
        dtype=dtype,
    )
    tc.requires = requires
    return tc
