"""WeightLens for every feature of one transcoder layer at once: tokens, edges, description, flags.

Implements docs/method.md §2. For layer l with F features (all steps vectorized over features):

1. Input tokens: s = W_E · f_enc for all F features as blocked matrix products, streamed into
   top-``input_pool`` pools; keep z > ``input_z`` (projections.py, outliers.py). The bottom pool
   gives the negative input tokens (z < -``input_z``; stored, not validated).
2. Isolation check: run [prefix, t] once for every distinct candidate token of the layer up to layer l
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

Steps 5-6 follow the profile: the above is atlas's; ``profile='reference'`` replaces them with the
authors' rules (reference_description.py). docs/method.md §2 has the formulas.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import NamedTuple

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

    feat: np.ndarray  # [n] int64
    token: np.ndarray  # [n] int64
    d_sae: int
    strings: np.ndarray | None = None  # [n] object: the reference profile's description strings

    @property
    def offsets(self) -> np.ndarray:  # [d_sae + 1]
        return np.searchsorted(self.feat, np.arange(self.d_sae + 1))

    def lengths(self) -> np.ndarray:  # [d_sae]
        return np.diff(self.offsets)

    def lists(self) -> list[list[int]]:
        off = self.offsets
        return [self.token[off[i] : off[i + 1]].tolist() for i in range(self.d_sae)]


@dataclass
class LayerWeightLens:
    layer: int
    d_sae: int
    inputs: dict  # feat, token, rank, score, z, validated: arrays [n_in]
    negative_inputs: dict  # feat, token, rank, score (< 0), z (< 0): the bottom-pool input outliers
    promoted: dict  # feat, token, rank, score, z
    suppressed: dict
    edges: dict  # dst, src_layer, src_idx, weight, rel, z: arrays [n_edges]
    description: Ragged  # D(l, i): token ids
    validated: np.ndarray  # [d_sae] bool
    validation_soft: np.ndarray  # [d_sae] float64; atlas: NaN = nothing inherited; reference: 0.0 then
    n_input_tokens: np.ndarray  # [d_sae] validated input tokens
    n_upstream: np.ndarray  # [d_sae] kept links
    terms: list[list[str]]  # post-processed description per feature
    seconds: dict = field(default_factory=dict)  # stage -> seconds


def infer_family(model) -> str | None:
    """'gpt2', 'gemma' or 'llama' from the model's architecture and name, or None."""
    cfg = model.cfg
    names = f"{getattr(cfg, 'original_architecture', '') or ''} {getattr(cfg, 'model_name', '') or ''}".lower()
    for family, marks in (("gemma", ("gemma",)), ("llama", ("llama",)), ("gpt2", ("gpt2", "gpt-2"))):
        if any(m in names for m in marks):
            return family
    return None


def is_gpt2_family(model) -> bool:
    return infer_family(model) == "gpt2"


def resolve_family(cfg: WeightLensConfig, model) -> str | None:
    """The configured family, or the inferred one; the reference profile needs one."""
    from atlas.errors import AtlasError

    family = infer_family(model) if cfg.family == "auto" else cfg.family
    if family is None and cfg.profile == "reference":
        raise AtlasError(
            f"WeightLens profile='reference' needs the model family, which cannot be inferred from "
            f"{getattr(model.cfg, 'model_name', None)!r}; set family=gpt2, gemma or llama"
        )
    return family


def inherit_from(cfg: WeightLensConfig, model, layer_ids: list[int]) -> set[int]:
    """The upstream layers a description inherits from (step 5)."""
    mode = cfg.inherit_layers
    gpt2 = resolve_family(cfg, model) == "gpt2"
    if mode == "auto" and cfg.profile == "reference":
        return {0} & set(layer_ids) if gpt2 else set(layer_ids)  # the reference: literally layer 0
    if mode == "auto":
        mode = "layer0" if gpt2 else "all"
    if mode == "all":
        return set(layer_ids)
    if mode == "layer0":
        return {min(layer_ids)}
    raise ValueError(f"unknown inherit_layers {cfg.inherit_layers!r}; use 'auto', 'all' or 'layer0'")


def resolve_bos(cfg: WeightLensConfig, model) -> int:
    """The isolation check's prefix token (step 2)."""
    from atlas.lens.reference_description import REFERENCE_ISOLATION_PREFIX
    from atlas.models import bos_token_id

    if cfg.bos == "auto":
        return REFERENCE_ISOLATION_PREFIX if cfg.profile == "reference" else bos_token_id(model)
    return bos_token_id(model) if cfg.bos == "model" else int(cfg.bos)


def description_bos(cfg: WeightLensConfig, model) -> int | None:
    """The prefix of the description and validation sequences (steps 5-6); None = no prefix.
    atlas: the model's BOS; reference: by family (GPT-2 none, Gemma 2, Llama 128000)."""
    from atlas.lens.reference_description import FAMILY_BOS
    from atlas.models import bos_token_id

    if cfg.profile == "reference":
        family = resolve_family(cfg, model)
        assert family is not None  # resolve_family raises under the reference profile instead of giving None
        return FAMILY_BOS[family]
    return bos_token_id(model)


def _tokens_table(sel: Selection, negate: bool = False) -> dict:
    sign = -1.0 if negate else 1.0
    return dict(
        feat=sel.row.numpy(),
        token=sel.col.numpy(),
        rank=sel.rank.numpy(),
        score=sign * sel.value.numpy(),
        z=sign * sel.z.numpy(),
    )


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
    return [torch.tensor([bos, *desc.token[off[f] : off[f + 1]].tolist()]) for f in feats.tolist()]


def _blocks(cfg: WeightLensConfig, on_progress) -> dict:
    """The blocking, dtype and device keywords of ``stream_pools`` (steps 1 and 3)."""
    return dict(
        feature_block=cfg.feature_block,
        vocab_block=cfg.vocab_block,
        dtype=DTYPES[cfg.dtype],
        device=cfg.device,
        on_block=on_progress,
    )


class InputTokens(NamedTuple):
    """Step 1's result: the input-token outliers of every feature of the layer."""

    selection: Selection  # the top-pool outliers (z > input_z): rows = features, cols = tokens; validated in step 2
    negative: dict  # feat, token, rank, score (< 0), z (< 0): the bottom-pool outliers, stored, not validated
    abs_sum: torch.Tensor  # [F] Σ_v |s_v|, the input side of the relative contribution (step 4)


def input_tokens(model, W_enc: torch.Tensor, cfg: WeightLensConfig, on_progress=None) -> InputTokens:
    """Step 1: s = W_E · f_enc (W_enc [d, F], W_E [d_vocab, d]), top and bottom ``input_pool`` pools."""
    in_pool, in_bot = stream_pools(
        W_enc.T,
        model.W_E.detach().T,
        cfg.input_pool,
        bottom=True,
        moments=cfg.token_zmode == "full",
        track_abs=True,
        **_blocks(cfg, on_progress),
    )
    sel_in = in_pool.select(cfg.input_z, cfg.token_zmode)
    negative = _tokens_table(in_bot.select(cfg.input_z, cfg.token_zmode), negate=True)
    return InputTokens(sel_in, negative, in_pool.abs_sum.cpu())


class OutputTokens(NamedTuple):
    """Step 3's result: the output-token outliers of every feature of the layer (not validated)."""

    promoted: dict  # feat, token, rank, score, z: the top pool, z > output_z
    suppressed: dict  # feat, token, rank, score (< 0), z (< 0): the bottom pool


def output_tokens(model, W_dec: torch.Tensor, cfg: WeightLensConfig, on_progress=None) -> OutputTokens:
    """Step 3: u = f_dec · W_U (W_dec [F, d], W_U [d, d_vocab]), top and bottom ``output_pool`` pools."""
    top, bot = stream_pools(
        W_dec,
        model.W_U.detach(),
        cfg.output_pool,
        bottom=True,
        moments=cfg.token_zmode == "full",
        **_blocks(cfg, on_progress),
    )
    promoted = _tokens_table(top.select(cfg.output_z, cfg.token_zmode))
    suppressed = _tokens_table(bot.select(cfg.output_z, cfg.token_zmode), negate=True)
    return OutputTokens(promoted, suppressed)


def _no_edges() -> dict:
    return dict(
        dst=np.zeros(0, np.int64),
        src_layer=np.zeros(0, np.int64),
        src_idx=np.zeros(0, np.int64),
        weight=np.zeros(0),
        rel=np.zeros(0),
        z=np.zeros(0),
    )


def virtual_weights(
    model, tset, layer: int, W_enc: torch.Tensor, abs_s: torch.Tensor, cfg: WeightLensConfig, on_progress=None
) -> dict:
    """Step 4: the kept links from every earlier layer of the set -> dst, src_layer, src_idx, weight, rel, z:
    arrays [n_edges] (the ``edges`` of LayerWeightLens); W_enc [d, F], abs_s [F] from step 1."""
    tc = tset[layer]
    ups = [l for l in tset.layer_ids if l < layer]
    if not ups:
        if on_progress is not None:
            on_progress(tc.d_sae)  # no earlier layer
        return _no_edges()
    W_enc_eff, W_decs = fold_read_norm(
        model, layer, tc.hook_in, W_enc, tset.upstream_decoders(layer, ups), cfg.edge_variant
    )
    pools, abs_c = edge_pools(
        W_enc_eff,
        W_decs,
        cfg.edge_pool,
        scope=cfg.scope,
        sign=cfg.sign,
        moments=cfg.edge_zmode == "full",
        feature_block=cfg.feature_block,
        upstream_block=cfg.upstream_block,
        dtype=DTYPES[cfg.dtype],
        device=cfg.device,
        on_block=on_progress,
    )
    sel = select_edges(pools, cfg.edge_z, cfg.edge_zmode, cfg.sign)
    src_layer, src_idx = sel.col >> UP_SHIFT, sel.col & ((1 << UP_SHIFT) - 1)
    w = exact_weights(W_enc_eff, W_decs, sel.row, src_layer, src_idx)
    rel = w.abs() / (abs_s[sel.row] + abs_c[sel.row])  # [n_edges]
    return dict(
        dst=sel.row.numpy(),
        src_layer=src_layer.numpy(),
        src_idx=src_idx.numpy(),
        weight=w.numpy(),
        rel=rel.numpy(),
        z=sel.z.numpy(),
    )


class Description(NamedTuple):
    """Steps 2, 5 and 6's result: the validated input tokens, D(l, i) and its flags."""

    inputs: dict  # feat, token, rank, score, z, validated: arrays [n_in], the input tokens of step 1
    description: Ragged  # D(l, i): token ids (and the reference profile's strings)
    validated: np.ndarray  # [F] bool
    validation_soft: np.ndarray  # [F] float64; atlas: NaN = nothing inherited; reference: 0.0 then


def describe_layer(
    model,
    tset,
    layer: int,
    cfg: WeightLensConfig,
    prefixes: tuple[int, int | None],
    sel_in: Selection,
    edges: dict,
    descriptions: dict[int, Ragged],
) -> Description:
    """Step 2 (isolation check of ``sel_in``), then steps 5-6 by the profile; ``prefixes`` = (isolation
    prefix, description prefix)."""
    tc = tset[layer]
    bos, dbos = prefixes
    valid_in = isolation_check(model, tc, layer, bos, sel_in.row, sel_in.col, cfg.forward_batch_tokens)
    inputs = _tokens_table(sel_in)
    inputs["validated"] = valid_in
    keep = valid_in
    allowed = inherit_from(cfg, model, tset.layer_ids)
    if cfg.profile == "reference":
        from atlas.lens.reference_description import describe_reference

        ref = describe_reference(
            model,
            tc,
            layer,
            dbos,
            (inputs["feat"][keep], inputs["token"][keep]),
            edges,
            descriptions,
            allowed,
            cfg.forward_batch_tokens,
        )
        desc = Ragged(ref.feat, ref.token, tc.d_sae, strings=ref.strings)
        return Description(inputs, desc, ref.validated, ref.validation_soft)
    assert dbos is not None  # description_bos gives None (no prefix) only under the reference profile
    inherited = inherit(model, tc, layer, dbos, edges, descriptions, allowed, cfg.forward_batch_tokens)
    df = np.concatenate([inputs["feat"][keep], inherited.feat])
    dt = np.concatenate([inputs["token"][keep], inherited.token])
    do = np.concatenate([inputs["rank"][keep].astype(np.int64), inherited.order])  # inputs first, by rank
    k = first_occurrences(df, dt, do)
    desc = Ragged(df[k].astype(np.int64), dt[k].astype(np.int64), tc.d_sae)
    validated = validate(model, tc, layer, dbos, desc, cfg.forward_batch_tokens)
    return Description(inputs, desc, validated, inherited.soft)


def description_terms(model, desc: Ragged, cfg: WeightLensConfig) -> list[list[str]]:
    """Step 7: the post-processed terms of D(l, i) for every feature i ([] when D is empty)."""
    from atlas.models import token_strings

    off = desc.offsets
    if desc.strings is not None:  # the reference: its own strings
        texts = desc.strings.tolist()
    else:
        strings = dict(zip(np.unique(desc.token).tolist(), token_strings(model, np.unique(desc.token))))
        texts = [strings[t] for t in desc.token.tolist()]
    return [
        postprocess(texts[off[i] : off[i + 1]], cfg.dedup_word_ratio, cfg.dedup_punct_ratio)
        if off[i + 1] > off[i]
        else []
        for i in range(desc.d_sae)
    ]


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Records the seconds the block takes as ``seconds[stage]``."""
    t0 = perf_counter()
    yield
    seconds[stage] = perf_counter() - t0


def weightlens_layer(
    model, tset, layer: int, cfg: WeightLensConfig, descriptions: dict[int, Ragged], on_progress=None
) -> LayerWeightLens:
    """WeightLens for every feature of ``layer``; ``descriptions`` holds D for earlier layers."""
    tc = tset[layer]
    F = tc.d_sae
    prefixes = resolve_bos(cfg, model), description_bos(cfg, model)  # isolation (step 2), description (5-6)
    seconds: dict[str, float] = {}
    W_enc, W_dec = tc.W_enc.detach(), tc.W_dec.detach()  # [d, F], [F, d]

    with _timed(seconds, "input_projections"):  # 1. input tokens
        ins = input_tokens(model, W_enc, cfg, on_progress)
    with _timed(seconds, "output_projections"):  # 3. output tokens
        outs = output_tokens(model, W_dec, cfg, on_progress)
    with _timed(seconds, "virtual_weights"):  # 4. virtual weights
        edges = virtual_weights(model, tset, layer, W_enc, ins.abs_sum, cfg, on_progress)
    with _timed(seconds, "validation"):  # 2. isolation check, 5. recursive description, 6. flags
        d = describe_layer(model, tset, layer, cfg, prefixes, ins.selection, edges, descriptions)
    with _timed(seconds, "postprocess"):  # 7. post-processing
        terms = description_terms(model, d.description, cfg)

    return LayerWeightLens(
        layer=layer,
        d_sae=F,
        inputs=d.inputs,
        negative_inputs=ins.negative,
        promoted=outs.promoted,
        suppressed=outs.suppressed,
        edges=edges,
        description=d.description,
        validated=d.validated,
        validation_soft=d.validation_soft,
        n_input_tokens=np.bincount(d.inputs["feat"][d.inputs["validated"]], minlength=F),
        n_upstream=np.bincount(edges["dst"], minlength=F),
        terms=terms,
        seconds=seconds,
    )


def _upstream_seqs(bos: int, descriptions: dict[int, Ragged], keys: np.ndarray) -> list[torch.Tensor]:
    """[BOS] + D(l', j) for global upstream keys (l' << 32 | j)."""
    out = []
    offs = {l: d.offsets for l, d in descriptions.items()}
    for k in keys.tolist():
        l, j = k >> UP_SHIFT, k & ((1 << UP_SHIFT) - 1)
        out.append(torch.tensor([bos, *descriptions[l].token[offs[l][j] : offs[l][j + 1]].tolist()]))
    return out


def isolation_check(
    model, tc, layer: int, bos: int, feat: torch.Tensor, tok: torch.Tensor, batch_tokens: int
) -> np.ndarray:
    """Step 2: does feature feat[n] fire on [BOS, tok[n]]? Each distinct token runs once. -> bool [n]"""
    uniq, inv = torch.unique(tok, return_inverse=True)
    xs = torch.empty(len(uniq), tc.d_in, dtype=model.cfg.dtype, device=model.cfg.device)  # [n_tok, d_in]
    for idx, x, _, _ in padded_runs(
        model, [torch.tensor([bos, t]) for t in uniq.tolist()], tc.hook_in, layer, batch_tokens
    ):
        xs[idx.to(xs.device)] = x[:, 1]
    out = torch.zeros(len(feat), dtype=torch.bool)
    for c0 in range(0, len(feat), batch_tokens):  # bounded [chunk, d_in]
        f, rows = feat[c0 : c0 + batch_tokens], inv[c0 : c0 + batch_tokens]
        out[c0 : c0 + len(f)] = active(tc, pre_activation_pairs(tc, xs[rows.to(xs.device)], f), f).cpu()
    return out.numpy()


class Inherited(NamedTuple):
    """Step 5's result: the distinct (feature, token) pairs that fired, first occurrence each."""

    feat: np.ndarray  # [n] int64 the downstream feature i of layer l
    token: np.ndarray  # [n] int64 a token of [BOS] + D(l', j) at which i fired
    order: np.ndarray  # [n] int64 its place in D(l, i): after every input token, by link then position
    soft: np.ndarray  # [F] float64 validation_soft: share of the distinct offered tokens that fired (NaN: none)


def inherit(
    model, tc, layer: int, bos: int, edges: dict, descriptions: dict[int, Ragged], allowed: set[int], batch_tokens: int
) -> Inherited:
    """Step 5: tokens of [BOS] + D(l', j) at which the linked feature fires, for every kept link from an
    allowed layer."""
    F = tc.d_sae
    none = np.zeros(0, np.int64)
    link = np.nonzero(np.isin(edges["src_layer"], list(allowed)))[0]  # edge rows
    dlen = np.zeros(len(link), dtype=np.int64)  # len D(l', j)
    for l in np.unique(edges["src_layer"][link]).tolist():
        if l not in descriptions:
            raise ValueError(f"layer {layer} inherits from layer {l}, whose descriptions were not computed first")
        m = edges["src_layer"][link] == l
        dlen[m] = descriptions[l].lengths()[edges["src_idx"][link][m]]
    link = link[dlen > 0]
    if not len(link):
        return Inherited(none, none, none, np.full(F, np.nan))
    ukey, l_u = np.unique((edges["src_layer"][link] << UP_SHIFT) + edges["src_idx"][link], return_inverse=True)
    seqs = _upstream_seqs(bos, descriptions, ukey)  # one run per upstream
    cand_f, cand_t, cand_on, cand_order = [], [], [], []
    for idx, x, lens, btoks in padded_runs(model, seqs, tc.hook_in, layer, batch_tokens):
        slot = torch.full((len(ukey),), -1, dtype=torch.long)
        slot[idx] = torch.arange(len(idx))
        in_batch = np.nonzero(slot[l_u].numpy() >= 0)[0]  # links to this batch
        chunk = max(batch_tokens // x.shape[1], 1)
        for c0 in range(0, len(in_batch), chunk):
            ls = in_batch[c0 : c0 + chunk]
            rows, dst = slot[l_u[ls]], torch.from_numpy(edges["dst"][link[ls]])
            on = active(tc, pre_activation_pairs(tc, x[rows.to(x.device)], dst), dst).cpu()  # [n, T]
            pos = torch.arange(x.shape[1])
            r, t = ((pos >= 1) & (pos < lens[rows].unsqueeze(1))).nonzero(as_tuple=True)  # real positions
            cand_f.append(dst[r].numpy())
            cand_t.append(btoks[rows][r, t].numpy())
            cand_on.append(on[r, t].numpy())
            cand_order.append(((1 << 40) + torch.from_numpy(link[ls])[r] * (1 << 20) + t).numpy())  # after inputs
    cf, ct, fired, order = (np.concatenate(c) for c in (cand_f, cand_t, cand_on, cand_order))
    n_cand = np.bincount(cf[first_occurrences(cf, ct, order)], minlength=F)  # distinct offered
    fi = np.nonzero(fired)[0]
    uf = fi[first_occurrences(cf[fi], ct[fi], order[fi])]  # distinct fired
    soft = np.where(n_cand > 0, np.bincount(cf[uf], minlength=F) / np.maximum(n_cand, 1), np.nan)
    return Inherited(cf[uf], ct[uf], order[uf], soft)


def validate(model, tc, layer: int, bos: int, desc: Ragged, batch_tokens: int) -> np.ndarray:
    """Step 6: does [BOS] + D(l, i) activate (l, i) at some description token? -> bool [F]"""
    validated = np.zeros(tc.d_sae, dtype=bool)
    has = np.nonzero(desc.lengths() > 0)[0]
    for idx, x, lens, _ in padded_runs(model, _seqs(bos, desc, has), tc.hook_in, layer, batch_tokens):
        f = torch.from_numpy(has[idx.numpy()])
        on = active(tc, pre_activation_pairs(tc, x, f), f).cpu()  # [b, T]
        pos = torch.arange(x.shape[1])
        validated[f.numpy()] = (on & (pos >= 1) & (pos < lens.unsqueeze(1))).any(dim=1).numpy()
    return validated
