"""The WeightLens ingest job end to end into a real DuckDB file: rows, coverage, idempotence, resume, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest

from atlas import db
from atlas.config import WeightLensConfig
from ingest.weightlens import run_weightlens
from tests.conftest import REPO
from tests.factories import random_transcoder_set

# Low thresholds so that a random tiny model has tokens, edges and inheritance in every table.
CFG = WeightLensConfig(input_z=3.0, output_z=3.5, edge_z=2.0, inherit_layers="all")
TABLES = ["feature_tokens", "feature_weightlens", "edges", "explanations", "source_metrics"]


def _counts(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def _fingerprint(path):
    """Everything WeightLens wrote, without run ids: equal across runs that computed the same thing."""
    with duckdb.connect(str(path), read_only=True) as con:
        return (
            con.execute(
                "SELECT fid, side, rank, token_id, token, validated FROM feature_tokens ORDER BY ALL"
            ).fetchall(),
            con.execute("SELECT src_fid, dst_fid, variant, round(weight, 9) FROM edges ORDER BY ALL").fetchall(),
            con.execute(
                "SELECT fid, validated, n_input_tokens, n_upstream, description FROM feature_weightlens ORDER BY fid"
            ).fetchall(),
        )


def test_ingest_loads_every_table_and_reruns_are_idempotent(tiny_model, atlas_db):
    tset = random_transcoder_set(tiny_model, d_sae=48, seed=5, init="fan_in")
    report = run_weightlens(tiny_model, tset, atlas_db, CFG, model_id="tiny")
    assert report.layers_computed == [0, 1] and report.layers_skipped == []
    counts = _counts(atlas_db)
    assert counts["feature_weightlens"] == 96 and counts["source_metrics"] == 2
    assert all(counts[t] > 0 for t in TABLES), counts
    first = _fingerprint(atlas_db)
    with duckdb.connect(str(atlas_db), read_only=True) as con:
        sides = dict(con.execute("SELECT side, count(*) FROM feature_tokens GROUP BY 1").fetchall())
        assert set(sides) == {"input", "input_negative", "promoted", "suppressed", "description"}
        # negative input tokens: bottom-pool outliers, negative score and z, never validated
        assert (
            con.execute(
                "SELECT count(*) FROM feature_tokens WHERE side = 'input_negative' AND NOT "
                "(score < 0 AND zscore < -3.0 AND validated IS NULL)"
            ).fetchone()[0]
            == 0
        )
        # n_description_tokens = the stored raw description's length, per feature
        assert (
            con.execute(
                "SELECT count(*) FROM feature_weightlens w WHERE n_description_tokens != (SELECT "
                "count(*) FROM feature_tokens t WHERE t.fid = w.fid AND t.side = 'description')"
            ).fetchone()[0]
            == 0
        )
        assert con.execute("SELECT DISTINCT profile FROM ingest_runs").fetchall() == [("atlas",)]
        assert con.execute("SELECT DISTINCT profile FROM source_metrics").fetchall() == [("atlas",)]
        # coverage stored per layer = share of validated features
        cov = con.execute(
            "SELECT s.layer, m.value, (SELECT avg(w.validated::INT) FROM feature_weightlens w "
            "WHERE fid_source(w.fid) = s.sid) FROM source_metrics m JOIN sources s USING (sid) "
            "ORDER BY 1"
        ).fetchall()
        assert [c[0] for c in cov] == [0, 1] and all(c[1] == pytest.approx(c[2]) for c in cov)
        assert report.coverage == {c[0]: c[1] for c in cov}
        # edges point from layer 0 to layer 1 features, raw variant, with a relative contribution in (0, 1)
        bad = con.execute(
            "SELECT count(*) FROM edges e JOIN features s ON s.fid = e.src_fid "
            "JOIN features d ON d.fid = e.dst_fid WHERE NOT (s.layer < d.layer AND e.weight > 0 "
            "AND e.rel_contribution > 0 AND e.rel_contribution < 1 AND e.variant = 'raw')"
        ).fetchone()[0]
        assert bad == 0
        # an explanation for every validated feature with terms, none for the rest
        assert (
            con.execute(
                "SELECT count(*) FROM explanations x JOIN feature_weightlens w USING (fid) WHERE NOT w.validated"
            ).fetchone()[0]
            == 0
        )
        # the input side's validated flags are what the description starts from
        assert (
            con.execute(
                "SELECT count(*) FROM feature_tokens i JOIN features f USING (fid) WHERE f.layer = 0 "
                "AND i.side = 'input' AND i.validated AND NOT EXISTS (SELECT 1 FROM feature_tokens d "
                "WHERE d.fid = i.fid AND d.side = 'description' AND d.token_id = i.token_id)"
            ).fetchone()[0]
            == 0
        )

    again = run_weightlens(tiny_model, tset, atlas_db, CFG, model_id="tiny")  # done: skipped
    assert again.layers_skipped == [0, 1] and _counts(atlas_db) == counts
    other = WeightLensConfig(**{**CFG.__dict__, "edge_z": 1.0})  # recomputes, replaces
    run_weightlens(tiny_model, tset, atlas_db, other, model_id="tiny")
    assert _counts(atlas_db)["edges"] > counts["edges"]
    with db.AtlasWriter(atlas_db) as w:  # force a recompute of CFG
        w.execute("DELETE FROM ingest_units WHERE job = 'weightlens'")
    run_weightlens(tiny_model, tset, atlas_db, CFG, model_id="tiny")
    assert _counts(atlas_db) == counts and _fingerprint(atlas_db) == first


JOB_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from atlas.config import WeightLensConfig
from atlas.models import load_model
from ingest.weightlens import run_weightlens
from tests.factories import random_transcoder_set
model = load_model("random:tiny")
tset = random_transcoder_set(model, d_sae=48, seed=5, init="fan_in")
cfg = WeightLensConfig(input_z=3.0, output_z=3.5, edge_z=2.0, inherit_layers="all")
r = run_weightlens(model, tset, sys.argv[1], cfg, model_id="tiny")
print("computed", r.layers_computed, "skipped", r.layers_skipped)
"""


@pytest.mark.slow  # ~24 s: two subprocess runs (measured with --durations)
def test_a_killed_run_resumes_at_the_next_layer_with_the_same_result(tiny_model, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "a.duckdb")],
        env={**env, db.FAULT_ENV: "1"},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:  # layer 0 whole, layer 1 absent
        assert con.execute("SELECT unit FROM ingest_units").fetchall() == [("layer-0",)]
        assert con.execute(
            "SELECT DISTINCT f.layer FROM feature_weightlens JOIN features f USING (fid)"
        ).fetchall() == [(0,)]
    resumed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "a.duckdb")], env=env, capture_output=True, text=True, check=True
    )
    assert "computed [1] skipped [0]" in resumed.stdout
    # the same job in one go (in this process: the same model and transcoders) gives identical rows
    tset = random_transcoder_set(tiny_model, d_sae=48, seed=5, init="fan_in")
    run_weightlens(tiny_model, tset, tmp_path / "b.duckdb", CFG, model_id="tiny")
    assert _fingerprint(tmp_path / "a.duckdb") == _fingerprint(tmp_path / "b.duckdb")


def test_cli_help_and_bad_settings(cli, tmp_path):
    out = cli("ingest", "weightlens", "--help").stdout
    for option in ("--model", "--transcoders", "--db", "--input-z", "--edge-variant", "--set"):
        assert option in out
    bad = cli(
        "ingest",
        "weightlens",
        "--model",
        "random:tiny",
        "--transcoders",
        "x:y",
        "--db",
        str(tmp_path / "a.duckdb"),
        "--set",
        "edge_scope=sideways",
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert all(part in bad.stderr for part in ("field 'edge_scope'", "'sideways'", "'all_layers', 'per_layer'"))
    bad = cli(
        "ingest",
        "weightlens",
        "--model",
        "nonsense",
        "--transcoders",
        "x:y",
        "--db",
        str(tmp_path / "a.duckdb"),
        check=False,
    )
    assert bad.returncode == 2 and "nonsense" in bad.stderr
    assert not (tmp_path / "a.duckdb").exists()  # nothing was created


def test_cli_end_to_end_with_saelens_files(cli, tiny_model, tmp_path):
    tset = random_transcoder_set(tiny_model, d_sae=48, seed=5, init="fan_in")
    for tc in tset:
        tc.sae.save_model(str(tmp_path / "tc" / f"layer_{tc.layer}"))
    weightlens = (
        "ingest",
        "weightlens",
        "--model",
        "random:tiny",
        "--transcoders",
        f"saelens:{tmp_path / 'tc'}",
        "--db",
        str(tmp_path / "cli.duckdb"),
        "--input-z",
        "3",
        "--set",
        "edge_z=2",
    )
    proc = cli(*weightlens)
    assert "coverage" in proc.stdout and _counts(tmp_path / "cli.duckdb")["feature_weightlens"] == 96
    again = json.loads(cli(*weightlens, "--json").stdout)
    assert again["layers_computed"] == [] and again["layers_skipped"] == [0, 1]  # resumed: nothing redone
    assert set(again["coverage"]) == {"0", "1"} and all(0 <= v <= 1 for v in again["coverage"].values())


def test_cli_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; import cli.main; "
        "r = CliRunner().invoke(cli.main.app, ['ingest', 'weightlens', '--help']); "
        "assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules and 'ingest.weightlens' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
