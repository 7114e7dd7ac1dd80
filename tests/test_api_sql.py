"""`atlas sql`: read-only SQL on an atlas, refusals with clear errors, CSV and Parquet written by atlas."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import duckdb
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def atlas(synthetic_atlas):
    return synthetic_atlas("tiny-sql")


@pytest.mark.parametrize(
    "statement, expected",
    [
        ("DELETE FROM models", "read-only mode"),
        ("CREATE TABLE x AS SELECT 1", "read-only mode"),
        ("ATTACH '/tmp/other.duckdb' AS o", "file system operations are disabled"),
        ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
        ("COPY (SELECT 1) TO '/tmp/atlas-out.csv'", "file system operations are disabled"),
        ("SET enable_external_access = true", "configuration has been locked"),
        ("INSTALL httpfs", "disabled"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_sql_refuses_writes_files_and_settings(cli, atlas, statement, expected):
    proc = cli("sql", "--db", str(atlas[1]), statement, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("/tmp/atlas-out.csv").exists()


def test_sql_prints_a_table_and_writes_csv_and_parquet(cli, atlas, tmp_path):
    work, current = atlas
    query = "SELECT public_id, layer, description, frequency FROM feature_summary WHERE layer = 1 ORDER BY fid"
    shown = cli("sql", "--db", str(current), "SELECT layer, n_features FROM coverage_per_layer ORDER BY layer").stdout
    assert re.search(r"│ 3\s+│ 64\s+│", shown)
    out_csv, out_pq = tmp_path / "out.csv", tmp_path / "out.parquet"
    proc = cli("sql", "--db", str(current), query, "--csv", str(out_csv), "--parquet", str(out_pq))
    assert "64 rows" in proc.stdout
    with duckdb.connect(str(work), read_only=True) as con:
        want = (
            con.execute(query).fetch_arrow_table()
            if hasattr(con, "fetch_arrow_table")
            else con.sql(query).to_arrow_table()
        )
    assert pq.read_table(out_pq).to_pylist() == want.to_pylist()
    assert pacsv.read_csv(out_csv).column("public_id").to_pylist() == want.column("public_id").to_pylist()


def test_sql_time_limit(cli, atlas):
    proc = cli(
        "sql",
        "--db",
        str(atlas[1]),
        "--timeout-ms",
        "200",
        "SELECT sum(hash(i)) FROM range(100000000000) t(i)",
        check=False,
    )
    assert proc.returncode == 2 and "exceeded the time limit of 200 ms" in proc.stderr


def test_every_view_is_documented():
    views = dict(importlib.import_module("migrations.versions.0002_views").VIEWS)
    views["coverage_per_layer"] = importlib.import_module(
        "migrations.versions.0003_weightlens_profiles"
    ).COVERAGE_PER_LAYER
    doc = (REPO / "docs" / "sql.md").read_text()
    for name in views:
        assert f"### `{name}`" in doc, f"view {name} is not documented in docs/sql.md"
