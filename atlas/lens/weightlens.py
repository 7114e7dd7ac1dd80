"""WeightLens for every feature of one transcoder layer at once: tokens, edges, description, flags.

Implements science.md §2. For layer l with F features (all steps vectorized over features):

1. Input tokens: s = W_E · f_enc for all F features as blocked matrix products, streamed into
   top-``input_pool`` pools; keep z > ``input_z`` (projections.py, outliers.py).
2. Isolation check: run [BOS, t] once for every distinct candidate token of the layer up to layer l
   (batched, firing.py); a candidate (i, t) is validated when feature i is active at t.
3. Output tokens: u = f_dec · W_U, top and bottom ``output_pool`` pools, same rule (promoted /
   suppressed; not validated).
4. Virtual weights from every earlier layer of the set (virtual_weights.py): pools, z > ``edge_z``,
   positive links; exact float64 weights of the kept links; relative contribution
   |c| / (Σ_v |s_v| + Σ_{l',j} |c_{l'j}|).
5. Recursive description: D(l, i) = validated input tokens, then, for each kept link (l', j) from an
   inheritable layer (``inherit_layers``) whose D(l', j) is non-empty (earlier layers are computed
   first), run [BOS] + D(l', j) up to layer l and add the tokens at which (l, i) fires. Each
   upstream sequence runs once, however many features link to it.
6. Flags: ``validated`` = [BOS] + D(l, i) run as one sequence activates (l, i) at some description
   token; ``validation_soft`` = share of the distinct inherited candidate tokens that fired (NaN
   when nothing was inherited).
7. Post-processing of D(l, i) into terms (postprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
import torch

from atlas.config import WeightLensConfig
from atlas.lens.firing import active, padded_runs, pre_activation_pairs
from atlas.lens.outliers import Selection
from atlas.lens.postprocess import postprocess
from atlas.lens.projections import stream_pools
from atlas.lens.virtual_weights import UP_SHIFT, edge_pools, exact_weights, fold_read_norm, select_edges

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class Ragged:
    """Per-feature token lists, flattened: feat ascending, list order kept within a feature."""

    feat: np.ndarray    # [n] int64
    token: np.ndarray   # [n] int64
    d_sae: int

    @property
    def offsets(self) -> np.ndarray:                 # [d_sae + 1]
        return np.searchsorted(self.feat, np.arange(self.d_sae + 1))

    def lengths(self) -> np.ndarray:                 # [d_sae]
        return np.diff(self.offsets)

    def lists(self) -> list[list[int]]:
        off = self.offsets
        return [self.token[off[i]:off[i + 1]].tolist() for i in range(self.d_sae)]


@dataclass
class LayerWeightLens:
    layer: int
    d_sae: int
    inputs: dict            # feat, token, rank, score, z, validated: arrays [n_in]
    promoted: dict          # feat, token, rank, score, z
    suppressed: dict
    edges: dict             # dst, src_layer, src_idx, weight, rel, z: arrays [n_edges]
    description: Ragged     # D(l, i): token ids
    validated: np.ndarray   # [d_sae] bool
    validation_soft: np.ndarray  # [d_sae] float64, NaN = nothing inherited
    n_input_tokens: np.ndarray   # [d_sae] validated input tokens
    n_upstream: np.ndarray       # [d_sae] kept links
    terms: list[list[str]]       # post-processed description per feature
    seconds: dict = field(default_factory=dict)   # stage -> seconds


def is_gpt2_family(model) -> bool:
    cfg = model.cfg
    names = f"{getattr(cfg, 'original_architecture', '') or ''} {getattr(cfg, 'model_name', '') or ''}".lower()
    return "gpt2" in names or "gpt-2" in names


def inherit_from(cfg: WeightLensConfig, model, layer_ids: list[int]) -> set[int]:
    """The upstream layers a description inherits from (step 5)."""
    mode = cfg.inherit_layers
    if mode == "auto":
        mode = "layer0" if is_gpt2_family(model) else "all"
    if mode == "all":
        return set(layer_ids)
    if mode == "layer0":
        return {min(layer_ids)}
    raise ValueError(f"unknown inherit_layers {cfg.inherit_layers!r}; use 'auto', 'all' or 'layer0'")


def resolve_bos(cfg: WeightLensConfig, model) -> int:
    from atlas.models import bos_token_id

    return bos_token_id(model) if cfg.bos == "model" else int(cfg.bos)


def _tokens_table(sel: Selection, negate: bool = False) -> dict:
    sign = -1.0 if negate else 1.0
    return dict(feat=sel.row.numpy(), token=sel.col.numpy(), rank=sel.rank.numpy(),
                score=sign * sel.value.numpy(), z=sign * sel.z.numpy())


def first_occurrences(feat: np.ndarray, token: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Indices of the first (lowest order) occurrence of each (feat, token), sorted by (feat, order)."""
    if len(feat) == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.lexsort((order, token, feat))
    f, t = feat[idx], token[idx]
    first = np.ones(len(idx), dtype=bool)
    first[1:] = (f[1:] != f[:-1]) | (t[1:] != t[:-1])
    keep = idx[first]
    return keep[np.lexsort((order[keep], feat[keep]))]


def _seqs(bos: int, desc: Ragged, feats: np.ndarray) -> list[torch.Tensor]:
    off = desc.offsets
    return [torch.tensor([bos, *desc.token[off[f]:off[f + 1]].tolist()]) for f in feats.tolist()]


def weightlens_layer(model, tset, layer: int, cfg: WeightLensConfig, descriptions: dict[int, Ragged],
                     on_progress=None) -> LayerWeightLens:
    """WeightLens for every feature of ``layer``; ``descriptions`` holds D for earlier layers."""
    tc = tset[layer]
    F, dtype, dev = tc.d_sae, DTYPES[cfg.dtype], cfg.device
    bos = resolve_bos(cfg, model)
    seconds: dict[str, float] = {}
    blocks = dict(feature_block=cfg.feature_block, vocab_block=cfg.vocab_block, dtype=dtype, device=dev,
                  on_block=on_progress)
    full = cfg.token_zmode == "full"
    W_enc, W_dec = tc.W_enc.detach(), tc.W_dec.detach()                  # [d, F], [F, d]

    # 1. input tokens
    t0 = perf_counter()
    in_pool, _ = stream_pools(W_enc.T, model.W_E.detach().T, cfg.input_pool, moments=full, **blocks)
    sel_in = in_pool.select(cfg.input_z, cfg.token_zmode)
    abs_s = in_pool.abs_sum.cpu()                                        # Σ_v |s_v|  [F]
    seconds["input_projections"] = perf_counter() - t0

    # 3. output tokens
    t0 = perf_counter()
    top, bot = stream_pools(W_dec, model.W_U.detach(), cfg.output_pool, bottom=True, moments=full, **blocks)
    promoted = _tokens_table(top.select(cfg.output_z, cfg.token_zmode))
    suppressed = _tokens_table(bot.select(cfg.output_z, cfg.token_zmode), negate=True)
    seconds["output_projections"] = perf_counter() - t0

    # 4. virtual weights
    t0 = perf_counter()
    ups = [l for l in tset.layer_ids if l < layer]
    edges = dict(dst=np.zeros(0, np.int64), src_layer=np.zeros(0, np.int64), src_idx=np.zeros(0, np.int64),
                 weight=np.zeros(0), rel=np.zeros(0), z=np.zeros(0))
    if ups:
        W_enc_eff, W_decs = fold_read_norm(model, layer, tc.hook_in, W_enc, {l: tset[l].W_dec.detach() for l in ups},
                                           cfg.edge_variant)
        pools, abs_c = edge_pools(W_enc_eff, W_decs, cfg.edge_pool, scope=cfg.edge_scope, sign=cfg.edge_sign,
                                  moments=cfg.edge_zmode == "full", feature_block=cfg.feature_block,
                                  upstream_block=cfg.upstream_block, dtype=dtype, device=dev, on_block=on_progress)
        sel = select_edges(pools, cfg.edge_z, cfg.edge_zmode, cfg.edge_sign)
        src_layer, src_idx = sel.col >> UP_SHIFT, sel.col & ((1 << UP_SHIFT) - 1)
        w = exact_weights(W_enc_eff, W_decs, sel.row, src_layer, src_idx)
        rel = w.abs() / (abs_s[sel.row] + abs_c[sel.row])
        edges = dict(dst=sel.row.numpy(), src_layer=src_layer.numpy(), src_idx=src_idx.numpy(), weight=w.numpy(),
                     rel=rel.numpy(), z=sel.z.numpy())
    elif on_progress is not None:
        on_progress(F)                                                           # no earlier layer
    seconds["virtual_weights"] = perf_counter() - t0

    # 2. isolation check: [BOS, t] for every distinct candidate token, once
    t0 = perf_counter()
    feat_in, tok_in = sel_in.row, sel_in.col
    uniq, inv = torch.unique(tok_in, return_inverse=True)
    xs = torch.empty(len(uniq), tc.d_in, dtype=model.cfg.dtype, device=model.cfg.device)   # [n_tok, d_in]
    for idx, x, _, _ in padded_runs(model, [torch.tensor([bos, t]) for t in uniq.tolist()], tc.hook_in, layer,
                                 cfg.forward_batch_tokens):
        xs[idx.to(xs.device)] = x[:, 1]
    valid_in = torch.zeros(len(feat_in), dtype=torch.bool)
    for c0 in range(0, len(feat_in), cfg.forward_batch_tokens):                  # bounded [chunk, d_in]
        f, rows = feat_in[c0:c0 + cfg.forward_batch_tokens], inv[c0:c0 + cfg.forward_batch_tokens]
        valid_in[c0:c0 + len(f)] = active(tc, pre_activation_pairs(tc, xs[rows.to(xs.device)], f), f).cpu()
    inputs = _tokens_table(sel_in)
    inputs["validated"] = valid_in.numpy()

    # 5. recursive description
    keep = valid_in.numpy()
    d_feat, d_tok, d_order = [inputs["feat"][keep]], [inputs["token"][keep]], [inputs["rank"][keep].astype(np.int64)]
    soft = np.full(F, np.nan)
    allowed = inherit_from(cfg, model, tset.layer_ids)
    link = np.nonzero(np.isin(edges["src_layer"], list(allowed)))[0]               # edge rows
    dlen = np.zeros(len(link), dtype=np.int64)                                         # len D(l', j)
    for l in np.unique(edges["src_layer"][link]).tolist():
        if l not in descriptions:
            raise ValueError(f"layer {layer} inherits from layer {l}, whose descriptions were not computed first")
        m = edges["src_layer"][link] == l
        dlen[m] = descriptions[l].lengths()[edges["src_idx"][link][m]]
    link = link[dlen > 0]
    if len(link):
        ukey, l_u = np.unique((edges["src_layer"][link] << UP_SHIFT) + edges["src_idx"][link], return_inverse=True)
        seqs = _upstream_seqs(bos, descriptions, ukey)
        cand_f, cand_t, fired = [], [], []
        for idx, x, lens, btoks in padded_runs(model, seqs, tc.hook_in, layer, cfg.forward_batch_tokens):
            slot = torch.full((len(ukey),), -1, dtype=torch.long)
            slot[idx] = torch.arange(len(idx))
            sel_links = np.nonzero(slot[l_u].numpy() >= 0)[0]           # links whose upstream is in this batch
            for c0 in range(0, len(sel_links), max(cfg.forward_batch_tokens // max(x.shape[1], 1), 1)):
                ls = sel_links[c0:c0 + max(cfg.forward_batch_tokens // max(x.shape[1], 1), 1)]
                rows = slot[l_u[ls]]
                dst = torch.from_numpy(edges["dst"][link[ls]])
                on = active(tc, pre_activation_pairs(tc, x[rows.to(x.device)], dst), dst).cpu()   # [n, T]
                T = x.shape[1]
                pos = torch.arange(T)
                real = (pos >= 1) & (pos < lens[rows].unsqueeze(1))                            # [n, T]
                toks = btoks[rows]                                                             # [n, T]
                r, t = real.nonzero(as_tuple=True)
                order = (1 << 40) + torch.from_numpy(link[ls])[r] * (1 << 20) + t
                cand_f.append(dst[r].numpy()), cand_t.append(toks[r, t].numpy())
                fired.append((on[r, t].numpy(), order.numpy()))
        cf, ct = np.concatenate(cand_f), np.concatenate(cand_t)
        on_all = np.concatenate([f[0] for f in fired])
        order_all = np.concatenate([f[1] for f in fired])
        uc = first_occurrences(cf, ct, order_all)                                               # distinct candidates
        n_cand = np.bincount(cf[uc], minlength=F)
        fi = np.nonzero(on_all)[0]
        uf = fi[first_occurrences(cf[fi], ct[fi], order_all[fi])]
        n_fired = np.bincount(cf[uf], minlength=F)
        soft = np.where(n_cand > 0, n_fired / np.maximum(n_cand, 1), np.nan)
        d_feat.append(cf[uf]), d_tok.append(ct[uf]), d_order.append(order_all[uf])
    df, dt, do = np.concatenate(d_feat), np.concatenate(d_tok), np.concatenate(d_order)
    k = first_occurrences(df, dt, do)
    desc = Ragged(df[k].astype(np.int64), dt[k].astype(np.int64), F)

    # 6. validated: [BOS] + D(l, i) as one sequence
    validated = np.zeros(F, dtype=bool)
    has = np.nonzero(desc.lengths() > 0)[0]
    for idx, x, lens, _ in padded_runs(model, _seqs(bos, desc, has), tc.hook_in, layer, cfg.forward_batch_tokens):
        f = torch.from_numpy(has[idx.numpy()])
        on = active(tc, pre_activation_pairs(tc, x, f), f).cpu()                               # [b, T]
        pos = torch.arange(x.shape[1])
        validated[f.numpy()] = (on & (pos >= 1) & (pos < lens.unsqueeze(1))).any(dim=1).numpy()
    seconds["validation"] = perf_counter() - t0

    # 7. post-processing
    t0 = perf_counter()
    from atlas.models import token_strings

    off = desc.offsets
    strings = dict(zip(np.unique(desc.token).tolist(), token_strings(model, np.unique(desc.token))))
    terms = [postprocess([strings[t] for t in desc.token[off[i]:off[i + 1]].tolist()], cfg.dedup_word_ratio,
                         cfg.dedup_punct_ratio) if off[i + 1] > off[i] else [] for i in range(F)]
    seconds["postprocess"] = perf_counter() - t0

    return LayerWeightLens(
        layer=layer, d_sae=F, inputs=inputs, promoted=promoted, suppressed=suppressed, edges=edges,
        description=desc, validated=validated, validation_soft=soft,
        n_input_tokens=np.bincount(inputs["feat"][keep], minlength=F),
        n_upstream=np.bincount(edges["dst"], minlength=F), terms=terms, seconds=seconds)


def _upstream_seqs(bos: int, descriptions: dict[int, Ragged], keys: np.ndarray) -> list[torch.Tensor]:
    """[BOS] + D(l', j) for global upstream keys (l' << 32 | j)."""
    out = []
    offs = {l: d.offsets for l, d in descriptions.items()}
    for k in keys.tolist():
        l, j = k >> UP_SHIFT, k & ((1 << UP_SHIFT) - 1)
        out.append(torch.tensor([bos, *descriptions[l].token[offs[l][j]:offs[l][j + 1]].tolist()]))
    return out
