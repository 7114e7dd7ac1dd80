"""Gemma Scope transcoders (hub ``google/gemma-scope-2b-pt-transcoders``): one
``layer_{l}/width_{W}/average_l0_{N}/params.npz`` per layer and sparsity, keys
W_enc [d, F], W_dec [F, d], b_enc [F], b_dec [d], threshold [F]. docs/method.md §1.

1. Discover ``layer_{l}/width_*/average_l0_*/params.npz``. Where a layer has several, choose
   deterministically: the narrowest width, then the average L0 closest to 100 (Gemma Scope's own
   rule for its "canonical" SAEs), the smaller L0 on a tie.
2. Read the npz (``allow_pickle=False``: an npz holding objects is refused).
3. JumpReLU: z = x W_enc + b_enc, a = z · 1[z > threshold], y = a W_dec + b_dec
   -> SAELens ``JumpReLUTranscoder`` (it computes relu(z) · 1[z > threshold], the same for the
   non-negative thresholds Gemma Scope ships). Hooks ln2.hook_normalized -> hook_mlp_out.
"""

from __future__ import annotations

import re
import zipfile

from atlas.errors import TranscoderError
from atlas.transcoders.build import build_layer
from atlas.transcoders.source import Source
from atlas.transcoders.transcoder_set import LayerTranscoder

NAME = "gemmascope"
DEFAULT_SET_NAME = "gemmascope-transcoder"
FILE_RULE = "layer_{l}/width_*/average_l0_*/params.npz"
KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
_FILE = re.compile(r"(?:^|/)layer_(\d+)/width_(\d+)(k|m)?/average_l0_(\d+)/params\.npz$")
TARGET_L0 = 100


def _choice_key(m: re.Match) -> tuple:
    width = int(m.group(2)) * {"k": 1024, "m": 1024**2, None: 1}[m.group(3)]
    l0 = int(m.group(4))
    return (width, abs(l0 - TARGET_L0), l0)


def discover(source: Source) -> dict[int, str]:
    return source.files_by_layer(_FILE, prefer=_choice_key)


def load_layer(source: Source, rel: str, layer: int, dtype: str = "float32") -> LayerTranscoder:
    import numpy as np

    path = source.fetch(rel)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise TranscoderError(
                    f"{path}: missing key(s) {missing} (has {sorted(npz.files)}); Gemma Scope "
                    f"params.npz holds W_enc [d, F], W_dec [F, d], b_enc [F], b_dec [d], threshold [F]"
                )
            arrays = {k: npz[k] for k in KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise TranscoderError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    return build_layer(str(path), layer, format=NAME, uri=source.uri(rel), dtype=dtype, **arrays)
