"""Build a SAELens transcoder from plain tensors, after checking them: the one constructor every
format loader (and the training job) ends in.

1. Convert each tensor (torch or numpy) to torch; check its rank and that the shapes agree:
   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_out], b_dec [d_out], threshold [d_sae],
   W_skip [d_out, d_in].
2. Check every value is finite (NaN / inf weights are refused at load, naming the key).
3. Pick the SAELens class: ReLU -> Transcoder, JumpReLU (a threshold) -> JumpReLUTranscoder,
   with a skip matrix -> SkipTranscoder / JumpReLUSkipTranscoder; record the hooks in the
   config's metadata (hook_name / hook_name_out, as SAELens does) and assign the weights.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from atlas.errors import TranscoderError
from atlas.transcoders.transcoder_set import LayerTranscoder, all_finite

if TYPE_CHECKING:
    import torch
    from sae_lens import Transcoder

DEFAULT_HOOK_IN = "blocks.{layer}.ln2.hook_normalized"  # [batch, pos, d_model]
DEFAULT_HOOK_OUT = "blocks.{layer}.hook_mlp_out"  # [batch, pos, d_model]
_LAYER_IN_HOOK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def default_hooks(layer: int) -> tuple[str, str]:
    return DEFAULT_HOOK_IN.format(layer=layer), DEFAULT_HOOK_OUT.format(layer=layer)


def layer_of_hook(hook: str | None) -> int | None:
    """'blocks.3.ln2.hook_normalized' -> 3; None when the name holds no block index."""
    m = _LAYER_IN_HOOK.search(hook or "")
    return int(m.group(1)) if m else None


def as_tensor(value: Any, where: str, key: str) -> torch.Tensor:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TranscoderError(f"{where}: {key} is a {type(value).__name__}, not a numeric tensor")


def check_tensors(where: str, tensors: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """Check ranks, agreeing shapes and finiteness; return (d_in, d_sae, d_out)."""
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if key not in tensors:
            raise TranscoderError(f"{where}: missing key {key!r} (has {sorted(tensors)})")
    W_enc, W_dec = tensors["W_enc"], tensors["W_dec"]
    if W_enc.ndim != 2 or W_dec.ndim != 2:
        raise TranscoderError(
            f"{where}: W_enc and W_dec must be matrices, got shapes {tuple(W_enc.shape)} and {tuple(W_dec.shape)}"
        )
    d_in, d_sae = W_enc.shape
    d_out = W_dec.shape[1]
    expected = {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_out),
        "b_dec": (d_out,),
        "threshold": (d_sae,),
        "W_skip": (d_out, d_in),
    }
    for key, tensor in tensors.items():
        if tensor is None:
            continue
        if tuple(tensor.shape) != expected[key]:
            raise TranscoderError(
                f"{where}: {key} has shape {tuple(tensor.shape)}, expected {expected[key]} "
                f"(from W_enc [d_in={d_in}, d_sae={d_sae}] and W_dec [d_sae, d_out={d_out}])"
            )
        if not all_finite(tensor):
            raise TranscoderError(f"{where}: {key} holds NaN or infinite values")
    return int(d_in), int(d_sae), int(d_out)


def build_sae(
    where: str,
    *,
    W_enc,
    b_enc,
    W_dec,
    b_dec,
    threshold=None,
    W_skip=None,
    hook_in: str,
    hook_out: str,
    dtype: str = "float32",
    device: str = "cpu",
    extra_metadata: dict | None = None,
) -> Transcoder:
    """A SAELens transcoder holding exactly these tensors (cast to ``dtype``)."""
    import torch
    from sae_lens import (
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        SkipTranscoder,
        SkipTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    raw = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": threshold, "W_skip": W_skip}
    tensors = {k: as_tensor(v, where, k) for k, v in raw.items() if v is not None}
    d_in, d_sae, d_out = check_tensors(where, tensors)
    classes = {
        (False, False): (Transcoder, TranscoderConfig),
        (False, True): (SkipTranscoder, SkipTranscoderConfig),
        (True, False): (JumpReLUTranscoder, JumpReLUTranscoderConfig),
        (True, True): (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig),
    }
    sae_cls, cfg_cls = classes[("threshold" in tensors, "W_skip" in tensors)]
    metadata = SAEMetadata(hook_name=hook_in, hook_name_out=hook_out, **(extra_metadata or {}))
    # apply_b_dec_to_input must be False: b_dec is the *output* bias of a transcoder.
    cfg = cfg_cls(
        d_in=d_in, d_sae=d_sae, d_out=d_out, dtype=dtype, device="meta", apply_b_dec_to_input=False, metadata=metadata
    )
    sae = sae_cls(cfg)
    torch_dtype = getattr(torch, dtype)
    state = {k: t.to(device=device, dtype=torch_dtype).contiguous() for k, t in tensors.items()}
    sae.load_state_dict(state, assign=True)
    sae.cfg.device = device
    return sae.eval()


def build_layer(
    where: str,
    layer: int,
    *,
    hook_in: str | None = None,
    hook_out: str | None = None,
    format: str,
    uri: str,
    **tensors_and_options,
) -> LayerTranscoder:
    """``build_sae`` wrapped as a LayerTranscoder; hooks default to ln2.hook_normalized -> hook_mlp_out."""
    d_hook_in, d_hook_out = default_hooks(layer)
    hook_in, hook_out = hook_in or d_hook_in, hook_out or d_hook_out
    sae = build_sae(where, hook_in=hook_in, hook_out=hook_out, **tensors_and_options)
    return LayerTranscoder(layer=layer, sae=sae, hook_in=hook_in, hook_out=hook_out, format=format, uri=uri)
