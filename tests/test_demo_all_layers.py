"""ingest/demo.py over EVERY layer of a 4-layer model ('all'): rows for every layer and every layer pair,
nothing duplicated by a re-run; bad layer lists and builds too big for memory refused before any work."""

from __future__ import annotations

import json

import pytest

from atlas.errors import AtlasError
from tests.factories import tiny_train_config


@pytest.fixture
def corpus(text_corpus):
    from atlas.config import CorpusConfig

    return CorpusConfig(source=str(text_corpus(n_docs=150, words_per_doc=200)), seq_len=32, heldout_fraction=0.2)


def _per_layer(path) -> dict:
    from atlas.db import connect_readonly

    con = connect_readonly(path)
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    out = {
        "sources": q("SELECT layer, source_id FROM sources ORDER BY layer"),
        "weightlens": q(
            "SELECT f.layer, count(*) FROM feature_weightlens w JOIN features f USING (fid) GROUP BY 1 ORDER BY 1"
        ),
        "stats": q("SELECT f.layer, count(*) FROM feature_stats s JOIN features f USING (fid) GROUP BY 1 ORDER BY 1"),
        "virtual_pairs": q(
            "SELECT a.layer, b.layer, count(*) FROM edges e JOIN features a ON a.fid = e.src_fid "
            "JOIN features b ON b.fid = e.dst_fid WHERE e.kind = 'virtual' GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "metrics": q(
            "SELECT s.layer, count(*) FROM source_metrics m JOIN sources s USING (sid) "
            "WHERE m.method = 'reconstruction' GROUP BY 1 ORDER BY 1"
        ),
        "edge_dupes": q(
            "SELECT count(*) FROM (SELECT src_fid, dst_fid, kind, variant FROM edges GROUP BY ALL HAVING count(*) > 1)"
        )[0][0],
    }
    con.close()
    return out


def test_demo_over_every_layer_and_rerun(tmp_path, corpus):
    from atlas.config import DemoConfig
    from ingest import demo
    from ingest.transcoders import RECON_KEYS

    cfg = DemoConfig(data_dir=tmp_path / "demo", model_id="tiny4", serve=False, circuitlens_features=1)
    train = tiny_train_config(model="random:tiny4", layers=(), n_tokens=2048, epochs=2)  # () = 'all'
    ctx = demo.build(cfg, train, corpus)
    assert sorted(ctx.transcoders.layer_ids) == [0, 1, 2, 3]
    first = _per_layer(ctx.db_path)
    d_sae = train.d_sae
    assert first["sources"] == [(l, f"{l}-tiny-tc") for l in range(4)]
    assert first["weightlens"] == [(l, d_sae) for l in range(4)]  # every feature of every layer
    assert [r[0] for r in first["stats"]] == [0, 1, 2, 3]
    pairs = [(a, b) for a, b, n in first["virtual_pairs"] if n > 0]
    # WeightLens (atlas profile) ran on every pair: one pool per downstream feature over ALL earlier layers'
    # features, so a pair keeps edges only where it holds outliers; every downstream layer gets some.
    assert set(pairs) <= {(a, b) for a in range(4) for b in range(a + 1, 4)}
    assert {b for _, b in pairs} == {1, 2, 3} and {a for a, _ in pairs} >= {0, 2}
    assert first["metrics"] == [(l, len(RECON_KEYS)) for l in range(4)]  # quality stored for every layer
    assert first["edge_dupes"] == 0
    quality = json.loads((tmp_path / "demo" / "transcoder_quality.json").read_text())
    assert [r["layer"] for r in quality] == [0, 1, 2, 3]
    assert ctx.quality == quality
    # what `atlas demo` prints: the summary, or with --json the report as one JSON object
    from cli.common import report_json
    from cli.demo import demo_report, demo_summary

    assert "transcoder quality on held-out text" in demo_summary(ctx) and f"built {ctx.db_path} in" in demo_summary(ctx)
    report = json.loads(report_json(demo_report(ctx)))
    assert report["db_path"] == str(ctx.db_path) and report["quality"] == quality
    assert set(report["timings"]) >= {"transcoders", "weightlens", "activations", "total"}

    demo.build(cfg, train, corpus)  # the re-run duplicates nothing
    assert _per_layer(ctx.db_path) == first


def test_layers_outside_the_model_refused(tmp_path, corpus):
    from atlas.config import DemoConfig
    from ingest import demo

    cfg = DemoConfig(data_dir=tmp_path / "demo", model_id="tiny4", serve=False)
    with pytest.raises(AtlasError, match=r"layers \[4, 7\] do not exist: the model has layers 0..3"):
        demo.build(cfg, tiny_train_config(model="random:tiny4", layers=(1, 4, 7)), corpus)
    assert not (tmp_path / "demo" / "atlas.duckdb").exists()  # nothing half-written


def test_build_too_big_for_memory_refused_before_training(tmp_path, corpus):
    from atlas.config import DemoConfig
    from ingest import demo

    cfg = DemoConfig(data_dir=tmp_path / "demo", model_id="tiny4", serve=False)
    huge = tiny_train_config(model="random:tiny4", layers=(), d_sae=2**26)  # 4 layers x 64 x 64M features
    with pytest.raises(AtlasError, match=r"needs about .* GiB"):
        demo.build(cfg, huge, corpus)
    assert not (tmp_path / "demo" / "atlas.duckdb").exists()


def test_cli_layers_all_ranges_and_errors(cli, tmp_path, corpus):
    from cli.common import train_config

    assert train_config("all", None, None, False, None).layers == ()
    assert train_config("0-2,5,5", None, None, False, None).layers == (0, 1, 2, 5)
    bad = cli(
        "train-transcoders",
        "--model",
        "random:tiny4",
        "--layers",
        "2-x",
        env={"ATLAS_CACHE": str(tmp_path)},
        check=False,
    )
    assert bad.returncode == 2 and "--layers '2-x'" in bad.stderr and "Traceback" not in bad.stderr
    out = cli(
        "train-transcoders",
        "--model",
        "random:tiny4",
        "--layers",
        "9",
        "--corpus",
        corpus.source,
        "--out",
        str(tmp_path / "tc"),
        env={"ATLAS_CACHE": str(tmp_path / "c")},
        check=False,
    )
    assert out.returncode != 0 and "layers [9] do not exist" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "tc").exists()


KILLED_BUILD = """
import logging, sys
from pathlib import Path
from atlas.config import CorpusConfig, DemoConfig
from ingest import demo
from tests.factories import tiny_train_config
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
corpus = CorpusConfig(source=sys.argv[2], seq_len=32, heldout_fraction=0.2)
cfg = DemoConfig(data_dir=Path(sys.argv[1]), model_id="tiny4", serve=False, circuitlens_features=1)
demo.build(cfg, tiny_train_config(model="random:tiny4", layers=(), n_tokens=2048, epochs=2), corpus)
"""


@pytest.mark.slow
def test_a_build_killed_during_its_analysis_resumes_to_the_uninterrupted_atlas(tmp_path, corpus):
    """SIGKILL in the middle of the all-layer build (once its CircuitLens step has started), then the
    same build again: the atlas equals an uninterrupted build's, table by table (content hashes)."""
    import signal
    import subprocess
    import sys

    from atlas.config import DemoConfig
    from bench.content_hash import table_hashes
    from ingest import demo
    from tests.factories import REPO

    text = str(corpus.source)
    train = tiny_train_config(model="random:tiny4", layers=(), n_tokens=2048, epochs=2)
    whole = demo.build(
        DemoConfig(data_dir=tmp_path / "whole", model_id="tiny4", serve=False, circuitlens_features=1), train, corpus
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path / "killed"), text],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:  # the step's first line: WeightLens and activations are in the file
        if "demo: circuitlens ..." in line:
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=600) == -signal.SIGKILL, "the build ended before it could be killed"
    cfg = DemoConfig(data_dir=tmp_path / "killed", model_id="tiny4", serve=False, circuitlens_features=1)
    resumed = demo.build(cfg, train, corpus)
    assert table_hashes(resumed.db_path) == table_hashes(whole.db_path)
