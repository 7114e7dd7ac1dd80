"""Job: CircuitLens attributions, clusters and descriptions of the sampled examples (docs/method.md §4).

Shards (ingest/shards.py): blocks of ``features_per_unit`` features of one layer (``layer-{l}-block-{b}``), done for
one configuration and one set of stored examples. Per unit:
1. the unit's examples (written by the activations job) and their full contexts from the corpus
   (which must be the corpus the examples came from: the stored windows are checked against it);
2. batched attributions (``lens.attribution``), input and output side;
3. per feature: significant contributor sets, DBSCAN clusters, each cluster's evidence summary
   and description (template, or an explainer model when configured: ingest/explainer.py, one
   client per job), one merged description;
4. rows: ``attributions`` (bias, per-layer errors, the strongest features / heads / tokens /
   positions, output logits), ``clusters``, ``cluster_members``, ``explanations``.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import torch

from atlas import db
from atlas.config import CircuitLensConfig
from atlas.errors import AtlasError
from atlas.ids import fid_range, make_fid, make_fids, split_fid, split_fids
from atlas.lens.kinds import KIND_LABELS, KIND_SIDES
from atlas.lens.kinds import AttributionKind as Kind
from atlas.progress import progress
from ingest.explainer import Explainer
from ingest.registry import register
from ingest.shards import LOCAL, Context, ExecutorConfig, Shard, run_job

JOB = "circuitlens"


def load_examples(w, sid: int, kinds) -> dict[str, Any]:
    """The layer's stored examples of ``kinds`` as columns: numpy arrays, and ``window`` a list of token lists."""
    rows = w.fetchall(
        "SELECT example_id, fid, doc_id, pos, window_start, tokens FROM examples "
        f"WHERE {fid_range(sid).sql()} AND list_contains($kinds, kind) ORDER BY fid, example_id",
        {**fid_range(sid).params(), "kinds": list(kinds)},
    )
    if not rows:
        return {}
    ex_id, fid, doc, pos, start, toks = zip(*rows)
    return dict(
        example_id=np.array(ex_id),
        idx=split_fids(fid).idx,
        doc=np.array(doc),
        pos=np.array(pos),
        start=np.array(start),
        window=list(toks),
    )


def select(ex: dict, mask: np.ndarray) -> dict:
    """The examples where ``mask`` holds (arrays and lists alike)."""
    return {k: (v[mask] if isinstance(v, np.ndarray) else [x for x, m in zip(v, mask) if m]) for k, v in ex.items()}


def spread(ex: dict, n: int) -> dict:
    """At most ``n`` examples per feature, evenly spaced over each feature's stored examples."""
    keep = np.zeros(len(ex["idx"]), dtype=bool)
    for feature in np.unique(ex["idx"]):
        at = np.flatnonzero(ex["idx"] == feature)  # this feature's examples, in stored order
        keep[at[np.unique(np.linspace(0, len(at) - 1, min(n, len(at))).round().astype(np.int64))]] = True
    return select(ex, keep)


def chosen_features(w, sid: int, n: int | None, undescribed_only: bool) -> np.ndarray:
    """Indices of the layer's features to analyse: the ``n`` most often active (from the activations
    job; None: all), among those without a validated WeightLens description when ``undescribed_only``."""
    undescribed = "AND fid NOT IN (SELECT fid FROM feature_weightlens WHERE validated)" if undescribed_only else ""
    rows = w.fetchall(
        f"SELECT fid_index(fid) FROM feature_stats WHERE {fid_range(sid).sql()} {undescribed} "
        "ORDER BY n_active DESC, fid LIMIT $n",
        {**fid_range(sid).params(), "n": n},
    )
    return np.array([r[0] for r in rows], dtype=np.int64)


def check_corpus(tokens: torch.Tensor, ex: dict) -> None:
    """The stored windows must equal the corpus at the same place: the corpus is the one sampled."""
    for i in range(len(ex["doc"])):  # one comparison per example, cheap next to an attribution
        d, s, win = int(ex["doc"][i]), int(ex["start"][i]), ex["window"][i]
        if d >= tokens.shape[0] or tokens[d, s : s + len(win)].tolist() != list(win):
            raise AtlasError(
                f"example {int(ex['example_id'][i])} (document {d}, position {int(ex['pos'][i])}) does "
                "not match the corpus given: run circuitlens on the corpus the activations came from"
            )


class Contributions(NamedTuple):
    """Flat contribution rows, one per (example, contributor); -1 where a column does not apply."""

    row: torch.Tensor  # [n] example: a batch row inside a batch, the unit's example after attribute_examples
    kind: torch.Tensor  # [n] AttributionKind
    layer: torch.Tensor  # [n] source layer (feature, head, error)
    idx: torch.Tensor  # [n] upstream feature index (feature)
    head: torch.Tensor  # [n] head (head)
    src_pos: torch.Tensor  # [n] source position; a logit's predicted position t + k
    token: torch.Tensor  # [n] token id at src_pos (token, position); the predicted token (logit)
    value: torch.Tensor  # [n] the contribution

    def take(self, index: torch.Tensor) -> Contributions:
        return Contributions(*(c[index] for c in self))

    @staticmethod
    def cat(parts: list[Contributions]) -> Contributions:
        return Contributions(*(torch.cat(cols) for cols in zip(*parts)))


def _rows(
    row: torch.Tensor, kind: Kind, value: torch.Tensor, layer=-1, idx=-1, head=-1, src_pos=-1, token=-1
) -> Contributions:
    """Contributions of one kind; a number given for a column is repeated for every row."""

    def col(v):
        return torch.as_tensor(v).expand_as(row)

    return Contributions(row, col(int(kind)), col(layer), col(idx), col(head), col(src_pos), col(token), value)


def _candidates(att, b0: int, tokens: torch.Tensor) -> Contributions:
    """Every nonzero feature / head / token / position contribution of a batch (the candidates to store)."""
    parts = []
    for l, c in att.features.items():  # [batch, pos, d_sae]
        b, s, j = c.nonzero(as_tuple=True)
        parts.append(_rows(b, Kind.FEATURE, c[b, s, j], layer=l, idx=j, src_pos=s))
    b, l, h, s = att.heads.nonzero(as_tuple=True)  # [batch, layer + 1, n_heads, pos]
    parts.append(_rows(b, Kind.HEAD, att.heads[b, l, h, s], layer=l, head=h, src_pos=s))
    for kind, t in ((Kind.TOKEN, att.token), (Kind.POSITION, att.position)):  # [batch, pos]
        b, s = t.nonzero(as_tuple=True)
        parts.append(_rows(b, kind, t[b, s], src_pos=s))
    out = Contributions.cat(parts)
    return out._replace(row=out.row + b0, token=tokens[out.row, out.src_pos])


class Evidence(NamedTuple):
    """What the descriptions need of one example."""

    src: int  # the source position with the largest node-view input contribution
    out: torch.Tensor  # [n_output] the tokens predicted at t + k (-1 past the end)
    toks: torch.Tensor  # [seq] the example's tokens (its batch's length)
    pos: int  # the target position t


class ExampleAttributions(NamedTuple):
    """What attribute_examples returns for a unit's examples."""

    rows: Contributions  # the stored rows, grouped by example (example order)
    sig_row: torch.Tensor  # [m] example of each significant contributor, ascending
    sig_key: torch.Tensor  # [m, 4] its key [kind, layer, a, b] (lens.clustering.significant)
    evidence: list[Evidence]  # per example, in example order
    max_gap: float  # the largest |completeness gap| of the unit's attributions


def attribute_examples(
    model, tset, tokens, layer: int, ex: dict, cfg: CircuitLensConfig, advance=lambda n: None
) -> ExampleAttributions:
    """Attributions of a unit's examples: stored rows, contributor sets and per-example evidence."""
    from atlas.lens.attribution import attribute, completeness_gap
    from atlas.lens.clustering import significant
    from atlas.lens.sampling import group_topk

    n = len(ex["doc"])
    rows, sig, evidence = [], [], []
    max_gap = 0.0
    # 1. batch examples of similar target position: each batch runs only up to its last target
    #    (+ the output positions), so short examples do not pay for long ones
    order = np.argsort(np.asarray(ex["pos"]), kind="stable")
    for b0 in range(0, n, cfg.batch_size):
        take = order[b0 : b0 + cfg.batch_size]
        back = torch.as_tensor(take)  # batch row -> example
        doc = torch.as_tensor(ex["doc"][take])
        pos = torch.as_tensor(ex["pos"][take])
        T = min(tokens.shape[1], int(pos.max()) + cfg.n_output_positions + 1)
        toks = tokens[doc, :T]
        att = attribute(model, tset, toks, layer, torch.as_tensor(ex["idx"][take]), pos, cfg.n_output_positions)
        max_gap = max(max_gap, float(completeness_gap(att).abs().max()))
        # 2. stored rows: the strongest contributions per example, plus bias, errors and logits
        cand = _candidates(att, 0, toks)
        top = cand.take(group_topk(cand.row, cand.value.abs().double(), cfg.stored_per_example))
        rows.append(top._replace(row=back[top.row]))
        rows += _fixed_rows(att, back, pos)
        # 3. contributor sets (clustering) and evidence (descriptions)
        srow, skey, _ = significant(att, cfg.top_contributors, cfg.min_rel_contribution)
        sig.append((back[srow], skey))
        node = att.token + att.position + att.errors.sum(1) + sum(c.sum(-1) for c in att.features.values())
        evidence += [Evidence(int(a), o, t, int(p)) for a, o, t, p in zip(node.argmax(1), att.out_tokens, toks, pos)]
        advance(doc.numel())
    # 4. back to example order: rows grouped by example, evidence indexed by example
    cat = Contributions.cat(rows)
    cat = cat.take(torch.as_tensor(np.argsort(cat.row.numpy(), kind="stable")))
    srow, skey = torch.cat([s[0] for s in sig]), torch.cat([s[1] for s in sig])
    first = torch.as_tensor(np.argsort(srow.numpy(), kind="stable"))
    inv = np.argsort(order, kind="stable")
    return ExampleAttributions(cat, srow[first], skey[first], [evidence[i] for i in inv], max_gap)


def _fixed_rows(att, back: torch.Tensor, pos: torch.Tensor) -> list[Contributions]:
    """The rows stored for every example: per-layer errors (summed over positions), the bias, the logits."""
    B, k = back.numel(), att.out_tokens.shape[1]
    out = []
    if att.errors.shape[1]:
        e = att.errors.sum(2)  # [batch, layer]
        out.append(
            _rows(
                back.repeat_interleave(e.shape[1]), Kind.ERROR, e.reshape(-1), layer=torch.arange(e.shape[1]).repeat(B)
            )
        )
    out.append(_rows(back, Kind.BIAS, att.bias))
    out.append(
        _rows(
            back.repeat_interleave(k),
            Kind.LOGIT,
            att.out_values.reshape(-1),
            src_pos=(pos[:, None] + torch.arange(k)).reshape(-1),
            token=att.out_tokens.reshape(-1),
        )
    )
    return out


def attributions_table(cat: Contributions, ex, layer: int, sids: dict, sid: int, run_id: str) -> pa.Table:
    row = cat.row.numpy()
    kind = cat.kind.numpy()
    pos = ex["pos"][row]
    src_pos = cat.src_pos.numpy()
    lay = cat.layer.numpy()
    sid_of = np.array([sids.get(l, 0) for l in range(max(sids) + 1)], dtype=np.int64)  # layer -> sid
    is_feature = kind == Kind.FEATURE  # the other kinds have idx -1
    src_fid = make_fids(sid_of[np.where(is_feature, lay, 0)], np.where(is_feature, cat.idx.numpy(), 0))

    def none_if(a, cond):
        return pa.array(np.where(cond, None, a).tolist(), type=pa.int64())

    return pa.table(
        {
            "example_id": ex["example_id"][row],
            "fid": make_fids(sid, ex["idx"][row]),
            "side": np.array(KIND_SIDES)[kind],
            "kind": np.array(KIND_LABELS)[kind],
            "layer": none_if(lay, lay < 0),
            "src_fid": none_if(src_fid, ~is_feature),
            "head": none_if(cat.head.numpy(), kind != Kind.HEAD),
            "src_pos": none_if(src_pos, src_pos < 0),
            "rel_pos": none_if(src_pos - pos, src_pos < 0),
            "token_id": none_if(cat.token.numpy(), ~np.isin(kind, [Kind.TOKEN, Kind.LOGIT]) | (cat.token.numpy() < 0)),
            "value": cat.value.numpy().astype(float),
            "run_id": [run_id] * len(row),
        }
    )


def run(
    db_path,
    model,
    tset,
    tokens,
    cfg: CircuitLensConfig = CircuitLensConfig(),
    *,
    model_id: str,
    model_spec: str,
    layers: list[int] | None = None,
    executor: ExecutorConfig = LOCAL,
) -> dict:
    """Attribute, cluster and describe every feature's stored examples; returns a small report."""
    tset.check_against(model)
    with db.AtlasWriter(db_path) as w:
        sids = register(w, model, tset, model_id=model_id, model_spec=model_spec)
        job = CircuitLensJob(
            {**asdict(cfg), "set_name": tset.set_name},
            cfg,
            sids,
            sorted(layers if layers is not None else tset.layer_ids),
            f"{model_id}/{tset.set_name}",
            tokens,
        )
        with job.explainer or nullcontext():  # the client closes with the job
            run = run_job(job, Context(model, tset, tokens), db_path, w, executor)
    job.report.update(units_written=run.loaded, units_done_before=run.done_before, shards=run.summary())
    return job.report


class CircuitLensJob:
    """Shards: blocks of ``features_per_unit`` features of one layer; the block's stored examples
    (checked against the corpus on the driver) and the upstream descriptions are its input.

    A block's summaries cite the descriptions of features of the layers below it, CircuitLens's own
    among them, so a block of layer l depends on every planned block of the layers below l and reads
    those descriptions when its inputs are made (after they are loaded): the same descriptions whether
    the job ran through, resumed after an interruption, or ran on Ray."""

    name = JOB

    def __init__(
        self, config: dict, cfg: CircuitLensConfig, sids: dict[int, int], layers: list[int], scope: str, tokens
    ):
        self.params, self.cfg, self.sids, self.layers, self.scope, self.tokens = (
            config,
            cfg,
            sids,
            layers,
            scope,
            tokens,
        )
        # the job's one explainer client (None: template descriptions)
        self.explainer = (
            Explainer(cfg.explainer_url, cfg.explainer_model or "", cfg.explainer_timeout_s)
            if cfg.explainer_url
            else None
        )
        self.examples: dict[str, dict] = {}
        self._descriptions: dict[int, dict] = {}  # layer -> upstream descriptions (read once per layer)
        self.report: dict[str, Any] = {  # the job's report: counts, the largest gap, then run_job's figures
            "units_written": 0,
            "units_done_before": 0,
            "features": 0,
            "clusters": 0,
            "max_completeness_gap": 0.0,
        }

    def plan(self, w) -> list[Shard]:
        cfg, out = self.cfg, []
        below: list[str] = []  # planned units of the layers already planned
        for layer in self.layers:  # sorted: upstream layers first
            sid = self.sids[layer]
            ex = load_examples(w, sid, cfg.example_kinds)
            if ex and (cfg.max_features_per_layer is not None or cfg.undescribed_only):
                chosen = chosen_features(w, sid, cfg.max_features_per_layer, cfg.undescribed_only)
                ex = select(ex, np.isin(ex["idx"], chosen))
            if ex and cfg.examples_per_feature is not None:
                ex = spread(ex, cfg.examples_per_feature)
            if not ex or not len(ex["idx"]):
                continue
            check_corpus(self.tokens, ex)
            blocks = ex["idx"] // cfg.features_per_unit
            units = []
            for block in np.unique(blocks):
                sel = select(ex, blocks == block)
                unit = f"layer-{layer}-block-{int(block)}"
                self.examples[unit] = sel
                rng = fid_range(sid, int(block) * cfg.features_per_unit, (int(block) + 1) * cfg.features_per_unit)
                deletes = [
                    (f"DELETE FROM {t} WHERE {rng.sql()}", rng.params())
                    for t in ("attributions", "clusters", "cluster_members")
                ]
                deletes.append(
                    (f"DELETE FROM explanations WHERE {rng.sql()} AND method LIKE 'circuitlens%'", rng.params())
                )
                out.append(
                    Shard(
                        unit=unit,
                        key={"layer": layer, "block": int(block)},
                        deletes=tuple(deletes),
                        deps=tuple(below),
                        chash=db.config_hash({**self.params, "examples": examples_fingerprint(sel)}),
                    )
                )
                units.append(unit)
            below += units
        return out

    def inputs(self, w, shard: Shard) -> dict:
        layer = shard.key["layer"]
        if layer not in self._descriptions:  # every dependency of this layer is loaded by now
            self._descriptions = {layer: upstream_descriptions(w, self.sids, below=layer)}
        return {"ex": self.examples[shard.unit], "descriptions": self._descriptions[layer]}

    def compute(self, ctx, shard: Shard, inputs: dict) -> tuple[dict, dict]:
        layer = shard.key["layer"]
        return block_tables(
            ctx.model,
            ctx.tset,
            ctx.tokens,
            layer,
            self.sids[layer],
            self.sids,
            inputs["ex"],
            self.cfg,
            inputs["descriptions"],
            shard.unit,
            self.explainer,
        )

    def account(self, shard: Shard, info: dict) -> None:
        self.report["features"] += info["features"]
        self.report["clusters"] += info["clusters"]
        self.report["max_completeness_gap"] = max(self.report["max_completeness_gap"], info["max_completeness_gap"])


def upstream_descriptions(w, sids: dict[int, int], below: int) -> dict:
    """(layer, idx) -> the description of a feature of a layer below ``below`` (WeightLens first, else CircuitLens)."""
    layer_of = {sid: l for l, sid in sids.items() if l < below}
    rows = w.fetchall(
        "SELECT fid, text FROM explanations WHERE cluster_label IS NULL "
        "ORDER BY (method = 'weightlens') ASC, created_at, explanation_id"
    )
    parts = [(split_fid(f), t) for f, t in rows]
    return {(layer_of[p.sid], p.idx): t for p, t in parts if p.sid in layer_of}


EXPLANATIONS_PER_FEATURE = 1024


def explanation_id(fid: int, label: int | None) -> int:
    """Ids from content, not the sequence (whose values a rolled-back unit may consume): fid * 1024 + 0
    for the feature's description, + 2 + label for a cluster's (label -1 is noise). Sequence ids
    (WeightLens's) stay far below: fids start at 2**32."""
    k = 0 if label is None else 2 + label
    if not 0 <= k < EXPLANATIONS_PER_FEATURE:
        raise AtlasError(f"cluster label {label} of feature {fid}: at most {EXPLANATIONS_PER_FEATURE - 2} clusters")
    return int(fid) * EXPLANATIONS_PER_FEATURE + k


def examples_fingerprint(ex: dict) -> str:
    """A hash of the examples a unit reads (ids, documents, positions): the unit is redone when they change."""
    import hashlib

    h = hashlib.sha256()
    for key in ("example_id", "doc", "pos"):
        h.update(np.ascontiguousarray(ex[key], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


class _BlockContext(NamedTuple):
    """What every cluster of a block shares."""

    ex: dict  # the unit's examples (load_examples), grouped by feature
    src: torch.Tensor  # [n_examples] each example's source position (Evidence.src)
    outs: torch.Tensor  # [n_examples, n_output] the tokens predicted at t + k (-1 past the end)
    tok_rows: list[torch.Tensor]  # [n_examples] each example's tokens [seq]
    strs: dict[int, str]  # token id -> string, for every id in tok_rows and outs
    cfg: CircuitLensConfig  # the job's configuration (clustering parameters, min_examples, explainer)
    descriptions: dict  # (layer, idx) -> the description of an upstream feature (upstream_descriptions)
    explainer: Explainer | None  # the cluster descriptions' model; None: the template
    method: str  # the method of the block's explanations (template-described noise clusters excepted)
    run_id: str  # set when the shard is loaded


def _block_context(model, ex: dict, evidence: list[Evidence], cfg, descriptions, explainer) -> _BlockContext:
    """The evidence of the block's examples as tensors, with the strings of every token it names."""
    from atlas.models import token_strings

    outs = torch.stack([e.out for e in evidence])
    tok_rows = [e.toks for e in evidence]
    vocab_ids = sorted(
        {int(x) for t in tok_rows for x in t.tolist()} | {int(x) for x in outs.flatten().tolist() if x >= 0}
    )
    strs = dict(zip(vocab_ids, token_strings(model, vocab_ids)))
    method = "circuitlens-llm" if explainer is not None else "circuitlens-template"
    src = torch.tensor([e.src for e in evidence])
    return _BlockContext(ex, src, outs, tok_rows, strs, cfg, descriptions, explainer, method, "")


class _BlockRows(NamedTuple):
    """The rows of a block's tables, appended feature by feature."""

    clusters: list[dict]  # one per (feature, cluster label)
    members: list[dict]  # one per (feature, cluster label, example)
    explanations: list[dict]  # one per cluster, and one (cluster_label None) per feature


def _member_evidence(c: _BlockContext, examples: np.ndarray) -> list[dict]:
    """What the summary reads of each of a cluster's ``examples`` (indices into the block's examples)."""
    from atlas.lens.describe import snippet

    mem = []
    for g in examples.tolist():
        t, s = int(c.ex["pos"][g]), int(c.src[g])
        toks = [c.strs[int(x)] for x in c.tok_rows[g].tolist()]
        mem.append(
            {
                "target_token": toks[t],
                "source_token": toks[s],
                "offset": s - t,
                "snippet": snippet(toks, t, s),
                "outputs": [c.strs[int(y)] for y in c.outs[g].tolist() if y >= 0],
            }
        )
    return mem


class _ClusterText(NamedTuple):
    """A cluster's description and what is stored with it."""

    text: str  # the description
    params: dict  # the clustering parameters, the cluster's size, and the explainer's model, url and prompt


def _cluster_text(c: _BlockContext, summary: dict, label, n_examples: int) -> _ClusterText:
    """A cluster's description: the explainer's for a real cluster (label >= 0) when there is one, else the
    template's."""
    from atlas.lens.describe import template

    cfg = c.cfg
    params = {
        "eps": cfg.eps,
        "min_samples": cfg.min_samples,
        "min_contributor_fraction": cfg.min_contributor_fraction,
        "top_contributors": cfg.top_contributors,
        "min_rel_contribution": cfg.min_rel_contribution,
        "n_examples": n_examples,
        "example_kinds": list(cfg.example_kinds),
    }
    if c.explainer is not None and label >= 0:
        text, prompt = c.explainer.describe(summary)
        params.update(explainer_model=cfg.explainer_model, explainer_url=cfg.explainer_url, prompt=prompt)
        return _ClusterText(text, params)
    return _ClusterText(template(summary), params)


def _cluster_rows(
    c: _BlockContext, rows: _BlockRows, fid: int, label, idx: np.ndarray, members: np.ndarray, M, keys
) -> str:
    """Appends one cluster's rows (clusters, cluster_members, explanations) to ``rows``; returns its description.
    ``members``: the feature's examples (indices into the block's); ``idx``: the cluster's, as indices into
    ``members``; M [n_members, n_keys] bool and ``keys`` [n_keys, 4]: the feature's contributor matrix."""
    from atlas.lens.describe import summarize

    shared = M[idx].sum(0)  # [n_keys]
    contributors = [
        (tuple(int(x) for x in keys[j]), int(shared[j])) for j in torch.argsort(-shared).tolist() if shared[j] > 0
    ][:10]
    summary = summarize(_member_evidence(c, members[idx]), contributors, c.descriptions)
    text, params = _cluster_text(c, summary, label, len(idx))
    rows.clusters.append(
        {
            "fid": fid,
            "label": int(label),
            "n_examples": len(idx),
            "contributors": json.dumps([{"key": list(k), "n": n} for k, n in contributors]),
            "summary": json.dumps(summary),
            "run_id": c.run_id,
        }
    )
    rows.members.extend(
        {"fid": fid, "label": int(label), "example_id": int(c.ex["example_id"][members[i]]), "run_id": c.run_id}
        for i in idx
    )
    rows.explanations.append(
        {
            "explanation_id": explanation_id(fid, int(label)),
            "fid": fid,
            "cluster_label": int(label),
            "method": "circuitlens-template" if label < 0 else c.method,
            "text": text,
            "tokens": [t["token"] for t in summary["target_tokens"]],
            "params": json.dumps(params),
            "run_id": c.run_id,
        }
    )
    return text


def _feature_rows(c: _BlockContext, rows: _BlockRows, sid: int, f, srow: np.ndarray, skey) -> int | None:
    """Clusters the examples of feature ``f`` (DBSCAN on their contributor sets) and appends the rows of its
    clusters and its merged description; -> its number of clusters, None when it has too few examples.
    srow [m] (ascending) and skey [m, 4]: the block's significant contributors (ExampleAttributions)."""
    from atlas.lens.clustering import cluster, contributor_matrix
    from atlas.lens.describe import merge

    members = np.nonzero(c.ex["idx"] == f)[0]
    fid = make_fid(sid, int(f))
    if len(members) < c.cfg.min_examples:
        return None
    lo, hi = np.searchsorted(srow, [members[0], members[-1] + 1])  # srow is sorted; members contiguous
    rows_f = torch.as_tensor(srow[lo:hi] - members[0])
    M, keys = contributor_matrix(rows_f, skey[lo:hi], len(members), c.cfg.min_contributor_fraction)
    labels = cluster(M, c.cfg.eps, c.cfg.min_samples)
    texts = {}
    for label in np.unique(labels):
        texts[int(label)] = _cluster_rows(c, rows, fid, label, np.nonzero(labels == label)[0], members, M, keys)
    n_noise = int((labels == -1).sum())
    rows.explanations.append(
        {
            "explanation_id": explanation_id(fid, None),
            "fid": fid,
            "cluster_label": None,
            "method": c.method,
            "text": merge(texts, n_noise),
            "tokens": None,
            "params": json.dumps({"n_clusters": int(labels.max()) + 1, "n_noise": n_noise, "n_examples": len(members)}),
            "run_id": c.run_id,
        }
    )
    return int(labels.max()) + 1


def block_tables(
    model, tset, tokens, layer, sid, sids, ex, cfg, descriptions, unit, explainer: Explainer | None = None
) -> tuple[dict, dict]:
    """The rows of one block of features (attributions, clusters, members, explanations) and a summary;
    cluster descriptions from ``explainer`` when given, else from the template."""
    with progress(f"circuitlens {unit}", len(ex["doc"]), "examples") as bar:
        res = attribute_examples(model, tset, tokens, layer, ex, cfg, bar.advance)
    report = {"features": 0, "clusters": 0, "max_completeness_gap": res.max_gap}
    srow_np = res.sig_row.numpy()
    assert (np.diff(srow_np) >= 0).all() and (np.diff(ex["idx"]) >= 0).all()  # grouped by example, examples by feature
    c = _block_context(model, ex, res.evidence, cfg, descriptions, explainer)
    rows = _BlockRows([], [], [])
    for f in np.unique(ex["idx"]):  # DBSCAN runs per feature
        n_clusters = _feature_rows(c, rows, sid, f, srow_np, res.sig_key)
        if n_clusters is not None:
            report["features"] += 1
            report["clusters"] += n_clusters
    inserts = {"attributions": attributions_table(res.rows, ex, layer, sids, sid, c.run_id)}
    if rows.clusters:
        inserts.update(
            clusters=pa.Table.from_pylist(rows.clusters),
            cluster_members=pa.Table.from_pylist(rows.members),
            explanations=pa.Table.from_pylist(rows.explanations, schema=_EXPL_SCHEMA),
        )
    return inserts, report


_EXPL_SCHEMA = pa.schema(
    [
        ("explanation_id", pa.int64()),
        ("fid", pa.int64()),
        ("cluster_label", pa.int32()),
        ("method", pa.string()),
        ("text", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("params", pa.string()),
        ("run_id", pa.string()),
    ]
)
