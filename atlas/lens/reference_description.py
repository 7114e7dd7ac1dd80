"""The reference profile's description and validation (WeightLens steps 5 and 6), as the authors' code does them.

docs/method.md §2.5-§2.6 gives the method; docs/weightlens.md ("The two profiles") lists where this
differs from atlas's own description step and why. Everything before (tokens, isolation check,
edges) is shared with the atlas profile; only the rules below differ. For layer l, all features:

1. Own tokens: the *strings* (``tokenizer.decode``) of the validated input candidates, pool order.
2. Links: the kept edges (l', j) of each feature in the reference's order, strongest |c| first
   (ties: upstream layer, then pool order), from the inheritable layers (GPT-2: layer 0 only),
   skipping an upstream feature whose description is empty.
3. Each distinct upstream description D(l', j) runs once as ``prefix + ids(D(l', j))``, where
   ids(s) = ``tokenizer(s).input_ids[-1]`` re-encodes each string and the prefix is the family's
   BOS (Gemma 2, Llama 128000, GPT-2 *none*). For every link, the strings of D(l', j) at which
   (l, i) fires are inherited; *all* strings of D(l', j) join the "soft" list.
4. D(l, i) = the NumPy-sorted unique strings of own + inherited (``np.unique``); the soft list is
   made unique and sorted the same way only when D(l, i) is non-empty (as the reference does).
5. ``validated``: ``prefix + ids(D)`` as one sequence activates (l, i) at some position after the
   prefix (False when D is empty). ``validation_soft``: the share of positions after the prefix of
   ``prefix + ids(soft list)`` at which (l, i) fires; 0.0 when the soft list is empty.

Tensors: x [batch, T, d_in] transcoder inputs; activations are read only for the asked
(sequence, feature) pairs (firing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from atlas.lens.firing import active, padded_runs, pre_activation_pairs

# The authors' isolation check runs [2, t] for every model (weight_lens analyze_feature).
REFERENCE_ISOLATION_PREFIX = 2
# The authors' description BOS per model family (weight_lens generate_description); None = no prefix.
FAMILY_BOS: dict[str, int | None] = {"gpt2": None, "gemma": 2, "llama": 128000}


@dataclass
class ReferenceDescription:
    feat: np.ndarray  # [n] int64, feature of each description token, ascending
    token: np.ndarray  # [n] int64, re-encoded id of each string
    strings: np.ndarray  # [n] object, the description strings (sorted within a feature)
    validated: np.ndarray  # [F] bool
    validation_soft: np.ndarray  # [F] float64, 0.0 when nothing was offered


def reencode(tokenizer, strings: list[str], fallback: list[int]) -> list[int]:
    """``tokenizer(s).input_ids[-1]`` for each string (the reference's ids). A string that encodes to
    nothing (the reference would raise IndexError) keeps the id it was decoded from."""
    out = []
    for s, f in zip(strings, fallback):
        ids = tokenizer(s).input_ids
        out.append(int(ids[-1]) if len(ids) else int(f))
    return out


def _runs(model, tc, layer: int, seqs: list[list[int]], feats: list[int], skip: int, batch_tokens: int):
    """Per sequence n, the bool activity of feature feats[n] at positions skip..len-1 of seqs[n]."""
    out: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(seqs)
    tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
    for idx, x, lens, _ in padded_runs(model, tensors, tc.hook_in, layer, batch_tokens):
        f = torch.tensor([feats[i] for i in idx.tolist()], dtype=torch.long)
        on = active(tc, pre_activation_pairs(tc, x, f), f).cpu().numpy()  # [b, T]
        for row, n in enumerate(idx.tolist()):
            out[n] = on[row, skip : int(lens[row])]
    return out


def _link_runs(
    model, tc, layer: int, useqs: list[list[int]], slots: list[int], feats: list[int], skip: int, batch_tokens: int
) -> list[np.ndarray]:
    """Each upstream sequence runs once; link n reads feature feats[n] on sequence useqs[slots[n]]."""
    from collections import defaultdict

    by_slot: dict[int, list[int]] = defaultdict(list)
    for n, slot in enumerate(slots):
        by_slot[slot].append(n)
    out: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(slots)
    tensors = [torch.tensor(s, dtype=torch.long) for s in useqs]
    for idx, x, lens, _ in padded_runs(model, tensors, tc.hook_in, layer, batch_tokens):
        pairs = [(row, n) for row, slot in enumerate(idx.tolist()) for n in by_slot[slot]]
        chunk = max(batch_tokens // x.shape[1], 1)  # bounds [n, T, d_in]
        for c0 in range(0, len(pairs), chunk):
            rows = torch.tensor([r for r, _ in pairs[c0 : c0 + chunk]], dtype=torch.long)
            f = torch.tensor([feats[n] for _, n in pairs[c0 : c0 + chunk]], dtype=torch.long)
            on = active(tc, pre_activation_pairs(tc, x[rows.to(x.device)], f), f).cpu().numpy()  # [n, T]
            for k, (row, n) in enumerate(pairs[c0 : c0 + chunk]):
                out[n] = on[k, skip : int(lens[row])]
    return out


class _Lists(NamedTuple):
    """Per feature, the strings gathered so far (steps 1-4)."""

    desc: list[list[str]]  # [F] the description D(l, i)
    soft: list[list[str]]  # [F] the soft list: every string offered


def _own_lists(F: int, own_f: np.ndarray, own_s: list[str]) -> _Lists:
    """Step 1: each feature's own strings start both its description and its soft list."""
    desc: list[list[str]] = [[] for _ in range(F)]
    soft: list[list[str]] = [[] for _ in range(F)]
    for f, s in zip(own_f.tolist(), own_s):
        desc[f].append(s)
        soft[f].append(s)
    return _Lists(desc, soft)


class _Links(NamedTuple):
    """Step 2's result: the links to inherit from, in the reference's order."""

    rows: np.ndarray  # [n_links] edge rows: -|c|, then upstream layer, then pool order (-c), per feature
    dst: np.ndarray  # [n_edges] the downstream feature (l, i) of each edge
    src_l: np.ndarray  # [n_edges] its upstream layer l'
    src_j: np.ndarray  # [n_edges] its upstream feature j


def _reference_links(edges: dict, descriptions: dict, allowed: set[int]) -> _Links:
    """Step 2: the kept edges from an allowed layer whose upstream description is non-empty."""
    dst, src_l, src_j, w = (np.asarray(edges[k]) for k in ("dst", "src_layer", "src_idx", "weight"))
    keep = np.isin(src_l, list(allowed))
    up_len = np.zeros(len(dst), dtype=np.int64)
    for l in np.unique(src_l[keep]).tolist():
        m = keep & (src_l == l)
        up_len[m] = np.diff(descriptions[l].offsets)[src_j[m]]
    links = np.nonzero(keep & (up_len > 0))[0]
    links = links[np.lexsort((-w[links], src_l[links], -np.abs(w[links]), dst[links]))]
    return _Links(links, dst, src_l, src_j)


def _inherit_links(
    model, tc, layer: int, prefix: list[int], lk: _Links, descriptions: dict, lists: _Lists, batch_tokens: int
) -> None:
    """Step 3: appends to ``lists`` the strings of each linked D(l', j) (desc: those at which (l, i) fires;
    soft: all of them)."""
    links, dst, src_l, src_j = lk

    def upstream_strings(l: int, j: int) -> list[str]:
        d = descriptions[l]
        return d.strings[d.offsets[j] : d.offsets[j + 1]].tolist()

    ukeys = sorted({(int(src_l[e]), int(src_j[e])) for e in links})
    uslot = {k: n for n, k in enumerate(ukeys)}
    useqs = []
    for l, j in ukeys:
        d = descriptions[l]
        useqs.append(prefix + d.token[d.offsets[j] : d.offsets[j + 1]].tolist())  # ids stored re-encoded
    fired = _link_runs(
        model,
        tc,
        layer,
        useqs,
        [uslot[(int(src_l[e]), int(src_j[e]))] for e in links],
        [int(dst[e]) for e in links],
        len(prefix),
        batch_tokens,
    )
    for e, on in zip(links.tolist(), fired):
        linked = upstream_strings(int(src_l[e]), int(src_j[e]))
        f = int(dst[e])
        lists.soft[f].extend(linked)
        lists.desc[f].extend(s for s, o in zip(linked, on.tolist()) if o)


def _unique_sorted(lists: _Lists) -> _Lists:
    """Step 4: the sorted unique description; the soft list is made unique only beside a non-empty one."""
    final = [np.unique(np.array(d, dtype=str)).tolist() if d else [] for d in lists.desc]
    soft = [np.unique(np.array(s, dtype=str)).tolist() if final[f] else s for f, s in enumerate(lists.soft)]
    return _Lists(final, soft)


def _validate_reference(
    model, tc, layer: int, prefix: list[int], lists: _Lists, origin: dict[str, int], batch_tokens: int
) -> ReferenceDescription:
    """Step 5: validation and soft validation, each one sequence per feature; ``origin``: string -> the id it
    was decoded from (the fallback of ``reencode``)."""
    F, skip, tok = tc.d_sae, len(prefix), model.tokenizer
    final, soft = lists
    ids_of = {}
    every = sorted({s for lst in final + soft for s in lst})
    if every:
        ids_of = dict(zip(every, reencode(tok, every, [origin.get(s, 0) for s in every])))
    has = [f for f in range(F) if final[f]]
    on_v = _runs(model, tc, layer, [prefix + [ids_of[s] for s in final[f]] for f in has], has, skip, batch_tokens)
    validated = np.zeros(F, dtype=bool)
    for f, on in zip(has, on_v):
        validated[f] = bool(on.any())
    offered = [f for f in range(F) if soft[f]]
    on_s = _runs(
        model, tc, layer, [prefix + [ids_of[s] for s in soft[f]] for f in offered], offered, skip, batch_tokens
    )
    vsoft = np.zeros(F, dtype=np.float64)
    for f, on in zip(offered, on_s):
        vsoft[f] = float(on.sum()) / len(on) if len(on) else 0.0

    feat = np.repeat(np.arange(F, dtype=np.int64), [len(d) for d in final])
    strings = np.array([s for d in final for s in d], dtype=object)
    token = np.array([ids_of[s] for s in strings.tolist()], dtype=np.int64)
    return ReferenceDescription(feat=feat, token=token, strings=strings, validated=validated, validation_soft=vsoft)


def describe_reference(
    model,
    tc,
    layer: int,
    family_bos: int | None,
    own: tuple[np.ndarray, np.ndarray],
    edges: dict,
    descriptions: dict,
    allowed: set[int],
    batch_tokens: int,
) -> ReferenceDescription:
    """Steps 1-5 above for every feature of ``layer``.

    own: (feat [n], token [n]) of the validated input candidates, feat ascending, pool order;
    edges: the layer's kept edges (dst, src_layer, src_idx, weight arrays);
    descriptions: earlier layers' results (objects with ``offsets`` and ``strings``/``token``)."""
    from atlas.models import token_strings

    prefix = [] if family_bos is None else [int(family_bos)]

    # 1. own tokens as strings
    own_f, own_t = own
    own_s = np.array(token_strings(model, own_t), dtype=str).tolist() if len(own_t) else []  # as np.array keeps them
    lists = _own_lists(tc.d_sae, own_f, own_s)

    # 2. links in the reference's order: -|c|, then upstream layer, then pool order (-c)
    links = _reference_links(edges, descriptions, allowed)

    # 3. one run per distinct upstream description; every link reads its own feature there
    _inherit_links(model, tc, layer, prefix, links, descriptions, lists, batch_tokens)

    # 4. sorted unique description; the soft list is made unique only beside a non-empty description
    lists = _unique_sorted(lists)

    # 5. validation and soft validation, each one sequence per feature
    origin = {s: t for s, t in zip(own_s, own_t.tolist())}
    for d in descriptions.values():
        origin.update(zip(d.strings.tolist(), d.token.tolist()))
    return _validate_reference(model, tc, layer, prefix, lists, origin, batch_tokens)
