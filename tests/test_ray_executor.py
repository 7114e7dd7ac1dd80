"""The Ray executor on a real local Ray cluster (loopback, 2 CPUs): every job's atlas equals the local
executor's (per-table content hashes), a worker SIGKILLed mid-shard loses nothing and duplicates
nothing, a killed driver resumes, and an unreachable address is a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import duckdb
import pytest

from atlas import db
from atlas.config import WeightLensConfig
from ingest import activations, circuitlens, scoring
from ingest.ray_executor import RayClusterError
from ingest.shards import KILL_ENV, ExecutorConfig, table_hashes
from ingest.weightlens import run_weightlens
from tests.conftest import REPO
from tests.test_circuitlens_jobs import ACFG, CCFG, D_SAE, SETUP

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(900)

WCFG = WeightLensConfig(input_z=3.0, output_z=3.5, edge_z=2.0, inherit_layers="all")
TABLES = [
    "feature_tokens",
    "feature_weightlens",
    "edges",
    "explanations",
    "source_metrics",
    "feature_stats",
    "examples",
    "attributions",
    "clusters",
    "cluster_members",
    "scores",
    "ingest_units",
]


@pytest.fixture(scope="module")
def cluster():
    """One Ray head for the module: 2 CPUs, loopback, no dashboard; its GCS address for other drivers."""
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    info = ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False
    )
    yield info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def parts(tiny_model):
    scope = {}
    exec(SETUP.format(repo=str(REPO), d_sae=D_SAE), scope)
    return tiny_model, scope["tset"], scope["tokens"]


def _all_jobs(path, parts, ex):
    """Every job; on Ray the activations job runs in blocks of 8 sequences (3 blocks for the 20),
    locally in one block: the atlas is the same whatever the blocks and wherever they run."""
    model, tset, tokens = parts
    db.upgrade(path)
    kw = dict(model_id="tiny", executor=ex)
    run_weightlens(model, tset, path, WCFG, model_spec="random:tiny", **kw)
    acfg = replace(ACFG, seqs_per_shard=8) if ex.kind == "ray" else ACFG
    activations.run(path, model, tset, tokens, acfg, model_spec="random:tiny", **kw)
    rep = circuitlens.run(path, model, tset, tokens, CCFG, model_spec="random:tiny", **kw)
    scoring.run(path, model, tset, tokens, model_spec="random:tiny", **kw)
    return rep


@pytest.fixture(scope="module")
def local_hashes(parts, tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "atlas.duckdb"
    rep = _all_jobs(path, parts, ExecutorConfig())
    assert rep["features"] > 0
    with duckdb.connect(str(path), read_only=True) as con:  # every table has rows to compare
        assert all(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] > 0 for t in TABLES)
    return table_hashes(path, TABLES)


def test_an_unreachable_address_is_a_clear_error(parts, tmp_path):
    model, tset, _ = parts
    with pytest.raises(RayClusterError, match="no Ray cluster reachable at '127.0.0.1:9'"):
        run_weightlens(
            model,
            tset,
            tmp_path / "a.duckdb",
            WCFG,
            model_id="tiny",
            executor=ExecutorConfig(kind="ray", address="127.0.0.1:9"),
        )


def test_every_job_on_ray_equals_local(cluster, parts, local_hashes, tmp_path):
    rep = _all_jobs(tmp_path / "atlas.duckdb", parts, ExecutorConfig(kind="ray", workers=2, keep_shards=True))
    assert rep["max_completeness_gap"] < 1e-4
    workers = {
        json.loads(l)["worker"]
        for m in (tmp_path / "atlas.duckdb.shards").glob("*/manifest.jsonl")
        for l in m.read_text().splitlines()[1:]
    }
    assert len(workers) >= 2 and not any(w.endswith(f":{os.getpid()}") for w in workers)  # computed by Ray actors
    assert table_hashes(tmp_path / "atlas.duckdb", TABLES) == local_hashes


def test_a_worker_killed_mid_shard_loses_and_duplicates_nothing(cluster, parts, local_hashes, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ENV, f"layer-1:{marker}")  # the worker computing layer-1 dies once
    _all_jobs(tmp_path / "atlas.duckdb", parts, ExecutorConfig(kind="ray", workers=2))
    assert marker.exists()  # it did die (SIGKILL), and Ray retried
    assert table_hashes(tmp_path / "atlas.duckdb", TABLES) == local_hashes


def test_a_killed_driver_resumes_to_the_same_atlas(cluster, parts, local_hashes, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from atlas.models import load_model
from ingest.shards import ExecutorConfig
from tests.factories import random_transcoder_set
from tests.test_ray_executor import _all_jobs
import torch
model = load_model("random:tiny")
tset = random_transcoder_set(model, d_sae={D_SAE}, seed=3)
tokens = torch.randint(0, 50000, (20, 12), generator=torch.Generator().manual_seed(0))
_all_jobs(sys.argv[1], (model, tset, tokens), ExecutorConfig(kind="ray", address={cluster!r}))
print("finished")
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    path = tmp_path / "atlas.duckdb"
    killed = subprocess.run(
        [sys.executable, str(script), str(path)],
        env={**env, db.FAULT_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == 137, killed.stderr[-3000:]  # died loading weightlens layer-1
    done = subprocess.run(
        [sys.executable, str(script), str(path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-3000:]
    assert table_hashes(path, TABLES) == local_hashes


def test_a_cluster_running_other_code_is_refused(cluster, parts, tmp_path, monkeypatch):
    """The workers' probe reports the code they import; a driver with other code is refused by name."""
    import ingest.shards

    model, tset, _ = parts
    monkeypatch.setattr(ingest.shards, "code_version", lambda: "0.0.0+other")
    with pytest.raises(RayClusterError, match="another version of atlas"):
        run_weightlens(
            model,
            tset,
            tmp_path / "a.duckdb",
            WCFG,
            model_id="tiny",
            executor=ExecutorConfig(kind="ray", address=cluster),
        )


def test_a_cluster_without_atlas_is_refused(cluster, tmp_path):
    """A driver whose cluster's workers cannot import atlas (no project on their path, no installed
    copy: the editable install's finder is removed at their start-up by a sitecustomize on the
    PYTHONPATH the driver forwards, and the driver's working directory holds no project) is refused
    by name, before any shard is planned."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path "
        "if '__editable__' not in getattr(f, '__module__', '')]\n"
    )
    script = tmp_path / "probe.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(REPO)!r})            # the driver has the project; its workers will not
from ingest.ray_executor import RayClusterError, check_cluster, connect
connect({cluster!r}, None)
try:
    print("version", check_cluster())
except RayClusterError as exc:
    print("refused:", exc)
""")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused: the Ray cluster's workers cannot run atlas" in out.stdout, out.stdout[-3000:]
    assert "No module named 'ingest'" in out.stdout, out.stdout[-3000:]
