"""Write one layer's transcoder in any of the published file formats, from tensors in that
format's own layout (the inverse of the loaders). Used by the test fixtures and the loading
benchmark to make real files, and usable to export a set for other tools.

Layouts (what ``tensors`` must hold):
- saelens:        W_enc [d_in, F], b_enc [F], W_dec [F, d_out], b_dec [d_out], optional threshold [F],
                  W_skip [d_out, d_in]  -> ``{root}/layer_{l}/cfg.json + sae_weights.safetensors``
- dunefsky:       W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d] (input centering), b_dec_out [d]
                  -> ``{root}/final_sparse_autoencoder_gpt2-small_blocks.{l}.ln2.hook_normalized_{F}.pt``
- gemmascope:     W_enc [d, F], W_dec [F, d], b_enc [F], b_dec [d], threshold [F]
                  -> ``{root}/layer_{l}/width_{F}/average_l0_{l0}/params.npz``
- circuit-tracer: W_enc [F, d] (transposed), W_dec [F, d], b_enc [F], b_dec [d], optional W_skip, threshold
                  -> ``{root}/layer_{l}.safetensors``
- gemmascope2:    w_enc [d_in, F], w_dec [F, d_out], b_enc [F], b_dec [d_out], threshold [F], optional
                  affine_skip_connection [d_in, d_out]; ``cfg`` = the config.json dict (None: none written)
                  -> ``{root}/layer_{l}_width_{F}_l0_small/params.safetensors (+ config.json)``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WRITABLE_FORMATS = ("saelens", "dunefsky", "gemmascope", "circuit-tracer", "gemmascope2")


def write_layer(
    fmt: str,
    root: str | Path,
    layer: int,
    tensors: dict,
    *,
    cfg: Any = None,
    average_l0: int = 50,
    hook_in: str | None = None,
    hook_out: str | None = None,
) -> Path:
    """Write ``tensors`` (torch, in ``fmt``'s layout) for ``layer`` under ``root``; return the path.
    ``cfg`` is the Dunefsky pickle's config object (default: a plain dict with its hooks)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "saelens":
        from atlas.transcoders.build import build_layer
        from atlas.transcoders.saelens_format import save_saelens

        tc = build_layer("writer", layer, hook_in=hook_in, hook_out=hook_out, format=fmt, uri="writer", **tensors)
        return save_saelens(tc, root / f"layer_{layer}")
    if fmt == "dunefsky":
        if cfg is None:
            cfg = {
                "hook_point": hook_in or f"blocks.{layer}.ln2.hook_normalized",
                "out_hook_point": hook_out or f"blocks.{layer}.hook_mlp_out",
            }
        path = (
            root
            / f"final_sparse_autoencoder_gpt2-small_blocks.{layer}.ln2.hook_normalized_{tensors['W_enc'].shape[1]}.pt"
        )
        torch.save({"cfg": cfg, "state_dict": dict(tensors)}, path)
        return path
    if fmt == "gemmascope":
        folder = root / f"layer_{layer}" / f"width_{tensors['W_enc'].shape[1]}" / f"average_l0_{average_l0}"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "params.npz", **{k: v.detach().cpu().numpy() for k, v in tensors.items()})
        return folder / "params.npz"
    if fmt == "circuit-tracer":
        path = root / f"layer_{layer}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path)
        return path
    if fmt == "gemmascope2":
        import json

        folder = root / f"layer_{layer}_width_{tensors['w_enc'].shape[1]}_l0_small"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, folder / "params.safetensors")
        if cfg is not None:
            (folder / "config.json").write_text(json.dumps(cfg))
        return folder / "params.safetensors"
    raise ValueError(f"cannot write transcoder format {fmt!r}; writable: {', '.join(WRITABLE_FORMATS)}")
