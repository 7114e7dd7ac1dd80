"""Job: score every weight-based description on held-out text with no LLM (docs/method.md §5).

Units: one per layer (``layer-{l}``), done for one configuration and one held-out corpus. The
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
from atlas.ids import make_fid
from atlas.progress import progress
from ingest.inputs import tokens_fingerprint
from ingest.registry import register

JOB = "scores"
METRICS = ("precision", "recall", "auroc", "n_member", "n_active")


def vocab_strings(model) -> list[str]:
    from atlas.models import token_strings

    return token_strings(model, range(model.cfg.d_vocab))


def run(db_path, model, tset, tokens, cfg: ScoringConfig = ScoringConfig(), *, model_id: str, model_spec: str,
        data_name: str = "held-out") -> dict:
    from atlas.lens.activations import batches, check_tokens, run_encoders
    from atlas.lens.scoring import TokenScorer, membership_pairs

    tset.check_against(model)
    tokens = check_tokens(tokens, model)
    data = f"{data_name} ({tokens.shape[0]} x {tokens.shape[1]} tokens, sha {tokens_fingerprint(tokens)})"
    config = {**asdict(cfg), "data": data, "set_name": tset.set_name}
    chash = db.config_hash(config)
    scope = f"{model_id}/{tset.set_name}"
    report = {"scored": 0, "layers_written": 0}
    vocab = None
    with db.AtlasWriter(db_path) as w:
        sids = register(w, model, tset, model_id=model_id, model_spec=model_spec)
        with w.run(JOB, model_id, config) as run_id:
            for layer in tset.layer_ids:
                unit = f"layer-{layer}"
                if w.unit_done(JOB, scope, unit, chash):
                    continue
                rng = {"lo": make_fid(sids[layer], 0), "hi": make_fid(sids[layer] + 1, 0) - 1}
                rows = w.fetchall("SELECT explanation_id, fid, tokens FROM explanations WHERE method = 'weightlens' "
                                  "AND fid BETWEEN $lo AND $hi AND tokens IS NOT NULL AND len(tokens) > 0", rng)
                inserts = {}
                if rows:
                    vocab = vocab or vocab_strings(model)
                    expl, fids, terms = zip(*rows)
                    pf, pt = membership_pairs({f & 0xFFFFFFFF: t for f, t in zip(fids, terms)}, vocab)
                    scorer = TokenScorer(tset[layer].d_sae, pf, pt)
                    first = 1  # position 0 (BOS) is not scored, as it is not counted in statistics
                    with progress(f"scores layer {layer}", tokens.shape[0], "seq") as bar:
                        for _, batch in batches(tokens, cfg.batch_size):
                            run_encoders(model, tset, batch, [layer], lambda l, acts: scorer.update(
                                batch[:, first:].reshape(-1), acts[:, first:].reshape(-1, acts.shape[-1])))
                            bar.advance(batch.shape[0])
                    res = scorer.result()
                    idx = np.array(fids) & 0xFFFFFFFF
                    vals = [getattr(res, m).double().numpy()[idx] for m in METRICS]
                    n = len(rows)
                    params = json.dumps({"match": "stripped lower-case token string in the description terms",
                                         "skip_first": True, "layer": layer})
                    inserts["scores"] = pa.table({
                        "explanation_id": np.tile(np.array(expl), len(METRICS)), "fid": np.tile(np.array(fids), len(METRICS)),
                        "method": [cfg.method] * (n * len(METRICS)), "metric": np.repeat(METRICS, n),
                        "value": pa.array(np.concatenate(vals), from_pandas=True),
                        "data": [data] * (n * len(METRICS)), "params": [params] * (n * len(METRICS)),
                        "run_id": [run_id] * (n * len(METRICS))})
                    report["scored"] += n
                w.write_unit(job=JOB, scope=scope, unit=unit, chash=chash, run_id=run_id, inserts=inserts,
                             deletes=[("DELETE FROM scores WHERE method = $method AND data = $data AND fid BETWEEN $lo AND $hi",
                                       {**rng, "method": cfg.method, "data": data})])
                report["layers_written"] += 1
    return report
