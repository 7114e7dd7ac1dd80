"""The API benchmark runs end to end at a tiny scale and reports every figure it promises
(bench/bench_api.py; the figures themselves are measured, never asserted, docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http_load import have_wrk

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = ["lookup", "topk_upstream", "drivers_via", "drivers_via_layer", "paths_3hop"]


@pytest.mark.parametrize(
    "client",
    [
        "httpx",
        pytest.param(
            "wrk",
            marks=pytest.mark.skipif(
                not have_wrk(), reason="wrk is not installed (apt install wrk); the benchmark then uses httpx"
            ),
        ),
    ],
)
def test_bench_api_reports_every_question_for_both_sides(tmp_path, client):
    out = tmp_path / "figures.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_api",
            "--out",
            str(tmp_path / "atlas"),
            "--layers",
            "4",
            "--d-sae",
            "64",
            "--k-up",
            "6",
            "--n",
            "12",
            "--clients",
            "4",
            "--seconds",
            "1",
            "--client",
            client,
            "--json",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.read_text())
    assert figures["atlas"]["layers"] == 4 and figures["atlas"]["edges"] > 0
    assert "httpx" in figures["reference"]["empty_request"]
    for q in QUESTIONS:
        fig = figures["questions"][q]
        for mode in ("api_1", "sql_1", "api_4", "sql_4"):
            assert fig[mode]["requests"] > 0 and 0 < fig[mode]["p50_ms"] <= fig[mode]["p99_ms"], (q, mode)
        assert fig["api_1"]["client"] == client and fig["sql_1"]["client"] == "in-process"
        assert fig["api_over_sql_p50_1"] > 0
