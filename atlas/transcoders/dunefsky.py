"""The GPT-2 small transcoders of Dunefsky et al. (hub ``pchlenski/gpt2-transcoders``): torch
pickles ``final_sparse_autoencoder_gpt2-small_blocks.{l}.ln2.hook_normalized_24576.pt`` holding
``{"cfg": <sae_training config object>, "state_dict": {W_enc, b_enc, W_dec, b_dec, b_dec_out}}``.
docs/method.md §1.

1. Unpickle with a restricted unpickler: only tensor-rebuild functions, torch dtypes/devices,
   plain containers and numpy arrays are resolved; every other class (``sae_training.*``,
   anything else) becomes an inert ``PickledObject`` that records its arguments and state.
   Nothing named in the file is imported or called.
2. Take the state dict (``obj["state_dict"]``, or the object itself if it is one).
3. Fold the input centering into the encoder bias. The file's forward rule is
       z = (x - b_dec) W_enc + b_enc,   a = relu(z),   y = a W_dec + b_dec_out
   so with b_enc' = b_enc - b_dec W_enc (in float32 at least) the SAELens form
       z = x W_enc + b_enc',            y = a W_dec + b_dec_out
   is the same function (up to float rounding); SAELens' b_dec is the file's b_dec_out. (A config that says
   ``apply_b_dec_to_input = False`` has no centering: then no fold.)
4. Hooks: the config's ``hook_point`` / ``out_hook_point`` when present, else
   blocks.l.ln2.hook_normalized -> blocks.l.hook_mlp_out.
"""

from __future__ import annotations

import pickle
import re
import types
from typing import Any

from atlas.errors import TranscoderError
from atlas.transcoders.build import build_layer, layer_of_hook
from atlas.transcoders.source import Source
from atlas.transcoders.transcoder_set import LayerTranscoder, all_finite

NAME = "dunefsky"
DEFAULT_SET_NAME = "tres-dc"
FILE_RULE = "*blocks.{l}.ln2.hook_normalized*.pt"
_FILE = re.compile(r"(?:^|/)[^/]*blocks\.(\d+)\.ln2\.hook_normalized[^/]*\.pt$")


class PickledObject:
    """Stands in for a class the pickle names but atlas will not import (e.g. ``sae_training.*``)."""

    _pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):  # called when the pickle REDUCEs with the class itself
        self.__dict__["_args"] = args
        self.__dict__["_kwargs"] = kwargs

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<pickled {self._pickled_name}>"


_PLACEHOLDERS: dict[tuple[str, str], type] = {}


def _placeholder(module: str, name: str) -> type:
    key = (module, name)
    if key not in _PLACEHOLDERS:
        _PLACEHOLDERS[key] = type(name, (PickledObject,), {"_pickled_name": f"{module}.{name}"})
    return _PLACEHOLDERS[key]


def _allowed(module: str, name: str) -> Any | None:
    """The real object for the few globals a tensor pickle needs; None for everything else."""
    import collections

    import torch

    if module == "torch._utils" and name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    ):
        return getattr(torch._utils, name)
    if module == "torch" and (isinstance(getattr(torch, name, None), torch.dtype) or name in ("Size", "device")):
        return getattr(torch, name)
    if module == "collections" and name in ("OrderedDict", "defaultdict"):
        return getattr(collections, name)
    if module in ("builtins", "__builtin__") and name in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "int",
        "float",
        "str",
        "bytes",
        "bool",
        "complex",
    ):
        return getattr(__import__("builtins"), name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        import importlib

        return getattr(importlib.import_module(module), name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        import numpy as np

        return getattr(np, name)
    if module.startswith("numpy") and name.endswith("DType"):
        import numpy as np

        return getattr(np.dtypes, name, None)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _allowed(module, name)
        return found if found is not None else _placeholder(module, name)


def _restricted_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("atlas_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    return mod


def read_pickle(path) -> Any:
    """torch.load with the restricted unpickler; a file that is no torch pickle is a TranscoderError."""
    import torch

    try:
        # No mmap: weights must not alias a file that may be rewritten while they are in use.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())
    except Exception as exc:
        raise TranscoderError(
            f"{path}: not a readable torch pickle ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
        ) from exc


def discover(source: Source) -> dict[int, str]:
    return source.files_by_layer(_FILE)


def _config(cfg: Any) -> tuple[str | None, str | None, bool]:
    """(hook_point, out_hook_point, centre input?) from the pickled config object, where present."""
    state = cfg.__dict__ if isinstance(cfg, PickledObject) else cfg if isinstance(cfg, dict) else {}
    hook_in, hook_out = state.get("hook_point"), state.get("out_hook_point")
    centre = state.get("apply_b_dec_to_input", True) is not False
    return (hook_in if isinstance(hook_in, str) else None), (hook_out if isinstance(hook_out, str) else None), centre


def load_layer(source: Source, rel: str, layer: int, dtype: str = "float32") -> LayerTranscoder:
    import torch

    path = source.fetch(rel)
    obj = read_pickle(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise TranscoderError(
            f"{path}: holds a {type(obj).__name__}, not a dict with a 'state_dict' "
            f"(expected the Dunefsky et al. transcoder layout)"
        )
    for key in ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out"):
        if not isinstance(state.get(key), torch.Tensor):
            raise TranscoderError(
                f"{path}: state_dict has no tensor {key!r} (has {sorted(map(str, state))}); "
                f"expected W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d], b_dec_out [d]"
            )
    W_enc, b_enc, b_dec_in = state["W_enc"], state["b_enc"], state["b_dec"]
    if W_enc.ndim != 2 or tuple(b_dec_in.shape) != (W_enc.shape[0],):
        raise TranscoderError(
            f"{path}: input bias b_dec has shape {tuple(b_dec_in.shape)}, "
            f"expected ({W_enc.shape[0] if W_enc.ndim == 2 else 'd_in'},) to match W_enc "
            f"{tuple(W_enc.shape)}"
        )
    if not all_finite(b_dec_in):
        raise TranscoderError(f"{path}: b_dec holds NaN or infinite values")
    hook_in, hook_out, centre = _config(obj.get("cfg") if isinstance(obj, dict) else None)
    # The fold of step 3: b_enc' [F] = b_enc [F] - b_dec [d] @ W_enc [d, F], in float32 at least (as
    # precise as the file's own forward pass, which computes (x - b_dec) @ W_enc in its dtype).
    b_enc_folded = b_enc.float() - b_dec_in.float() @ W_enc.float() if centre else b_enc
    if layer_of_hook(hook_in) not in (None, layer):
        raise TranscoderError(f"{path}: its config reads {hook_in!r}, but the file name says layer {layer}")
    return build_layer(
        str(path),
        layer,
        hook_in=hook_in,
        hook_out=hook_out,
        format=NAME,
        uri=source.uri(rel),
        W_enc=W_enc,
        b_enc=b_enc_folded,
        W_dec=state["W_dec"],
        b_dec=state["b_dec_out"],
        dtype=dtype,
    )
