"""The GraphQL API through a real uvicorn server on loopback, each answer checked against SQL
computed directly on the same synthetic atlas (the working file the published copy came from)."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import httpx
import pytest

from atlas.ids import make_fid

M = "gpt2-small"


@pytest.fixture(scope="module")
def atlas(synthetic_atlas):
    return synthetic_atlas("tiny")


@pytest.fixture(scope="module")
def url(atlas, api_server):
    return api_server(atlas[1])


@pytest.fixture(scope="module")
def sql(atlas):
    con = duckdb.connect(str(atlas[0]), read_only=True)
    yield lambda q, p=None: con.execute(q, p or {}).fetchall()
    con.close()


def gql(url: str, query: str, **variables) -> dict:
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def fid_of(public_id: str, sql) -> int:
    model, source, idx = public_id.split("/")
    sid = sql("SELECT sid FROM sources WHERE model_id = $m AND source_id = $s", {"m": model, "s": source})[0][0]
    return make_fid(sid, int(idx))


def pid(fid: int, sql) -> str:
    return sql("SELECT public_id FROM feature_ids WHERE fid = $f", {"f": fid})[0][0]


def test_importing_the_app_does_not_import_torch():
    code = "import sys, api.app, api.schema, cli.main; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_schema_by_introspection(url):
    data = gql(url, "{ __schema { queryType { fields { name args { name } } } types { name fields { name } } } }")
    roots = {f["name"]: {a["name"] for a in f["args"]} for f in data["__schema"]["queryType"]["fields"]}
    assert {
        "feature",
        "features",
        "drivers",
        "paths",
        "tokenReaders",
        "tokenWriters",
        "stats",
        "neighbourhoodGraph",
        "pathGraph",
    } <= set(roots)
    assert {"target", "via", "viaLayer", "kind", "sign", "topK"} <= roots["drivers"]
    assert {
        "model",
        "layer",
        "described",
        "descriptionContains",
        "inputToken",
        "outputToken",
        "first",
        "after",
    } <= roots["features"]
    types = {t["name"]: {f["name"] for f in t["fields"] or []} for t in data["__schema"]["types"]}
    assert {
        "id",
        "description",
        "inputTokens",
        "outputTokens",
        "stats",
        "examples",
        "clusters",
        "explanations",
        "scores",
        "upstream",
        "downstream",
    } <= types["Feature"]
    assert {"source", "target", "weight", "kind"} <= types["Edge"]
    assert {"hasNextPage", "endCursor"} <= types["PageInfo"]


def test_feature_lookup_matches_sql(url, sql):
    # a described, explained feature of layer 2
    fid = sql("SELECT x.fid FROM explanations x JOIN features f USING (fid) WHERE f.layer = 2 ORDER BY fid LIMIT 1")[0][
        0
    ]
    public = pid(fid, sql)
    f = gql(
        url,
        """query($id: ID!) { feature(id: $id) { id layer index description stats { frequency maxAct }
        inputTokens(first: 50) { token rank } outputTokens(side: PROMOTED) { token }
        examples(first: 1) { activation } clusters { label }
        explanations { text scores { metric } } scores { value } } }""",
        id=public,
    )["feature"]
    assert f["id"] == public and f["layer"] == 2
    desc, freq = sql(
        "SELECT array_to_string(w.description, ', '), s.frequency FROM feature_weightlens w "
        "JOIN feature_stats s USING (fid) WHERE fid = $f",
        {"f": fid},
    )[0]
    assert f["description"] == desc and f["stats"]["frequency"] == pytest.approx(freq)
    assert [t["token"] for t in f["inputTokens"]] == [
        r[0]
        for r in sql("SELECT token FROM feature_tokens WHERE fid = $f AND side = 'input' ORDER BY rank", {"f": fid})
    ]
    assert [t["token"] for t in f["outputTokens"]] == [
        r[0]
        for r in sql("SELECT token FROM feature_tokens WHERE fid = $f AND side = 'promoted' ORDER BY rank", {"f": fid})
    ]
    assert f["examples"][0]["activation"] == pytest.approx(
        sql("SELECT max(activation) FROM examples WHERE fid = $f", {"f": fid})[0][0]
    )
    assert sorted(c["label"] for c in f["clusters"]) == [
        r[0] for r in sql("SELECT label FROM clusters WHERE fid = $f ORDER BY label", {"f": fid})
    ]
    assert [x["text"] for x in f["explanations"]] == [
        r[0] for r in sql("SELECT text FROM explanations WHERE fid = $f ORDER BY explanation_id", {"f": fid})
    ]
    assert len(f["scores"]) == sql("SELECT count(*) FROM scores WHERE fid = $f", {"f": fid})[0][0] > 0


@pytest.mark.parametrize("upstream", [True, False])
def test_edges_top_k_with_filters_match_sql(url, sql, upstream):
    public = f"{M}/2-synth/7"
    fid = fid_of(public, sql)
    field, this, other = ("upstream", "dst_fid", "src_fid") if upstream else ("downstream", "src_fid", "dst_fid")
    got = gql(
        url,
        f"""query($id: ID!) {{ feature(id: $id) {{
        all: {field}(topK: 5) {{ weight source {{ id }} target {{ id }} }}
        pos: {field}(sign: POSITIVE, minWeight: 0.01, topK: 100) {{ weight }}
        era: {field}(kind: ERA, topK: 100) {{ weight kind }}
        lay: {field}(layers: [{1 if upstream else 3}], topK: 100) {{ source {{ layer }} target {{ layer }} }} }} }}""",
        id=public,
    )["feature"]
    want = sql(
        f"SELECT {other}, weight FROM edges WHERE {this} = $f AND kind = 'virtual' "
        f"ORDER BY abs(weight) DESC, {other} LIMIT 5",
        {"f": fid},
    )
    end = "source" if upstream else "target"
    assert [(e[end]["id"], e["weight"]) for e in got["all"]] == [(pid(o, sql), pytest.approx(w)) for o, w in want]
    assert all(e["target" if upstream else "source"]["id"] == public for e in got["all"])
    n_pos = sql(f"SELECT count(*) FROM edges WHERE {this} = $f AND kind = 'virtual' AND weight >= 0.01", {"f": fid})
    assert len(got["pos"]) == n_pos[0][0] and all(e["weight"] >= 0.01 for e in got["pos"])
    n_era = sql(f"SELECT count(*) FROM edges WHERE {this} = $f AND kind = 'era'", {"f": fid})[0][0]
    assert len(got["era"]) == n_era and all(e["kind"] == "era" for e in got["era"])
    layer = 1 if upstream else 3
    n_lay = sql(
        f"SELECT count(*) FROM edges e JOIN features f ON f.fid = e.{other} "
        f"WHERE e.{this} = $f AND kind = 'virtual' AND f.layer = {layer}",
        {"f": fid},
    )[0][0]
    assert len(got["lay"]) == n_lay > 0 and all(e[end]["layer"] == layer for e in got["lay"])


DRIVERS_SQL = """
SELECT a.src_fid, a.dst_fid, a.weight * b.weight AS p FROM edges a JOIN edges b ON a.dst_fid = b.src_fid
WHERE b.dst_fid = $x AND a.kind = 'virtual' AND b.kind = 'virtual' {where}
ORDER BY abs(p) DESC, a.src_fid, a.dst_fid LIMIT $k
"""


def test_drivers_via_a_feature_a_layer_and_any_match_sql(url, sql):
    x = fid_of(f"{M}/3-synth/9", sql)
    y = sql(
        "SELECT src_fid FROM edges WHERE dst_fid = $x AND kind = 'virtual' AND fid_source(src_fid) = "
        "(SELECT sid FROM sources WHERE layer = 2) ORDER BY abs(weight) DESC LIMIT 1",
        {"x": x},
    )[0][0]
    q = """query($x: ID!, $y: ID, $l: Int) { drivers(target: $x, via: $y, viaLayer: $l, topK: 5, fanout: 50) {
        driver { id } via { id } target { id } product first { weight source { id } target { id } }
        second { weight source { id } target { id } } } }"""
    for variables, where in [
        ({"y": pid(y, sql)}, f"AND a.dst_fid = {y}"),
        ({"l": 2}, "AND fid_source(b.src_fid) = (SELECT sid FROM sources WHERE layer = 2)"),
        ({}, ""),
    ]:
        got = gql(url, q, x=pid(x, sql), **variables)["drivers"]
        want = sql(DRIVERS_SQL.format(where=where), {"x": x, "k": 5})
        assert len(got) == len(want) > 0
        for d, (z, yy, p) in zip(got, want):
            assert (d["driver"]["id"], d["via"]["id"], d["target"]["id"]) == (pid(z, sql), pid(yy, sql), pid(x, sql))
            assert d["product"] == pytest.approx(p)
            assert d["first"]["weight"] * d["second"]["weight"] == pytest.approx(p)
            assert d["first"]["target"]["id"] == d["second"]["source"]["id"] == d["via"]["id"]


def test_paths_are_the_best_paths_by_product(url, sql):
    a, b = f"{M}/0-synth/3", f"{M}/3-synth/9"
    fa, fb = fid_of(a, sql), fid_of(b, sql)
    got = gql(
        url,
        """query($a: ID!, $b: ID!) { paths(source: $a, target: $b, maxHops: 3, fanout: 50, beam: 1000,
        topK: 5) { score hops features { id } edges { weight } } }""",
        a=a,
        b=b,
    )["paths"]
    # exhaustive reference: every path of 1..3 virtual edges a -> b, by |product|
    want = sql(
        """
        WITH v AS (SELECT src_fid s, dst_fid d, weight w FROM edges WHERE kind = 'virtual')
        SELECT [s1, d1] p, w1 sc FROM (SELECT s s1, d d1, w w1 FROM v) WHERE s1 = $a AND d1 = $b
        UNION ALL SELECT [e1.s, e1.d, e2.d], e1.w * e2.w FROM v e1 JOIN v e2 ON e1.d = e2.s
          WHERE e1.s = $a AND e2.d = $b
        UNION ALL SELECT [e1.s, e1.d, e2.d, e3.d], e1.w * e2.w * e3.w FROM v e1 JOIN v e2 ON e1.d = e2.s
          JOIN v e3 ON e2.d = e3.s WHERE e1.s = $a AND e3.d = $b
        ORDER BY abs(sc) DESC LIMIT 5""",
        {"a": fa, "b": fb},
    )
    assert len(got) == len(want) > 0
    for p, (nodes, score) in zip(got, want):
        assert [f["id"] for f in p["features"]] == [pid(n, sql) for n in nodes]
        assert p["score"] == pytest.approx(score) and p["hops"] == len(nodes) - 1
    assert [abs(p["score"]) for p in got] == sorted((abs(p["score"]) for p in got), reverse=True)


def test_feature_list_filters_and_cursor_round_trip(url, sql):
    q = """query($after: String) { features(layer: 1, described: true, first: 7, after: $after) {
        edges { cursor node { id description } } pageInfo { hasNextPage endCursor } } }"""
    seen, after = [], None
    while True:
        conn = gql(url, q, after=after)["features"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        assert all(e["node"]["description"] for e in conn["edges"])
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    want = [
        r[0]
        for r in sql(
            "SELECT i.public_id FROM feature_ids i JOIN feature_weightlens w USING (fid) "
            "WHERE i.layer = 1 AND len(w.description) > 0 ORDER BY fid"
        )
    ]
    assert seen == want and len(want) > 7

    token, fid = sql("SELECT trim(token), fid FROM feature_tokens WHERE side = 'input' ORDER BY fid LIMIT 1")[0]
    got = gql(url, "query($t: String) { features(inputToken: $t, first: 100) { nodes { id } } }", t=token)
    want = sql(
        "SELECT DISTINCT fid FROM feature_tokens WHERE side = 'input' AND trim(token) = $t ORDER BY fid LIMIT 100",
        {"t": token},
    )
    assert [f["id"] for f in got["features"]["nodes"]] == [pid(r[0], sql) for r in want]
    word = sql("SELECT text FROM explanations ORDER BY explanation_id DESC LIMIT 1")[0][0].split()[2]
    got = gql(url, "query($t: String) { features(descriptionContains: $t, first: 100) { nodes { id } } }", t=word)
    want = sql(
        """SELECT fid FROM features WHERE fid IN (SELECT fid FROM explanations WHERE contains(lower(text), lower($t)))
                  OR fid IN (SELECT fid FROM feature_weightlens WHERE contains(lower(array_to_string(description, ' ')),
                  lower($t))) ORDER BY fid LIMIT 100""",
        {"t": word},
    )
    assert [f["id"] for f in got["features"]["nodes"]] == [pid(r[0], sql) for r in want] and want


def test_token_readers_and_writers_match_sql(url, sql):
    token = sql(
        "SELECT trim(token) FROM feature_tokens WHERE side = 'promoted' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )[0][0]
    data = gql(
        url,
        """query($t: String!) { w: tokenWriters(token: $t, side: PROMOTED, first: 100) {
        nodes { feature { id } token { side token } } }
        r: tokenReaders(token: $t, first: 100) { nodes { feature { id } } } }""",
        t=token,
    )
    for key, sides in [("w", "('promoted')"), ("r", "('input')")]:
        want = sql(
            f"SELECT DISTINCT fid FROM feature_tokens WHERE side IN {sides} AND trim(token) = $t "
            "ORDER BY fid LIMIT 100",
            {"t": token},
        )
        assert [n["feature"]["id"] for n in data[key]["nodes"]] == [pid(r[0], sql) for r in want]
    assert len(data["w"]["nodes"]) > 0 and all(n["token"]["side"] == "promoted" for n in data["w"]["nodes"])


def test_atlas_stats_match_sql(url, sql):
    s = gql(url, "{ stats { nFeatures nSources edges { kind n } coverage { layer nFeatures nDescribed } } }")["stats"]
    assert s["nFeatures"] == sql("SELECT count(*) FROM features")[0][0]
    assert {e["kind"]: e["n"] for e in s["edges"]} == dict(sql("SELECT kind, count(*) FROM edges GROUP BY kind"))
    assert [(c["layer"], c["nDescribed"]) for c in s["coverage"]] == sql(
        "SELECT f.layer, count(*) FROM features f JOIN feature_weightlens w USING (fid) "
        "WHERE w.n_description_tokens > 0 GROUP BY 1 ORDER BY 1"
    )  # 'described' (docs/sql.md)


def test_graph_export_is_circuit_tracer_json(url, sql):
    public = f"{M}/2-synth/7"
    via_graphql = gql(url, "query($id: ID!) { neighbourhoodGraph(id: $id, topK: 3) }", id=public)["neighbourhoodGraph"]
    via_get = httpx.get(f"{url}/graph/{public}", params={"topK": 3}).json()
    assert via_get == via_graphql
    g = via_get
    assert {"metadata", "qParams", "nodes", "links"} <= set(g)
    assert g["metadata"]["scan"] == M
    ids = {n["node_id"] for n in g["nodes"]}
    assert len(g["nodes"]) == 7 and "2_7_0" in ids and g["qParams"]["clickedId"] == "2_7_0"
    for n in g["nodes"]:
        assert {"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"} <= set(n)
        # circuit-tracer's numbering (graph_models.Node.feature_node): node_id layer_index_pos, feature
        # index + 10**ceil(log10(d_sae)) * layer (d_sae 64 -> 100), unique across layers
        layer, index, _ = n["node_id"].split("_")
        assert n["layer"] == layer and n["feature"] == int(index) + 100 * int(layer)
        assert n["atlas_id"].endswith(f"/{layer}-synth/{index}")
    assert len(g["links"]) == 6 and all(link["source"] in ids and link["target"] in ids for link in g["links"])
    fid = fid_of(public, sql)
    strongest = sql(
        "SELECT weight FROM edges WHERE dst_fid = $f AND kind = 'virtual' ORDER BY abs(weight) DESC LIMIT 1", {"f": fid}
    )[0][0]
    assert strongest in [link["weight"] for link in g["links"] if link["target"] == "2_7_0"]
    paths = gql(url, f'{{ pathGraph(source: "{M}/0-synth/3", target: "{M}/3-synth/9", fanout: 50) }}')["pathGraph"]
    assert {n["atlas_id"] for n in paths["nodes"]} >= {f"{M}/0-synth/3", f"{M}/3-synth/9"} and paths["links"]
    missing = httpx.get(f"{url}/graph/{M}/2-synth/100000")
    assert missing.status_code == 404 and "not in the atlas" in missing.json()["error"]
