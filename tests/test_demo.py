"""ingest/demo.py: the demo build end to end at tiny size (random:tiny, local text), and its re-run."""

from __future__ import annotations

import json
import logging

from tests.factories import tiny_train_config


def test_demo_builds_an_atlas_and_a_rerun_reuses_it(tmp_path, text_corpus, caplog):
    from atlas.config import CorpusConfig, DemoConfig
    from atlas.db import connect_readonly
    from ingest import demo

    corpus = CorpusConfig(source=str(text_corpus(n_docs=150, words_per_doc=200)), seq_len=32, heldout_fraction=0.2)
    cfg = DemoConfig(data_dir=tmp_path / "demo", model_id="tiny", serve=False)
    caplog.set_level(logging.INFO)  # the steps' progress lines are INFO records
    ctx = demo.build(cfg, tiny_train_config(), corpus)
    out = caplog.text
    caplog.clear()
    assert ctx.db_path == tmp_path / "demo" / "atlas.duckdb"
    con = connect_readonly(ctx.db_path)
    assert con.execute("SELECT model_id, n_layers FROM models").fetchall() == [("tiny", 2)]
    assert con.execute("SELECT source_id FROM sources ORDER BY layer").fetchall() == [("0-tiny-tc",), ("1-tiny-tc",)]
    n_metrics = con.execute("SELECT count(*) FROM source_metrics").fetchone()[0]
    assert n_metrics > 0
    con.close()
    assert sorted(ctx.transcoders.layer_ids) == [0, 1]
    for name, _ in demo.STEPS:
        assert f"demo: {name} done" in out and name in ctx.timings
    counts = _counts(ctx.db_path)
    d_sae = tiny_train_config().d_sae
    assert counts["feature_weightlens"] == 2 * d_sae  # WeightLens: every feature
    assert counts["feature_stats"] > 0 and counts["examples"] > 0  # activations
    assert counts["era_edges"] == counts["twera_edges"] == counts["virtual_edges"]  # ERA/TWERA per edge
    assert {"weightlens", "activations", "circuitlens"} <= counts["done_jobs"]
    timings = json.loads((tmp_path / "demo" / "demo_timings.json").read_text())
    assert timings["transcoders"] > 0

    trained, units = _trained_files(ctx), _units(ctx.db_path)
    ctx2 = demo.build(cfg, tiny_train_config(), corpus)  # everything cached: no retraining
    assert "train layer" not in caplog.text
    assert _trained_files(ctx2) == trained  # the same transcoder files, none rewritten
    assert _units(ctx.db_path) == units  # no unit of any job was run again
    con = connect_readonly(ctx.db_path)
    assert con.execute("SELECT count(*) FROM source_metrics").fetchone()[0] == n_metrics
    con.close()
    again = _counts(ctx.db_path)  # nothing duplicated by the re-run
    assert {k: v for k, v in again.items() if k != "done_jobs"} == {k: v for k, v in counts.items() if k != "done_jobs"}


def _trained_files(ctx) -> dict:
    """{path: (size, mtime_ns)} of every file of the demo's trained transcoders (one directory per layer)."""
    from pathlib import Path

    dirs = [Path(tc.uri) for tc in ctx.transcoders]
    assert dirs and all(d.is_dir() for d in dirs)
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for d in dirs for f in sorted(d.rglob("*")) if f.is_file()}


def _units(path) -> list:
    """Every finished unit of the analysis jobs, with the run that did it and when (the transcoders step
    registers its trained layers again on every build; that nothing was retrained is _trained_files)."""
    from atlas.db import connect_readonly

    con = connect_readonly(path)
    rows = con.execute(
        "SELECT job, scope, unit, config_hash, run_id, completed_at FROM ingest_units "
        "WHERE job <> 'train-transcoders' ORDER BY ALL"
    ).fetchall()
    con.close()
    assert rows
    return rows


def _counts(path) -> dict:
    from atlas.db import connect_readonly

    con = connect_readonly(path)
    q = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
    out = {t: q(f"SELECT count(*) FROM {t}") for t in ("feature_weightlens", "feature_stats", "examples", "clusters")}
    for kind in ("virtual", "era", "twera"):
        out[f"{kind}_edges"] = q(f"SELECT count(*) FROM edges WHERE kind = '{kind}'")
    out["done_jobs"] = {r[0] for r in con.execute("SELECT job FROM ingest_runs WHERE status = 'done'").fetchall()}
    con.close()
    return out
