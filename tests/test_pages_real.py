"""The pages and exports over an atlas made by the real jobs (activations, CircuitLens on a tiny random
model), not a synthetic one: real cluster summaries, histograms and examples render and export."""

from __future__ import annotations

import json

import duckdb
import httpx
import pytest
from test_circuitlens_jobs import ACFG, CCFG, SETUP, _with_virtual_edges
from test_pages import Tree, assert_safe, get
from test_viewer_export import CTFeature, NPActivation

from atlas import db
from atlas.publish import publish
from atlas.viewer_export import export
from tests.factories import REPO


@pytest.fixture(scope="module")
def real(tiny_model, tmp_path_factory):
    from ingest import activations, circuitlens

    root = tmp_path_factory.mktemp("real-atlas")
    work = root / "work.duckdb"
    db.upgrade(work)
    scope = {}
    exec(SETUP.format(repo=str(REPO), d_sae=12), scope)
    tset, tokens = scope["tset"], scope["tokens"]
    _with_virtual_edges(work, tiny_model, tset)
    activations.run(work, tiny_model, tset, tokens, ACFG, model_id="tiny", model_spec="random:tiny")
    circuitlens.run(work, tiny_model, tset, tokens, CCFG, model_id="tiny", model_spec="random:tiny")
    publish(work, root / "current.duckdb")
    with duckdb.connect(str(work), read_only=True) as con:
        clustered = con.execute(
            "SELECT i.public_id, count(*) FROM clusters c JOIN feature_ids i USING (fid) "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchone()
        hist = con.execute(
            "SELECT i.public_id FROM feature_stats s JOIN feature_ids i USING (fid) "
            "WHERE s.hist_counts IS NOT NULL AND list_sum(s.hist_counts) > 0 LIMIT 1"
        ).fetchone()
    return root / "current.duckdb", clustered, hist


def test_real_feature_page(real, api_server):
    link, (clustered, n_clusters), hist = real
    url = api_server(link)
    r = get(url, f"/feature/{clustered}")
    assert r.status_code == 200
    t = assert_safe(r)
    assert sum(1 for tag, a in t.tags if tag == "div" and a.get("class") == "cluster") == n_clusters
    assert sum(1 for tag, a in t.tags if tag == "div" and a.get("class") == "example") > 0
    d = get(url, f"/feature/{clustered}", format="json").json()
    assert all(c["members"] for c in d["clusters"]) and d["explanations"]
    for c in d["clusters"]:  # real summaries: upstream features linked by their public ids
        for u in c["summary"]["upstream"]:
            assert u["id"].startswith("tiny/") and get(url, f"/feature/{u['id']}").status_code == 200
    assert hist is not None  # the activations job stores histograms
    t = Tree(get(url, f"/feature/{hist[0]}").text)
    assert any(tag == "rect" and a.get("class") == "bar" for tag, a in t.tags)
    assert get(url, "/", format="json").json()["layers"][0]["n_features"] == 12
    assert httpx.get(f"{url}/circuit/drivers", params={"target": clustered, "format": "json"}).status_code == 200


def test_real_exports_validate(real, tmp_path):
    work = real[0].parent / "work.duckdb"  # the served copy is open in this process with the server's limits
    r = export(work, tmp_path / "ct", "circuit-tracer")
    assert r.features == 24
    for p in (tmp_path / "ct" / "features" / "tiny").glob("*.json"):
        if p.name != "index.json":
            CTFeature.model_validate_json(p.read_text())
    export(work, tmp_path / "np", "neuronpedia")
    for line in (tmp_path / "np" / "activations.jsonl").read_text().splitlines():
        NPActivation.model_validate(json.loads(line))
