"""The schema is built by migrations; newer schemas are refused; units are atomic and resumable."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from atlas import db
from atlas.errors import NotFoundError, SchemaError
from atlas.ids import FeatureRef, make_fid, split_fid

EXPECTED_TABLES = {
    "models",
    "sources",
    "features",
    "source_metrics",
    "feature_weightlens",
    "feature_tokens",
    "edges",
    "feature_stats",
    "examples",
    "attributions",
    "clusters",
    "cluster_members",
    "explanations",
    "scores",
    "ingest_runs",
    "ingest_units",
}


def _tables(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
        }


def test_migrations_create_every_table_at_head(atlas_db):
    assert EXPECTED_TABLES <= _tables(atlas_db)
    with duckdb.connect(str(atlas_db), read_only=True) as con:
        assert db.current_revision(con) == db.head_revision()


def test_upgrade_is_idempotent(atlas_db):
    before = _tables(atlas_db)
    assert db.upgrade(atlas_db) == db.head_revision()
    assert _tables(atlas_db) == before


def test_newer_schema_is_refused_with_a_clear_error(atlas_db):
    with duckdb.connect(str(atlas_db)) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(SchemaError, match="newer version of atlas"):
        db.connect_readonly(atlas_db)
    with pytest.raises(SchemaError, match="newer version of atlas"):
        db.upgrade(atlas_db)
    with pytest.raises(SchemaError, match="newer version of atlas"):
        db.AtlasWriter(atlas_db)


def test_a_file_without_schema_is_not_an_atlas(tmp_path):
    path = tmp_path / "plain.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(SchemaError, match="not an atlas database"):
        db.connect_readonly(path)
    with pytest.raises(NotFoundError):
        db.connect_readonly(tmp_path / "missing.duckdb")


def test_readonly_connection_refuses_writes_files_and_settings(atlas_db):
    con = db.connect_readonly(atlas_db)
    for sql in [
        "DELETE FROM models",
        "CREATE TABLE x (a INT)",
        "SET threads = 1",
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY models TO '/tmp/atlas-leak.csv'",
        "ATTACH '/tmp/other.duckdb'",
        "INSTALL httpfs",
    ]:
        with pytest.raises(duckdb.Error):
            con.execute(sql)


def test_the_server_turns_late_materialization_off_and_atlas_sql_keeps_it(atlas_db, tmp_path):
    setting = "SELECT current_setting('late_materialization_max_rows')"
    con = db.connect_readonly(atlas_db)
    assert con.execute(setting).fetchall()[0][0] > 0
    con.close()
    served = tmp_path / "served.duckdb"
    served.write_bytes(atlas_db.read_bytes())  # a second file: DuckDB keeps one instance per path
    con = db.connect_readonly(served, db.ReadOnlyLimits(late_materialization=False))
    assert con.execute(setting).fetchall()[0][0] == 0
    assert con.cursor().execute(setting).fetchall()[0][0] == 0  # per-thread cursors inherit it


def _source_row(**over):
    row = dict(
        model_id="m",
        source_id="0-t",
        set_name="t",
        layer=0,
        d_in=4,
        d_out=4,
        d_sae=16,
        hook_in="blocks.0.ln2.hook_normalized",
        hook_out="blocks.0.hook_mlp_out",
        activation="relu",
        has_skip=False,
        format="saelens-dir",
    )
    row.update(over)
    return row


def test_sources_register_their_features_once(atlas_db):
    with db.AtlasWriter(atlas_db) as w:
        w.upsert_model(dict(model_id="m", loader="random", n_layers=1, d_model=4, d_vocab=10))
        sid = w.upsert_source(_source_row())
        assert w.upsert_source(_source_row(uri="again")) == sid
        fids = [r[0] for r in w.fetchall("SELECT fid FROM features ORDER BY fid")]
        assert fids == [make_fid(sid, i) for i in range(16)]
        assert split_fid(fids[5]) == (sid, 5)
        with pytest.raises(SchemaError, match="width 16"):
            w.upsert_source(_source_row(d_sae=32))


def test_feature_ref_parsing():
    assert str(FeatureRef.parse("gpt2-small/8-tres-dc/12")) == "gpt2-small/8-tres-dc/12"
    for bad in ["gpt2-small/8", "a/b/c", "//1", ""]:
        with pytest.raises(NotFoundError):
            FeatureRef.parse(bad)


def _edges(n, value):
    return pa.table(
        {
            "src_fid": list(range(n)),
            "dst_fid": [1] * n,
            "kind": ["virtual"] * n,
            "variant": ["raw"] * n,
            "weight": [float(value)] * n,
        }
    )


def test_write_unit_replaces_rows_and_marks_done(atlas_db):
    with db.AtlasWriter(atlas_db) as w:
        run = w.start_run("test", "m", {"a": 1})
        h = db.config_hash({"a": 1})
        assert not w.unit_done("test", "m", "u0", h)
        for value in (1.0, 2.0):  # re-running a unit replaces, never duplicates
            w.write_unit(
                job="test",
                scope="m",
                unit="u0",
                chash=h,
                run_id=run,
                deletes=[("DELETE FROM edges WHERE dst_fid = $d", {"d": 1})],
                inserts={"edges": _edges(5, value)},
            )
        assert w.unit_done("test", "m", "u0", h)
        assert not w.unit_done("test", "m", "u0", db.config_hash({"a": 2}))
        assert w.fetchall("SELECT count(*), min(weight) FROM edges") == [(5, 2.0)]


def test_a_failing_unit_leaves_nothing(atlas_db):
    with db.AtlasWriter(atlas_db) as w:
        run = w.start_run("test", "m", {})
        bad_tokens = pa.table({"fid": [1], "side": ["sideways"], "rank": [0], "token": ["x"]})  # violates CHECK
        with pytest.raises(duckdb.ConstraintException):
            w.write_unit(
                job="test",
                scope="m",
                unit="u0",
                chash="h",
                run_id=run,
                inserts={"edges": _edges(3, 1.0), "feature_tokens": bad_tokens},
            )
        assert w.fetchall("SELECT count(*) FROM edges") == [(0,)]
        assert not w.unit_done("test", "m", "u0", "h")


KILL_SCRIPT = """
import sys, pyarrow as pa
from atlas import db
w = db.AtlasWriter(sys.argv[1])
run = w.start_run("crash", "m", {})
for u in range(4):
    if w.unit_done("crash", "m", f"u{u}", "h"):
        continue
    t = pa.table({"src_fid": list(range(1000)), "dst_fid": [u] * 1000, "kind": ["virtual"] * 1000,
                  "variant": ["raw"] * 1000, "weight": [1.0] * 1000})
    w.write_unit(job="crash", scope="m", unit=f"u{u}", chash="h", run_id=run,
                 deletes=[("DELETE FROM edges WHERE dst_fid = $u", {"u": u})], inserts={"edges": t})
w.finish_run(run)
w.close()
"""


def test_a_job_killed_mid_unit_leaves_no_partial_unit_and_resumes(atlas_db, tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, db.FAULT_ENV: "2", "PYTHONPATH": str(db.MIGRATIONS_DIR.parent)}
    killed = subprocess.run([sys.executable, str(script), str(atlas_db)], env=env, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    with duckdb.connect(str(atlas_db), read_only=True) as con:
        # two whole units committed; the third was inside its transaction when the process died
        assert con.execute("SELECT dst_fid, count(*) FROM edges GROUP BY 1 ORDER BY 1").fetchall() == [
            (0, 1000),
            (1, 1000),
        ]
        assert con.execute("SELECT count(*) FROM ingest_units").fetchone()[0] == 2
    env.pop(db.FAULT_ENV)
    subprocess.run([sys.executable, str(script), str(atlas_db)], env=env, check=True, capture_output=True)
    with duckdb.connect(str(atlas_db), read_only=True) as con:
        assert con.execute("SELECT dst_fid, count(*) FROM edges GROUP BY 1 ORDER BY 1").fetchall() == [
            (u, 1000) for u in range(4)
        ]
        statuses = con.execute("SELECT status FROM ingest_runs ORDER BY started_at").fetchall()
        assert statuses[-1] == ("done",)


def test_a_fresh_writer_can_insert_at_once(atlas_db):
    """DuckDB 2.0 refuses register() while a result is half-read; the writer never leaves one."""
    with db.AtlasWriter(atlas_db) as w:
        assert w.insert("scores", pa.table({"fid": [1], "method": ["m"], "metric": ["x"], "value": [1.0]})) == 1
        assert w.fetchall("SELECT count(*) FROM scores") == [(1,)]


def test_a_process_with_torch_that_migrated_exits_without_nanobind_leak_reports(tmp_path):
    """torch and duckdb_engine's dialect in one process made nanobind report duckdb's constants as
    "leaked" at exit (CPython's finalization order); the migration path clears it at exit."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import torch\nfrom atlas import db\ndb.upgrade(sys.argv[1])\nprint(db.upgrade(sys.argv[1]))\n"
    res = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code, str(tmp_path / "a.duckdb")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == db.head_revision()
    assert "nanobind" not in res.stderr, res.stderr
