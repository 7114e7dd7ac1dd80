"""The activations, circuitlens and scores jobs end to end into a real DuckDB file: contents, resume
after a kill, idempotent re-runs, an explainer on loopback, and clear errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch

from atlas import db
from atlas.config import ActivationsConfig, CircuitLensConfig, CorpusConfig
from atlas.corpus import Corpus, check_source
from atlas.errors import AssetError, AtlasError
from atlas.ids import fid_range, make_fid, split_fid
from ingest import activations, circuitlens, scoring
from ingest.registry import register
from tests.factories import REPO

ACFG = ActivationsConfig(batch_size=8, n_samples=8, n_top=3, window_before=4, window_after=2)
CCFG = CircuitLensConfig(batch_size=32, min_samples=3, min_examples=4, n_output_positions=2)
D_SAE = 12
SETUP = """
import sys, torch
sys.path.insert(0, {repo!r})
from tests.factories import random_transcoder_set
from atlas.models import load_model
model = load_model("random:tiny")
tset = random_transcoder_set(model, d_sae={d_sae}, seed=3)
tokens = torch.randint(0, 50000, (20, 12), generator=torch.Generator().manual_seed(0))
"""


@pytest.fixture(scope="module")
def parts(tiny_model):
    scope = {}
    exec(SETUP.format(repo=str(REPO), d_sae=D_SAE), scope)
    return tiny_model, scope["tset"], scope["tokens"]


def _with_virtual_edges(path, model, tset):
    V = (tset[0].W_dec @ tset[1].W_enc).detach()
    src, dst = (V.abs() > 0.25).nonzero(as_tuple=True)
    with db.AtlasWriter(path) as w:
        sids = register(w, model, tset, model_id="tiny", model_spec="random:tiny")
        w.insert(
            "edges",
            pa.table(
                {
                    "src_fid": [make_fid(sids[0], int(i)) for i in src],
                    "dst_fid": [make_fid(sids[1], int(j)) for j in dst],
                    "kind": ["virtual"] * len(src),
                    "variant": ["raw"] * len(src),
                    "weight": V[src, dst].double().numpy(),
                }
            ),
        )
    return sids, src, dst, V


def _q(path, sql):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_jobs_end_to_end(parts, atlas_db):
    model, tset, tokens = parts
    sids, src, dst, V = _with_virtual_edges(atlas_db, model, tset)
    rep = activations.run(atlas_db, model, tset, tokens, ACFG, model_id="tiny", model_spec="random:tiny")
    assert rep["layers_written"] == 2 and rep["era_edges"] == len(src) > 0
    _, cache = model.run_with_cache(tokens)
    A1 = tset[1].encode(cache[tset[1].hook_in]).detach()[:, 1:]  # [docs, pos, d_sae]
    A0 = tset[0].encode(cache[tset[0].hook_in]).detach()[:, 1:]
    stats = _q(
        atlas_db,
        "SELECT fid, n_active, frequency, max_act FROM feature_stats WHERE fid >= {} AND fid < {} ORDER BY fid".format(
            *fid_range(sids[1])
        ),
    )
    assert [r[1] for r in stats] == (A1 > 0).sum((0, 1)).tolist()
    assert stats[0][2] == pytest.approx(float((A1[..., 0] > 0).float().mean()))
    # examples: windows agree with the corpus and the activation sits at the example's position
    for _fid, pos, start, toks, acts, act, strs in _q(
        atlas_db, "SELECT fid, pos, window_start, tokens, acts, activation, token_strs FROM examples"
    ):
        assert toks[pos - start] > 0 and acts[pos - start] == pytest.approx(act) and len(strs) == len(toks)
    n_ex = _q(atlas_db, "SELECT kind, count(*) FROM examples GROUP BY 1 ORDER BY 1")
    assert n_ex[0][0] == "quantile" and n_ex[0][1] > 0 and n_ex[1][0] == "top"
    # ERA / TWERA next to every virtual edge, same src/dst/variant, TWERA as the dense formula says
    rows = _q(
        atlas_db,
        "SELECT e.src_fid, e.dst_fid, e.variant, t.weight FROM edges e JOIN edges t USING (src_fid, dst_fid, variant) "
        "WHERE e.kind = 'virtual' AND t.kind = 'twera' ORDER BY 1, 2",
    )
    assert len(rows) == len(src) == len(_q(atlas_db, "SELECT 1 FROM edges WHERE kind = 'era'"))
    s, d = split_fid(rows[0][0]).idx, split_fid(rows[0][1]).idx
    a_i, a_j = A0[..., s].double(), A1[..., d].double()
    ref = float((a_i * a_j).mean() / a_j.mean() * V[s, d]) if a_j.sum() > 0 else 0.0
    assert rows[0][3] == pytest.approx(ref, rel=1e-5, abs=1e-9)

    rep = circuitlens.run(atlas_db, model, tset, tokens, CCFG, model_id="tiny", model_spec="random:tiny")
    assert rep["units_written"] == 2 and rep["features"] > 0 and rep["max_completeness_gap"] < 1e-4
    kinds = dict(_q(atlas_db, "SELECT kind, count(*) FROM attributions GROUP BY 1"))
    assert {"bias", "error", "feature", "head", "token", "logit"} <= set(kinds)
    assert _q(
        atlas_db, "SELECT count(*) FROM attributions a JOIN examples e USING (example_id) WHERE a.fid <> e.fid"
    ) == [(0,)]
    # every clustered feature has one merged description and one per cluster; members are its examples
    per_feature = _q(
        atlas_db,
        "SELECT fid, count(*) FILTER (cluster_label IS NULL), count(*) FILTER (cluster_label IS NOT NULL) "
        "FROM explanations WHERE method LIKE 'circuitlens%' GROUP BY 1",
    )
    assert len(per_feature) == rep["features"] and all(r[1] == 1 and r[2] >= 1 for r in per_feature)
    assert _q(
        atlas_db, "SELECT count(*) FROM cluster_members m JOIN examples e USING (example_id) WHERE m.fid <> e.fid"
    ) == [(0,)]
    assert (
        _q(atlas_db, "SELECT sum(n_examples) FROM clusters")[0][0]
        == _q(atlas_db, "SELECT count(*) FROM cluster_members")[0][0]
    )
    summary = json.loads(_q(atlas_db, "SELECT summary FROM clusters LIMIT 1")[0][0])
    assert {"target_tokens", "source_tokens", "upstream", "heads", "output_tokens", "snippets"} <= set(summary)

    # re-runs are no-ops; a scores run writes precision / recall / AUROC next to weight descriptions
    again = activations.run(atlas_db, model, tset, tokens, ACFG, model_id="tiny", model_spec="random:tiny")
    assert again["layers_done_before"] == 2 and again["layers_written"] == 0
    assert (
        circuitlens.run(atlas_db, model, tset, tokens, CCFG, model_id="tiny", model_spec="random:tiny")["units_written"]
        == 0
    )
    words = [model.tokenizer.decode([int(t)]) for t in tokens[:3, 1:4].flatten()]
    with db.AtlasWriter(atlas_db) as w:
        w.insert(
            "explanations",
            pa.table(
                {
                    "fid": [make_fid(sids[1], 0), make_fid(sids[1], 1)],
                    "method": ["weightlens"] * 2,
                    "text": ["a", "b"],
                    "tokens": [words[:4], words[4:]],
                }
            ),
        )
    rep = scoring.run(atlas_db, model, tset, tokens, model_id="tiny", model_spec="random:tiny")
    assert rep["scored"] == 2
    got = dict(((f, m), v) for f, m, v in _q(atlas_db, "SELECT fid_index(fid), metric, value FROM scores"))
    member = np.isin(tokens[:, 1:].numpy(), [int(t) for t in tokens[:3, 1:4].flatten()[:4]])
    active = A1[..., 0].numpy() > 0
    assert got[(0, "n_member")] == member.sum() and got[(0, "n_active")] == active.sum()
    assert got[(0, "precision")] == pytest.approx((member & active).sum() / member.sum())


def test_explainer_model_writes_cluster_descriptions(parts, atlas_db, chat_server):
    model, tset, tokens = parts
    url, seen = chat_server
    activations.run(atlas_db, model, tset, tokens, ACFG, model_id="tiny", model_spec="random:tiny")
    cfg = CircuitLensConfig(
        batch_size=32,
        min_samples=3,
        min_examples=4,
        n_output_positions=1,
        explainer_url=url,
        explainer_model="tiny-explainer",
    )
    rep = circuitlens.run(atlas_db, model, tset, tokens, cfg, model_id="tiny", model_spec="random:tiny", layers=[1])
    rows = _q(atlas_db, "SELECT text, params FROM explanations WHERE method = 'circuitlens-llm' AND cluster_label >= 0")
    assert rep["clusters"] == len(rows) == len(seen) > 0
    params = json.loads(rows[0][1])
    assert rows[0][0] == "river banks" and params["explainer_model"] == "tiny-explainer"
    assert seen[0][1]["messages"][1]["content"] in params["prompt"] and params["eps"] == 0.5


def test_corpus_mismatch_and_bad_inputs_are_clear(parts, atlas_db, tmp_path):
    model, tset, tokens = parts
    activations.run(atlas_db, model, tset, tokens, ACFG, model_id="tiny", model_spec="random:tiny")
    with pytest.raises(AtlasError, match="does not match the corpus"):
        circuitlens.run(atlas_db, model, tset, torch.flip(tokens, [0]), CCFG, model_id="tiny", model_spec="random:tiny")
    with pytest.raises(AtlasError, match="empty"):
        activations.run(atlas_db, model, tset, tokens[:0], ACFG, model_id="tiny", model_spec="random:tiny")
    empty, bad, short = tmp_path / "empty.txt", tmp_path / "bad.jsonl", tmp_path / "short.txt"
    empty.write_text("  \n")
    bad.write_text('{"text": "fine"}\n{"txt": 1}\n')
    short.write_text("Hello world")

    def tokens_of(path, seq_len=64):
        cfg = CorpusConfig(source=str(path), seq_len=seq_len, heldout_fraction=0.0)
        check_source(cfg)
        return Corpus.for_model(model, cfg).tokens("all", None)

    with pytest.raises(AssetError, match="holds no text"):
        tokens_of(empty)
    with pytest.raises(AssetError, match="bad.jsonl:2 has no 'text' field"):
        tokens_of(bad)
    with pytest.raises(AssetError, match="has no text of at least 64 tokens"):
        tokens_of(short)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"The river bank number {i} is wide."}) for i in range(20)))
    t = tokens_of(good, 16)
    assert t.shape[1] == 16 and (t[:, 0] == 50256).all()


def test_cli_reports_bad_text_in_one_line(cli, tmp_path):
    proc = cli(
        "ingest",
        "activations",
        str(tmp_path / "a.duckdb"),
        "--model",
        "random:tiny",
        "--transcoders",
        "x",
        "--text",
        str(tmp_path / "missing.txt"),
        check=False,
    )
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"error: no corpus file or directory at '{tmp_path / 'missing.txt'}'"
    )


def test_cli_jobs_read_any_corpus_source_end_to_end(cli, parts, tmp_path):
    """weightlens -> activations (a directory of .txt and .jsonl) -> circuitlens -> scores (.parquet),
    all through the command line on saved SAELens files."""
    import pyarrow.parquet as pq

    model, tset, _ = parts
    for tc in tset:
        tc.sae.save_model(str(tmp_path / "tc" / f"layer_{tc.layer}"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(f"The river bank {i} was wide and the boat was slow." for i in range(30)))
    (corpus / "b.jsonl").write_text(
        "\n".join(json.dumps({"text": f"Rain fell on hill {i} all night."}) for i in range(30))
    )
    pq.write_table(
        pa.table({"text": [f"A held-out line about bank {i}." for i in range(40)]}), tmp_path / "heldout.parquet"
    )
    dbp, common = tmp_path / "cli.duckdb", ["--model", "random:tiny", "--transcoders", f"saelens:{tmp_path / 'tc'}"]
    cli("ingest", "weightlens", *common, "--db", str(dbp), "--input-z", "2", "--set", "edge_z=2")
    acts = cli(
        "ingest",
        "activations",
        str(dbp),
        *common,
        "--text",
        str(corpus),
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--n-samples",
        "6",
        "--n-top",
        "3",
        "--json",
    )
    report = json.loads(acts.stdout)  # one JSON object, the job's report
    assert report["layers_written"] == len(tset) and report["shards"]["computed"] == len(tset)
    cli("ingest", "circuitlens", str(dbp), *common, "--text", str(corpus), "--seq-len", "16", "--min-samples", "2")
    cli("ingest", "scores", str(dbp), *common, "--text", str(tmp_path / "heldout.parquet"), "--seq-len", "16")
    (n_tokens,) = _q(dbp, "SELECT DISTINCT n_tokens FROM feature_stats")[0]
    tokens = Corpus.for_model(model, CorpusConfig(source=str(corpus), seq_len=16, heldout_fraction=0.0)).tokens(
        "all", None
    )
    assert n_tokens == tokens.shape[0] * 15  # the whole directory, both files (statistics skip BOS)
    assert _q(dbp, "SELECT count(*) FROM examples")[0][0] > 0
    assert _q(dbp, "SELECT count(DISTINCT fid) FROM attributions")[0][0] > 0
    assert _q(dbp, "SELECT count(*) FROM scores WHERE data LIKE '%heldout.parquet%'")[0][0] > 0


KILL = (
    SETUP
    + """
from atlas.config import ActivationsConfig, CircuitLensConfig, CorpusConfig
from atlas.corpus import Corpus, check_source
from ingest import activations, circuitlens
import json
cfg = ActivationsConfig(batch_size=8, n_samples=8, n_top=3, window_before=4, window_after=2)
ids = dict(model_id="tiny", model_spec="random:tiny")
print(json.dumps(activations.run(sys.argv[1], model, tset, tokens, cfg, **ids)), flush=True)
if sys.argv[2] == "circuitlens":
    ccfg = CircuitLensConfig(batch_size=32, min_samples=3, min_examples=4, n_output_positions=1, features_per_unit=4)
    print(json.dumps(circuitlens.run(sys.argv[1], model, tset, tokens, ccfg, **ids)))
"""
)


def _reports(proc) -> list[dict]:
    """The job reports the script printed, one JSON object a line."""
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_jobs_resume_after_a_kill(atlas_db, tmp_path):
    """Three runs of activations + circuitlens (blocks of 4 features): killed inside activations, killed
    again inside circuitlens, then finished; each resumes where the last stopped."""
    script = tmp_path / "job.py"
    script.write_text(KILL.format(repo=str(REPO), d_sae=D_SAE))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(fault):
        e = {**env, db.FAULT_ENV: str(fault)} if fault is not None else env
        return subprocess.run(
            [sys.executable, str(script), str(atlas_db), "circuitlens"], env=e, capture_output=True, text=True
        )

    killed = run(1)  # dies inside the layer-1 unit
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert _q(atlas_db, "SELECT unit FROM ingest_units WHERE job = 'activations'") == [("layer-0",)]
    assert _q(atlas_db, "SELECT count(*) FROM feature_stats")[0][0] == D_SAE  # layer 0 whole, layer 1 nothing

    killed = run(2)  # activations layer 1; circuitlens (its own writer, own count) 2 units
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert _reports(killed)[0]["layers_done_before"] == 1
    assert _q(atlas_db, "SELECT count(*) FROM feature_stats")[0][0] == 2 * D_SAE
    assert len(_q(atlas_db, "SELECT unit FROM ingest_units WHERE job = 'circuitlens'")) == 2
    partial = _q(atlas_db, "SELECT count(DISTINCT fid) FROM clusters")[0][0]

    done = run(None)
    assert done.returncode == 0, done.stderr[-2000:]
    acts, circuits = _reports(done)
    assert acts["layers_done_before"] == 2 and circuits["units_done_before"] == 2
    n_units = len(_q(atlas_db, "SELECT unit FROM ingest_units WHERE job = 'circuitlens'"))
    assert n_units == len(_q(atlas_db, "SELECT DISTINCT fid // 4 FROM examples WHERE kind = 'quantile'")) > 2
    assert _q(atlas_db, "SELECT count(DISTINCT fid) FROM clusters")[0][0] > partial
    assert _q(
        atlas_db, "SELECT count(*) FROM (SELECT example_id FROM cluster_members GROUP BY 1 HAVING count(*) > 1)"
    ) == [(0,)]
    # a killed run has no chance to record anything: the next run marks it failed ('interrupted: ...');
    # a job with nothing left starts no run
    statuses = _q(atlas_db, "SELECT job, status, error LIKE 'interrupted: %' FROM ingest_runs ORDER BY started_at")
    assert statuses == [
        ("activations", "failed", True),
        ("activations", "done", None),
        ("circuitlens", "failed", True),
        ("circuitlens", "done", None),
    ]


def test_undescribed_only_analyses_the_most_active_features_weightlens_does_not_describe(parts, atlas_db):
    """The paper hands features WeightLens cannot describe to CircuitLens: with ``undescribed_only``
    the job takes the N most often active features of each layer among those not validated."""
    model, tset, tokens = parts
    activations.run(atlas_db, model, tset, tokens, ACFG, model_id="tiny", model_spec="random:tiny")
    sid = _q(atlas_db, "SELECT sid FROM sources WHERE layer = 1")[0][0]
    by_activity = [  # layer 1's features with examples, most often active first
        r[0]
        for r in _q(
            atlas_db,
            f"SELECT fid FROM feature_stats WHERE fid_source(fid) = {sid} AND fid IN (SELECT fid FROM examples) "
            "ORDER BY n_active DESC, fid",
        )
    ]
    described = by_activity[:2]  # the two most active ones are "described"
    with db.AtlasWriter(atlas_db) as w:
        w.insert(
            "feature_weightlens",
            pa.table({"fid": described, "validated": [True, True], "n_input_tokens": [1, 1], "n_upstream": [0, 0]}),
        )
    cfg = CircuitLensConfig(
        batch_size=32,
        min_samples=3,
        min_examples=4,
        n_output_positions=1,
        max_features_per_layer=2,
        undescribed_only=True,
    )
    circuitlens.run(atlas_db, model, tset, tokens, cfg, model_id="tiny", model_spec="random:tiny")
    got = {r[0] for r in _q(atlas_db, f"SELECT DISTINCT fid FROM attributions WHERE fid_source(fid) = {sid}")}
    assert got == set(by_activity[2:4])  # the next two, none of the described


def test_examples_per_feature_keeps_at_most_n_evenly_spaced_per_feature():
    ex = {"idx": np.array([3] * 10 + [5] * 2), "example_id": np.arange(12), "window": [[i] for i in range(12)]}
    got = circuitlens.spread(ex, 4)
    assert got["example_id"].tolist() == [0, 3, 6, 9, 10, 11]  # 4 of feature 3's ten, both of feature 5's
    assert got["window"] == [[0], [3], [6], [9], [10], [11]]
