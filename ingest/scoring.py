"""Job: score every weight-based description on held-out text with no LLM (docs/method.md §5).

Shards: one per layer (``layer-{l}``, run by ingest/shards.py), done for one configuration and one held-out corpus. The
descriptions are the ``explanations`` rows of method 'weightlens' (their ``tokens`` column: the
description terms). Each gets score rows of method 'token-membership' and metrics precision,
recall, auroc, n_member and n_active, with the held-out data's fingerprint and the parameters.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from atlas import db
from atlas.config import ScoringConfig
from atlas.ids import fid_range, split_fid, split_fids
from atlas.progress import progress
from ingest.inputs import tokens_fingerprint
from ingest.registry import register
from ingest.shards import LOCAL, Context, ExecutorConfig, Shard, layer_shard, run_job

JOB = "scores"
METRICS = ("precision", "recall", "auroc", "n_member", "n_active")


_VOCAB: dict[int, list[str]] = {}


def vocab_strings(model) -> list[str]:
    """Every token's string, once per model per process (each shard of a worker reuses it)."""
    from atlas.models import token_strings

    if id(model) not in _VOCAB:
        _VOCAB.clear()
        _VOCAB[id(model)] = token_strings(model, range(model.cfg.d_vocab))
    return _VOCAB[id(model)]


def run(
    db_path,
    model,
    tset,
    tokens,
    cfg: ScoringConfig = ScoringConfig(),
    *,
    model_id: str,
    model_spec: str,
    data_name: str = "held-out",
    executor: ExecutorConfig = LOCAL,
) -> dict:
    from atlas.lens.activations import check_tokens

    tset.check_against(model)
    tokens = check_tokens(tokens, model)
    data = f"{data_name} ({tokens.shape[0]} x {tokens.shape[1]} tokens, sha {tokens_fingerprint(tokens)})"
    config = {**asdict(cfg), "data": data, "set_name": tset.set_name}
    with db.AtlasWriter(db_path) as w:
        sids = register(w, model, tset, model_id=model_id, model_spec=model_spec)
        job = ScoresJob(config, cfg, sids, tset.layer_ids, f"{model_id}/{tset.set_name}", data)
        run = run_job(job, Context(model, tset, tokens), db_path, w, executor)
    return {"scored": job.scored, "layers_written": run.loaded, "shards": run.summary()}


class ScoresJob:
    """Shards: one per layer; the layer's weight descriptions are its input."""

    name = JOB

    def __init__(
        self, config: dict, cfg: ScoringConfig, sids: dict[int, int], layers: list[int], scope: str, data: str
    ):
        self.params, self.cfg, self.sids, self.layers, self.scope, self.data = config, cfg, sids, layers, scope, data
        self.chash = db.config_hash(config)
        self.scored = 0

    def plan(self, w) -> list[Shard]:
        return [
            layer_shard(
                l,
                self.chash,
                deletes=(
                    (
                        "DELETE FROM scores WHERE method = $method AND data = $data "
                        f"AND {fid_range(self.sids[l]).sql()}",
                        {**fid_range(self.sids[l]).params(), "method": self.cfg.method, "data": self.data},
                    ),
                ),
            )
            for l in self.layers
        ]

    def inputs(self, w, shard: Shard) -> list[tuple]:
        rng = fid_range(self.sids[shard.key["layer"]])
        return w.fetchall(
            "SELECT explanation_id, fid, tokens FROM explanations WHERE method = 'weightlens' "
            f"AND {rng.sql()} AND tokens IS NOT NULL AND len(tokens) > 0",
            rng.params(),
        )

    def compute(self, ctx, shard: Shard, rows: list[tuple]) -> tuple[dict, dict]:
        from atlas.lens.activations import batches, run_encoders
        from atlas.lens.scoring import TokenScorer, membership_pairs

        if not rows:
            return {}, {"scored": 0}
        layer, tokens = shard.key["layer"], ctx.tokens
        expl, fids, terms = zip(*rows)
        pf, pt = membership_pairs({split_fid(f).idx: t for f, t in zip(fids, terms)}, vocab_strings(ctx.model))
        scorer = TokenScorer(ctx.tset[layer].d_sae, pf, pt)
        first = 1  # position 0 (BOS) is not scored, as it is not counted in statistics
        with progress(f"scores layer {layer}", tokens.shape[0], "seq") as bar:
            for _, batch in batches(tokens, self.cfg.batch_size):
                run_encoders(
                    ctx.model,
                    ctx.tset,
                    batch,
                    [layer],
                    lambda l, acts: scorer.update(
                        batch[:, first:].reshape(-1), acts[:, first:].reshape(-1, acts.shape[-1])
                    ),
                )
                bar.advance(batch.shape[0])
        res = scorer.result()
        idx = split_fids(fids).idx
        vals = [getattr(res, m).double().numpy()[idx] for m in METRICS]
        n = len(rows)
        params = json.dumps(
            {"match": "stripped lower-case token string in the description terms", "skip_first": True, "layer": layer}
        )
        m = n * len(METRICS)
        return {
            "scores": pa.table(
                {
                    "explanation_id": np.tile(np.array(expl), len(METRICS)),
                    "fid": np.tile(np.array(fids), len(METRICS)),
                    "method": [self.cfg.method] * m,
                    "metric": np.repeat(METRICS, n),
                    "value": pa.array(np.concatenate(vals), from_pandas=True),
                    "data": [self.data] * m,
                    "params": [params] * m,
                    "run_id": [""] * m,
                }
            )
        }, {"scored": n}

    def account(self, shard: Shard, info: dict) -> None:
        self.scored += info["scored"]
