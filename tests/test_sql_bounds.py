"""`atlas sql` streams (bounded memory before --max-rows), prints data as data (never rich markup)
and runs one statement only (issue 16, item 6)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

PEAK_RSS = """
import resource, subprocess, sys
p = subprocess.run([sys.executable, "-m", "cli", *sys.argv[1:]], capture_output=True, text=True)
print(__import__("json").dumps({"rc": p.returncode, "out": p.stdout, "err": p.stderr,
                                "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@pytest.fixture(scope="module")
def atlas(synthetic_atlas):
    return synthetic_atlas("tiny-sql")[1]


def test_a_large_result_is_streamed_and_stops_at_max_rows(atlas):
    """10M rows of 40 bytes (~560 MB of Arrow when materialized, as the old code did) print 3 rows
    from a process whose peak memory stays far below that."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_RSS,
            "sql",
            "--db",
            str(atlas),
            "SELECT i, md5(i::VARCHAR) AS h FROM range(10000000) t(i)",
            "--max-rows",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    res = json.loads(proc.stdout)
    assert res["rc"] == 0, res["err"]
    assert "c81e728d9d4c2f636f067f89cc14862c" in res["out"]  # md5('2'), the third row
    assert "more than 3 rows, 3 shown" in res["out"]
    assert "c4ca4238a0b923820dcc509a6f75849b" in res["out"] and "eccbc87e4b5ce2fe28308fd9f2a7baf3" not in res["out"]
    assert res["peak_mb"] < 350, res["peak_mb"]


def test_files_get_every_row_streamed(cli, atlas, tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = cli(
        "sql",
        "--db",
        str(atlas),
        "SELECT i FROM range(200000) t(i)",
        "--csv",
        str(tmp_path / "a.csv"),
        "--parquet",
        str(tmp_path / "a.parquet"),
    ).stdout
    assert "200000 rows -> " in out
    assert pacsv.read_csv(tmp_path / "a.csv").num_rows == 200000
    assert pq.read_table(tmp_path / "a.parquet").column("i").to_pylist()[-1] == 199999


def test_values_are_never_markup(cli, atlas):
    out = cli(
        "sql", "--db", str(atlas), "SELECT '[/' AS tok, '[bold]x[/bold]' AS b, ':smile:' AS e, '[red]' AS \"[c]\""
    ).stdout
    assert "[/" in out and "[bold]x[/bold]" in out and ":smile:" in out and "[red]" in out and "[c]" in out


@pytest.mark.parametrize("text", ["SELECT 1; SELECT 2", "SELECT 1; DROP TABLE features"])
def test_more_than_one_statement_is_refused(cli, atlas, text):
    proc = cli("sql", "--db", str(atlas), text, check=False)
    assert proc.returncode == 2 and "one SQL statement at a time: the text holds 2" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
