"""The shard runner (ingest/shards.py) on the local executor: the manifest, reuse without compute,
a manifest of other parameters refused by name, a corrupt or missing shard file re-run."""

from __future__ import annotations

import json

import pytest

from atlas.config import WeightLensConfig
from ingest.shards import ExecutorConfig, ManifestMismatchError, table_hashes
from ingest.weightlens import run_weightlens
from tests.factories import random_transcoder_set

CFG = WeightLensConfig(input_z=3.0, output_z=3.5, edge_z=2.0, inherit_layers="all")
TABLES = ["feature_tokens", "feature_weightlens", "edges", "explanations", "source_metrics"]


@pytest.fixture(scope="module")
def tset(tiny_model):
    return random_transcoder_set(tiny_model, d_sae=24, seed=5, init="fan_in")


def _manifest(shard_dir):
    lines = (shard_dir / "manifest.jsonl").read_text().splitlines()
    return json.loads(lines[0]), [json.loads(l) for l in lines[1:]]


def test_manifest_entries_and_reuse_without_compute(tiny_model, tset, tmp_path):
    ex = ExecutorConfig(shard_dir=str(tmp_path / "shards"), keep_shards=True)
    a = run_weightlens(tiny_model, tset, tmp_path / "a.duckdb", CFG, model_id="tiny", executor=ex)
    assert a.run.computed == 2 and a.run.reused == 0
    header, entries = _manifest(tmp_path / "shards")
    assert header["job"] == "weightlens" and header["scope"] == "tiny/test"
    assert [e["unit"] for e in entries] == ["layer-0", "layer-1"]
    for e in entries:
        assert e["code_version"].startswith("0.1.0+") and set(e["seconds"]) == {"compute", "write"}
        assert set(e["files"]) == set(TABLES) and all(len(f["sha256"]) == 64 for f in e["files"].values())
    assert sum(e["files"][t]["rows"] for e in entries for t in TABLES) == sum(a.rows[t] for t in TABLES)
    # a second atlas from the same shards: nothing computed, the same rows
    b = run_weightlens(tiny_model, tset, tmp_path / "b.duckdb", CFG, model_id="tiny", executor=ex)
    assert b.run.computed == 0 and b.run.reused == 2
    assert table_hashes(tmp_path / "a.duckdb", TABLES) == table_hashes(tmp_path / "b.duckdb", TABLES)


def test_manifest_of_other_parameters_is_refused(tiny_model, tset, tmp_path):
    ex = ExecutorConfig(shard_dir=str(tmp_path / "shards"), keep_shards=True)
    run_weightlens(tiny_model, tset, tmp_path / "a.duckdb", CFG, model_id="tiny", executor=ex)
    before = (tmp_path / "shards" / "manifest.jsonl").read_text()
    other = WeightLensConfig(input_z=3.5, output_z=3.5, edge_z=2.0, inherit_layers="all")
    with pytest.raises(ManifestMismatchError, match="parameters"):
        run_weightlens(tiny_model, tset, tmp_path / "c.duckdb", other, model_id="tiny", executor=ex)
    assert (tmp_path / "shards" / "manifest.jsonl").read_text() == before  # nothing lost or changed


def test_corrupt_or_missing_shard_files_are_rerun_never_merged(tiny_model, tset, tmp_path):
    ex = ExecutorConfig(shard_dir=str(tmp_path / "shards"), keep_shards=True)
    run_weightlens(tiny_model, tset, tmp_path / "a.duckdb", CFG, model_id="tiny", executor=ex)
    _, entries = _manifest(tmp_path / "shards")
    files = {e["unit"]: e["files"] for e in entries}
    bad = tmp_path / "shards" / files["layer-0"]["edges"]["path"]
    bad.write_bytes(bad.read_bytes()[:-40] + b"\0" * 40)  # same size, other bytes
    (tmp_path / "shards" / files["layer-1"]["explanations"]["path"]).unlink()
    r = run_weightlens(tiny_model, tset, tmp_path / "b.duckdb", CFG, model_id="tiny", executor=ex)
    assert r.run.rerun_bad_files == 2 and r.run.computed == 2 and r.run.reused == 0
    assert table_hashes(tmp_path / "a.duckdb", TABLES) == table_hashes(tmp_path / "b.duckdb", TABLES)


def test_shard_files_are_deleted_once_every_unit_is_in_unless_kept(tiny_model, tset, tmp_path):
    run_weightlens(tiny_model, tset, tmp_path / "a.duckdb", CFG, model_id="tiny")
    assert not (tmp_path / "a.duckdb.shards").exists()  # files, manifest and folders
    run_weightlens(
        tiny_model, tset, tmp_path / "b.duckdb", CFG, model_id="tiny", executor=ExecutorConfig(keep_shards=True)
    )
    (kept,) = (tmp_path / "b.duckdb.shards").iterdir()
    assert (kept / "manifest.jsonl").exists()
    assert sorted(p.name for p in kept.glob("layer-*")) == ["layer-0", "layer-1"]
    own = tmp_path / "mine"  # a directory of the user's: only ours goes
    own.mkdir()
    (own / "notes.txt").write_text("keep me")
    run_weightlens(
        tiny_model, tset, tmp_path / "c.duckdb", CFG, model_id="tiny", executor=ExecutorConfig(shard_dir=str(own))
    )
    assert [p.name for p in own.iterdir()] == ["notes.txt"]


def test_an_interrupted_activations_run_resumes_from_its_parts_then_cleans_up(tiny_model, tset, tmp_path):
    """Activations shards are blocks of the text for every layer (one forward per batch), merged on
    the driver: a run interrupted after its first layer's unit resumes from the parts on disk without
    a forward, writes what an uninterrupted one-block run writes, and then deletes the parts."""
    import os
    from dataclasses import replace

    import torch

    from atlas import db
    from atlas.config import ActivationsConfig
    from bench.content_hash import table_hashes as all_hashes
    from ingest import activations

    tokens = torch.randint(0, 50000, (20, 12), generator=torch.Generator().manual_seed(0))
    cfg = ActivationsConfig(batch_size=8, n_samples=8, n_top=3, window_before=4, window_after=2)

    def run(path, c):
        return activations.run(path, tiny_model, tset, tokens, c, model_id="tiny", model_spec="random:tiny")

    run(tmp_path / "whole.duckdb", cfg)  # one block of 20 sequences
    forwards = []
    tiny_model.add_hook("hook_embed", lambda x, hook: forwards.append(x.shape[0]), is_permanent=True)
    path, blocks = tmp_path / "b.duckdb", replace(cfg, seqs_per_shard=5)  # rounded up to 8: 3 blocks
    try:
        os.environ[db.FAULT_ENV], os.environ[db.FAULT_MODE_ENV] = "1", "raise"
        with pytest.raises(db.InjectedFault):
            run(path, blocks)
        os.environ.pop(db.FAULT_ENV), os.environ.pop(db.FAULT_MODE_ENV)
        assert forwards == [8, 8, 4] + [8, 8, 4]  # the warm-up's batches, then each block's: both layers
        (shard_dir,) = (tmp_path / "b.duckdb.shards").iterdir()
        _, entries = _manifest(shard_dir)
        assert [e["unit"] for e in entries] == ["warmup-0-20", "seqs-0-8", "seqs-8-16", "seqs-16-20"]
        forwards.clear()
        rep = run(path, blocks)
    finally:
        os.environ.pop(db.FAULT_ENV, None), os.environ.pop(db.FAULT_MODE_ENV, None)
        tiny_model.reset_hooks(including_permanent=True)
    assert forwards == [] and rep["shards"]["computed"] == 0 and rep["shards"]["reused"] == 4
    assert rep["layers_done_before"] == 1 and rep["layers_written"] == 1
    assert not (tmp_path / "b.duckdb.shards").exists()
    assert all_hashes(path) == all_hashes(tmp_path / "whole.duckdb")
