"""Feature-to-feature virtual weights from every earlier layer, for all features of a layer at once.

Implements docs/method.md §2.4: c = W_dec[l'] · f_enc for every l' < l, one value per upstream
feature; the reference keeps positive links with z > 4 inside the top-100 pool.

1. Effective weights per variant (``fold_read_norm``):
   - 'raw': W_dec[l'] [F_up, d] and W_enc[l] [d, F] as stored (the reference);
   - 'ln_centered': fold the linear part of the norm in front of the read hook: centre each
     W_dec row over d_model when the model uses LayerNorm (mean subtraction is linear), and scale
     W_enc's rows by the ln2 gain w when the transcoder reads ``ln2.hook_normalized`` or the MLP's
     input ``mlp.hook_in`` (after w).
     The 1/scale factor depends on the input and is not folded.
2. For each block of ``feature_block`` downstream features and each upstream layer l' (and block
   of ``upstream_block`` upstream features): Cᵀ = W_enc_blockᵀ @ W_dec[l']ᵀ -> [f_block, up_block],
   one matrix-matrix product, streamed into the downstream rows' top-k pool with global ids
   ``l' << 32 | j``; Σ|c| over all upstream features and layers is accumulated on the way.
   With ``edge_sign='absolute'`` the pool is over |c|; 'positive' (atlas) and 'top' (the reference)
   pool c itself, and 'positive' then keeps only outliers with c > 0.
3. ``scope='all_layers'``: one pool over the concatenation of all earlier layers;
   ``scope='per_layer'``: one pool (and z-score) per upstream layer. Never [F_up, F] at once.
"""

from __future__ import annotations

import torch

from atlas.lens.outliers import Selection, StreamingTopK

UP_SHIFT = 32


def fold_read_norm(
    model, layer: int, hook_in: str, W_enc: torch.Tensor, W_decs: dict[int, torch.Tensor], variant: str
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Effective (W_enc [d, F], {l': W_dec [F_up, d]}) for an edge variant."""
    if variant == "raw":
        return W_enc, W_decs
    if variant != "ln_centered":
        raise ValueError(f"unknown edge variant {variant!r}; use 'raw' or 'ln_centered'")
    if hook_in not in (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.mlp.hook_in"):
        return W_enc, W_decs  # no norm between the residual stream and the read point
    norm = getattr(model.blocks[layer], "ln2", None)
    if getattr(model.cfg, "normalization_type", None) in ("LN", "LNPre"):
        W_decs = {l: W - W.mean(dim=1, keepdim=True) for l, W in W_decs.items()}
    gain = getattr(norm, "w", None)
    if gain is not None:
        W_enc = gain.detach().to(W_enc.dtype).unsqueeze(1) * W_enc  # diag(w) @ W_enc
    return W_enc, W_decs


def edge_pools(
    W_enc: torch.Tensor,
    W_decs: dict[int, torch.Tensor],
    k: int,
    *,
    scope: str,
    sign: str,
    moments: bool,
    feature_block: int,
    upstream_block: int,
    dtype: torch.dtype,
    device: str,
    on_block=None,
) -> tuple[dict[int | None, StreamingTopK], torch.Tensor]:
    """Pools of c for every downstream feature. Returns ({l' or None: pool over all F rows},
    Σ|c| [F] over all upstream layers and features (float64, on CPU))."""
    if scope not in ("all_layers", "per_layer"):
        raise ValueError(f"unknown edge scope {scope!r}; use 'all_layers' or 'per_layer'")
    if sign not in ("positive", "top", "absolute"):
        raise ValueError(f"unknown edge sign {sign!r}; use 'positive', 'top' or 'absolute'")
    F = W_enc.shape[1]
    decs = {l: W.to(device=device, dtype=dtype) for l, W in sorted(W_decs.items())}  # [F_up, d]
    keys = [None] if scope == "all_layers" else list(decs)
    parts: dict = {key: [] for key in keys}
    abs_sums: list[torch.Tensor] = []  # Σ|c| [f_block] per feature block
    for f0 in range(0, F, feature_block):
        E = W_enc[:, f0 : f0 + feature_block].to(device=device, dtype=dtype).T.contiguous()  # [f_block, d]
        pools = {key: StreamingTopK(E.shape[0], k, device=device, moments=moments) for key in keys}
        for up_layer, D in decs.items():
            pool = pools[None if scope == "all_layers" else up_layer]
            for u0 in range(0, D.shape[0], upstream_block):
                C = E @ D[u0 : u0 + upstream_block].T  # [f_block, up_block]
                ids = (up_layer << UP_SHIFT) + torch.arange(u0, u0 + C.shape[1], device=device)
                pool.update(C.abs() if sign == "absolute" else C, ids)  # also accumulates Σ|c|
                del C
        for key in keys:
            parts[key].append(pools[key])
        zero = torch.zeros(E.shape[0], dtype=torch.float64, device=device)  # [f_block]: Σ|c| starts at 0
        abs_sums.append(sum((p.abs_sum for p in pools.values()), zero))
        if on_block is not None:
            on_block(E.shape[0])
    return {key: StreamingTopK.cat(p) for key, p in parts.items()}, torch.cat(abs_sums).cpu()


def select_edges(pools: dict, threshold: float, zmode: str, sign: str) -> Selection:
    """z-score outliers of every pool, merged; positive links only when sign='positive'."""
    sels = [p.select(threshold, zmode, positive_only=(sign == "positive")) for p in pools.values()]
    if len(sels) == 1:
        return sels[0]
    cat = {f: torch.cat([getattr(s, f) for s in sels]) for f in ("row", "col", "value", "z", "rank")}
    order = torch.argsort(-cat["value"], stable=True)  # strongest first ...
    order = order[torch.argsort(cat["row"][order], stable=True)]  # ... within each row
    return Selection(**{f: v[order] for f, v in cat.items()})


def exact_weights(
    W_enc: torch.Tensor,
    W_decs: dict[int, torch.Tensor],
    dst: torch.Tensor,
    up_layer: torch.Tensor,
    up_idx: torch.Tensor,
    chunk: int = 65536,
) -> torch.Tensor:
    """Signed c for selected (dst, upstream) pairs, in float64 on CPU: [n]."""
    out = torch.empty(len(dst), dtype=torch.float64)
    for l in up_layer.unique().tolist():
        m = (up_layer == l).nonzero(as_tuple=True)[0]
        for c0 in range(0, len(m), chunk):
            mm = m[c0 : c0 + chunk]
            a = W_decs[l][up_idx[mm].to(W_decs[l].device)].double()  # [n, d]
            b = W_enc[:, dst[mm].to(W_enc.device)].double().T  # [n, d]
            out[mm] = (a * b).sum(dim=1).cpu()
    return out
