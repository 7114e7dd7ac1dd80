"""The pages benchmark runs end to end at a tiny scale and reports every figure it promises
(bench/bench_pages.py; the figures are measured, never asserted, docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.bench_pages import PAGES

REPO = Path(__file__).resolve().parent.parent


def test_bench_pages_reports_every_page_both_ways(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_pages",
            "--out",
            str(tmp_path / "atlas"),
            "--layers",
            "4",
            "--d-sae",
            "64",
            "--k-up",
            "6",
            "--n",
            "8",
            "--json",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    figures = json.loads(out.read_text())
    assert figures["atlas"]["layers"] == 4 and figures["atlas"]["edges"] > 0
    assert (
        set(figures["pages"])
        == set(PAGES)
        == {"index", "search_token", "search_text", "feature", "drivers_via", "drivers_layer", "paths"}
    )
    for page, fig in figures["pages"].items():
        for mode in ("server_side", "http"):
            assert fig[mode]["n"] == 8 and 0 < fig[mode]["p50_ms"] <= fig[mode]["p99_ms"], (page, mode)
    for q in ("feature_lookup", "empty_query"):
        assert figures["api"][q]["n"] == 8
    assert figures["reference"]["duckdb_scan_rows_per_s"] > 0 and len(figures["reference"]["load_avg"]) == 3
