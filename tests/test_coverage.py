"""Coverage counts defined once (coverage_per_layer, migration 0003) and how they relate; the upgrade keeps data."""

from __future__ import annotations

import duckdb
import pytest
import sqlalchemy

from atlas import db
from atlas.config import WeightLensConfig
from atlas.ids import make_fid
from tests.factories import random_transcoder_set


def _upgrade_to(path, revision: str) -> None:
    from alembic import command

    engine = sqlalchemy.create_engine(f"duckdb:///{path}")
    try:
        with engine.begin() as connection:
            cfg = db._alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def _one_source(con) -> None:
    con.execute("INSERT INTO models (model_id, loader, n_layers, d_model, d_vocab) VALUES ('m', 'random', 1, 8, 10)")
    con.execute(
        "INSERT INTO sources (sid, model_id, source_id, set_name, layer, d_in, d_out, d_sae, hook_in, "
        "hook_out, activation, format) VALUES (1, 'm', '0-s', 's', 0, 8, 8, 3, 'a', 'b', 'relu', 'x')"
    )
    # a revision-0002 file has no make_fid macro (migration 0004): the arithmetic is spelled out
    con.execute("INSERT INTO features SELECT (1::BIGINT << 32) + i, 1, 0, i FROM range(3) t(i)")


def test_upgrade_from_0002_keeps_rows_and_backfills(tmp_path):
    path = tmp_path / "old.duckdb"
    _upgrade_to(path, "0002")
    fid = make_fid(1, 0)
    with duckdb.connect(str(path)) as con:
        _one_source(con)
        # a validated feature whose raw description (one whitespace token) post-processes to no term
        con.execute(
            "INSERT INTO feature_weightlens VALUES ($f, true, NULL, 1, 0, [], 'r'), ($g, false, NULL, 0, 0, [], 'r')",
            {"f": fid, "g": fid + 1},
        )
        con.execute(
            "INSERT INTO feature_tokens VALUES ($f, 'input', 0, 5, ' ', 9.0, 6.0, true, 'r'), "
            "($f, 'description', 0, 5, ' ', NULL, NULL, NULL, 'r')",
            {"f": fid},
        )
        con.execute("INSERT INTO ingest_runs (run_id, job, config, status) VALUES ('r', 'weightlens', '{}', 'done')")
        con.execute("INSERT INTO source_metrics VALUES (1, 'weightlens', 'coverage', 0.33, NULL, '{}', 'r')")
        old = con.execute("SELECT n_described, n_validated FROM coverage_per_layer").fetchone()
    assert old == (0, 1)  # the bug: more validated than described
    db.upgrade(path)
    with duckdb.connect(str(path)) as con:
        assert con.execute(
            "SELECT fid, side, rank, token_id, token, score, zscore, validated, run_id "
            "FROM feature_tokens ORDER BY side"
        ).fetchall() == [
            (fid, "description", 0, 5, " ", None, None, None, "r"),
            (fid, "input", 0, 5, " ", 9.0, 6.0, True, "r"),
        ]
        assert con.execute(
            "SELECT fid - $f, n_description_tokens FROM feature_weightlens ORDER BY fid", {"f": fid}
        ).fetchall() == [(0, 1), (1, 0)]
        assert con.execute("SELECT profile FROM ingest_runs").fetchall() == [("atlas",)]
        assert con.execute(
            "SELECT n_described, n_validated, n_weightlens_explained, profile FROM coverage_per_layer"
        ).fetchone() == (1, 1, 0, "atlas")
        con.execute(
            "INSERT INTO feature_tokens VALUES ($f, 'input_negative', 0, 7, 'x', -9.0, -6.0, NULL, 'r')", {"f": fid}
        )
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO feature_tokens VALUES ($f, 'sideways', 0, 7, 'x', 0, 0, NULL, 'r')", {"f": fid})


@pytest.mark.parametrize("profile", ["atlas", "reference"])
def test_counts_nest_on_a_real_ingest(tiny_model, atlas_db, profile):
    from ingest.weightlens import run_weightlens

    tset = random_transcoder_set(tiny_model, d_sae=48, seed=5, init="fan_in")
    with __import__("torch").no_grad():
        for tc in tset:
            tc.sae.b_enc[:8] = -1000.0  # never fire: not described
    cfg = WeightLensConfig(profile=profile, family="gpt2", input_z=3.0, output_z=3.5, edge_z=2.0, edge_pool=40)
    run_weightlens(tiny_model, tset, atlas_db, cfg, model_id="tiny")
    with duckdb.connect(str(atlas_db), read_only=True) as con:
        rows = con.execute(
            "SELECT layer, n_features, n_described, n_validated, n_weightlens_explained, n_explained, "
            "profile FROM coverage_per_layer ORDER BY layer"
        ).fetchall()
        coverage = dict(
            con.execute(
                "SELECT s.layer, m.value FROM source_metrics m JOIN sources s USING (sid) WHERE m.metric = 'coverage'"
            ).fetchall()
        )
        # per feature: validated implies a non-empty raw description; an explanation implies validated
        assert (
            con.execute(
                "SELECT count(*) FROM feature_weightlens WHERE validated AND n_description_tokens = 0"
            ).fetchone()[0]
            == 0
        )
        assert (
            con.execute(
                "SELECT count(*) FROM explanations x JOIN feature_weightlens w USING (fid) "
                "WHERE x.method = 'weightlens' AND NOT (w.validated AND len(w.description) > 0)"
            ).fetchone()[0]
            == 0
        )
    assert len(rows) == 2
    for layer, n, described, validated, wl_explained, explained, prof in rows:
        assert wl_explained <= validated <= described <= n and wl_explained <= explained
        assert coverage[layer] == pytest.approx(validated / n)  # the stored metric is the same count
        assert prof == profile
    assert sum(r[3] for r in rows) > 0 and all(r[2] < r[1] for r in rows), rows  # both sides exercised
