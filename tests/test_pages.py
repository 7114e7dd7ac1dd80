"""The browser pages through a real uvicorn server on loopback, over a demo-shaped synthetic atlas with
hostile text (tests/pages_atlas.py): content checked against SQL on the same file, untrusted text
escaped (checked structurally, with an HTML parser), CSP sent, 404/400 pages, JSON of every page,
and GraphiQL from local assets only."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import httpx
import pages_atlas as pa
import pytest

from api.pages import assets

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return pa.build(tmp_path_factory.mktemp("pages-atlas"))


@pytest.fixture(scope="module")
def url(hostile, api_server):
    return api_server(hostile[1])


@pytest.fixture(scope="module")
def sql(hostile):
    con = duckdb.connect(str(hostile[0]), read_only=True)
    yield lambda q, p=None: con.execute(q, p or {}).fetchall()
    con.close()


class Tree(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script> element."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.script_text: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.script_text if self._in_script else self.text).append(data)


def get(url: str, path: str, **params) -> httpx.Response:
    return httpx.get(url + path, params=params, headers={"accept": "text/html"}, timeout=30)


def assert_safe(r: httpx.Response) -> Tree:
    """No script from data: only <script src="/assets/..."> elements, empty; no on* attribute; no
    javascript: link; and the CSP forbids inline script."""
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    t = Tree(r.text)
    for name, attrs in t.tags:
        assert not [a for a in attrs if a.startswith("on")], (name, attrs)
        for a in ("href", "src", "action", "xlink:href"):
            v = (attrs.get(a) or "").strip().lower()
            assert not v.startswith("javascript:"), (name, attrs)
            if v:
                assert v.startswith("/"), (name, attrs)  # same-site only
        if name == "script":
            assert attrs.get("src", "").startswith("/assets/"), attrs
    assert "".join(t.script_text).strip() == ""
    return t


# ---- GraphiQL from local assets ----------------------------------------------------------------


def test_graphiql_page_references_no_external_url(url):
    r = get(url, "/graphql")
    assert r.status_code == 200
    t = assert_safe(r)
    refs = [attrs[a] for _, attrs in t.tags for a in ("href", "src") if a in attrs]
    assert not [x for x in refs if re.match(r"^(https?:)?//", x)], refs
    assert not re.search(r"https?://|unpkg|jsdelivr|cdnjs", r.text)
    for src in (
        "/assets/vendor/react.production.min.js",
        "/assets/vendor/graphiql.min.js",
        "/assets/vendor/graphiql.min.css",
        "/assets/graphiql-init.js",
    ):
        assert src in refs
        asset = httpx.get(url + src)
        assert asset.status_code == 200 and len(asset.content) > 100, src
    # the served files are the installed, pinned ones
    assert (
        httpx.get(url + "/assets/vendor/graphiql.min.js").content
        == (assets.node_modules() / "graphiql" / "graphiql.min.js").read_bytes()
    )


def test_graphiql_examples_are_one_click_away(url):
    names = sorted(p.stem for p in (REPO / "docs" / "queries").glob("*.graphql"))
    t = Tree(get(url, "/graphql").text)
    links = [a["href"] for tag, a in t.tags if tag == "a" and "example-query" in a.get("class", "")]
    assert sorted(links) == sorted(f"/graphql?example={n}" for n in names)
    t = Tree(get(url, "/graphql", example="drivers_via").text)
    root = next(a for tag, a in t.tags if a.get("id") == "graphiql")
    assert root["data-query"] == (REPO / "docs" / "queries" / "drivers_via.graphql").read_text()


def test_vendor_files_are_a_fixed_list(url):
    assert httpx.get(url + "/assets/vendor/..%2F..%2Fpackage.json").status_code == 404
    assert httpx.get(url + "/assets/vendor/package.json").status_code == 404
    assert httpx.get(url + "/assets/..%2Fhtml.py").status_code == 404


def test_get_graphql_without_html_is_not_a_query(url):
    r = httpx.get(url + "/graphql", params={"query": "{ stats { nFeatures } }"}, headers={"accept": "application/json"})
    assert r.status_code == 405 and "POST" in r.json()["error"]


# ---- index ------------------------------------------------------------------------------------------


def test_index_lists_layers_with_quality_and_coverage(url, sql):
    r = get(url, "/")
    assert r.status_code == 200
    assert_safe(r)
    d = get(url, "/", format="json").json()
    assert [m["model_id"] for m in d["models"]] == ["gpt2-small"]
    for row in d["layers"]:
        n_desc = sql(
            "SELECT count(*) FROM feature_weightlens w JOIN features f USING (fid) JOIN sources s USING (sid) "
            "WHERE s.source_id = $s AND len(w.description) > 0",
            {"s": row["source_id"]},
        )[0][0]
        assert row["coverage"] == pytest.approx(n_desc / 64)
        assert row["fve"] == pytest.approx(pa.QUALITY["fve"] + row["layer"])
        assert row["dead_share"] == pytest.approx(pa.QUALITY["dead_share"] + row["layer"])
    t = Tree(r.text)
    assert sum(1 for tag, a in t.tags if tag == "tr" and a.get("class") == "layer") == 4
    assert f"{n_desc / 64:.1%}" in r.text


def test_search_by_token_text_and_id(url, sql, hostile):
    fid_public = hostile[2]
    readers = {r[0] for r in sql("SELECT public_id FROM token_readers WHERE token = ' Paris' OR trim(token) = 'Paris'")}
    d = get(url, "/", q=" Paris", by="readers", first="100", format="json").json()
    got = [f["id"] for f in d["search"]["sections"][0]["features"]]
    assert set(got) == readers and got == sorted(
        got, key=lambda x: sql("SELECT fid FROM feature_ids WHERE public_id = $p", {"p": x})[0][0]
    )
    # paging: first=2 pages through the same set
    seen, after = [], None
    while True:
        page = get(url, "/", q=" Paris", by="readers", first="2", after=after, format="json").json()
        sec = page["search"]["sections"][0]
        seen += [f["id"] for f in sec["features"]]
        after = sec["next_after"]
        if after is None:
            break
    assert seen == got
    d = get(url, "/", q=pa.SCRIPT, format="json").json()
    text = next(s for s in d["search"]["sections"] if s["by"] == "text")
    assert fid_public in [f["id"] for f in text["features"]]  # the explanation contains it
    r = get(url, "/", q=fid_public)
    assert f'href="/feature/{fid_public}"' in r.text and assert_safe(r)
    r = get(url, "/", q="gpt2-small/2-synth/99999")
    assert "is not in the atlas" in r.text


# ---- feature page ------------------------------------------------------------------------------


def test_feature_page_escapes_untrusted_text(url, hostile):
    r = get(url, f"/feature/{hostile[2]}")
    assert r.status_code == 200
    t = assert_safe(r)
    text = "".join(t.text)
    for payload in pa.PAYLOADS:  # shown as text, in tokens, description, examples, explanations
        assert payload in text, payload
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(&#x27;s&#x27;)&lt;/script&gt;" in r.text


def test_feature_page_content(url, hostile, sql):
    public = hostile[2]
    d = get(url, f"/feature/{public}", format="json").json()
    fid = sql("SELECT fid FROM feature_ids WHERE public_id = $p", {"p": public})[0][0]
    assert d["description"] == [pa.IMG, pa.JSURL]
    assert [x["token"] for x in d["input_tokens"]] == [
        r[0]
        for r in sql("SELECT token FROM feature_tokens WHERE fid = $f AND side = 'input' ORDER BY rank", {"f": fid})
    ]
    for side in ("promoted", "suppressed"):
        assert [(x["rank"], x["token"]) for x in d["output_tokens"] if x["side"] == side] == sql(
            "SELECT rank, token FROM feature_tokens WHERE fid = $f AND side = $s ORDER BY rank", {"f": fid, "s": side}
        )
    assert len(get(url, f"/feature/{public}", tokens="2", format="json").json()["output_tokens"]) == 4
    assert [e["acts"] for e in d["examples"]["top"]["items"]] == [pa.TOP_ACTS, [a * 0.75 for a in pa.TOP_ACTS]]
    assert len(d["examples"]["quantile"]["items"]) == 2
    assert d["stats"]["hist_counts"] == pa.HIST_COUNTS
    (c,) = d["clusters"]
    assert len(c["members"]) == 2 and c["summary"]["upstream"][0]["id"]
    assert d["explanations"][0]["scores"][0]["value"] == 0.875
    up = sql(
        "SELECT p.public_id, e.weight FROM edges e JOIN feature_ids p ON p.fid = e.src_fid WHERE e.dst_fid = $f "
        "AND e.kind = 'virtual' ORDER BY abs(e.weight) DESC, e.src_fid LIMIT 10",
        {"f": fid},
    )
    assert [(x["id"], x["weight"]) for x in d["edges"]["upstream"]] == [(a, pytest.approx(w)) for a, w in up]
    r = get(url, f"/feature/{public}")
    t = Tree(r.text)
    # tokens shaded by activation (a0..a9), value on hover (title); the max token marked
    spans = [a for tag, a in t.tags if tag == "span" and "tok " in a.get("class", "") + " " and "data-act" in a]
    first = spans[:8]
    assert [float(a["title"]) for a in first] == pa.TOP_ACTS
    assert [a["class"].split()[1] for a in first] == ["a0", "a1", "a4", "a9", "a2", "a0", "a0", "a0"]
    assert "max" in first[3]["class"].split()
    assert sum(1 for tag, a in t.tags if tag == "rect" and a.get("class") == "bar") == len(pa.HIST_COUNTS)
    links = {a["href"] for tag, a in t.tags if tag == "a" and "href" in a}
    assert all(f"/feature/{x}" in links for x, _ in up)
    assert c["summary"]["upstream"][0]["id"] in {h.removeprefix("/feature/") for h in links}


def test_feature_page_paging_and_limits(url, hostile):
    public = hostile[2]
    d = get(url, f"/feature/{public}", top="3", kind="era", format="json").json()
    assert len(d["edges"]["upstream"]) <= 3 and d["edges"]["kind"] == "era"
    assert get(url, f"/feature/{public}", top_page="1", format="json").json()["examples"]["top"]["items"] == []
    r = get(url, f"/feature/{public}", top="101")
    assert r.status_code == 400 and "argument top = 101 is out of range [1, 100]" in r.text
    r = get(url, f"/feature/{public}", kind="bogus", format="json")
    assert r.status_code == 400 and "kind" in r.json()["error"]
    r = get(url, f"/feature/{public}", top_page="x")
    assert r.status_code == 400 and "top_page" in r.text


@pytest.mark.parametrize(
    "path, named",
    [
        ("/feature/gpt2-small/2-synth/999999", "gpt2-small/2-synth/999999"),
        ("/feature/gpt2-small/9-nope/1", "gpt2-small/9-nope/1"),
        ("/feature/nomodel/2-synth/1", "nomodel/2-synth/1"),
        ("/feature/gpt2-small/2-synth/%C2%B2", "gpt2-small/2-synth/²"),
        ("/feature/gpt2-small/2-synth/-1", "gpt2-small/2-synth/-1"),
    ],
)
def test_unknown_or_malformed_feature_is_a_404_naming_it(url, path, named):
    r = httpx.get(url + path, headers={"accept": "text/html"})
    assert r.status_code == 404
    assert named in Tree(r.text).text.__str__() or named in "".join(Tree(r.text).text)
    assert_safe(r)
    assert get(url, "/").status_code == 200  # still healthy


def test_404_page_escapes_the_id(url):
    r = httpx.get(url + "/feature/%3Cscript%3Ealert(1)%3C%5Cscript%3E/x/1")
    assert r.status_code == 404 and "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)" in r.text


# ---- circuit views ------------------------------------------------------------------------------


def test_drivers_view(url, hostile, sql):
    public = hostile[2]
    d = get(url, "/circuit/drivers", target=public, format="json").json()
    assert d["drivers"] and all(abs(a["product"]) >= abs(b["product"]) for a, b in zip(d["drivers"], d["drivers"][1:]))
    via = d["drivers"][0]["via"]
    dv = get(url, "/circuit/drivers", target=public, via=via, format="json").json()
    assert {x["via"] for x in dv["drivers"]} == {via}
    r = get(url, "/circuit/drivers", target=public, viaLayer="1")
    t = assert_safe(r)
    nodes = [a["data-id"] for tag, a in t.tags if tag == "g" and "data-id" in a]
    lines = [a for tag, a in t.tags if tag == "line" and "edge" in a.get("class", "")]
    dj = get(url, "/circuit/drivers", target=public, viaLayer="1", format="json").json()
    assert sorted(nodes) == sorted(n["id"] for n in dj["graph"]["nodes"]) and public in nodes
    layer0 = [int(n.rsplit("/", 1)[1]) for n in nodes if "/0-synth/" in n]
    assert layer0 == sorted(layer0) and len(layer0) > 1  # left to right by index, as numbers
    assert len(lines) == len(dj["graph"]["edges"]) > 0
    for a in lines:  # sign by colour class, width by |weight|
        assert a["class"].split()[1] == ("pos" if float(a["data-weight"]) >= 0 else "neg")
    wmax = max(abs(float(a["data-weight"])) for a in lines)
    assert max(float(a["stroke-width"]) for a in lines) == pytest.approx(6.0, abs=0.01)
    for a in lines:
        assert float(a["stroke-width"]) == pytest.approx(1 + 5 * abs(float(a["data-weight"])) / wmax, abs=0.01)
    r = get(url, "/circuit/drivers", target=public, topK="500")
    assert r.status_code == 400 and "topK = 500 is out of range [1, 100]" in r.text


def test_paths_view(url, hostile, sql):
    public = hostile[2]
    fid = sql("SELECT fid FROM feature_ids WHERE public_id = $p", {"p": public})[0][0]
    # a two-hop path A -> B -> target, with A in layer 0 and B in layer 1
    a, b = sql(
        "SELECT a.src_fid, a.dst_fid FROM edges a JOIN edges b ON b.src_fid = a.dst_fid WHERE b.dst_fid = $f "
        "AND a.kind = 'virtual' AND b.kind = 'virtual' "
        "AND fid_source(a.src_fid) = (SELECT sid FROM sources WHERE layer = 0) "
        "AND fid_source(a.dst_fid) = (SELECT sid FROM sources WHERE layer = 1) LIMIT 1",
        {"f": fid},
    )[0]
    src = sql("SELECT public_id FROM feature_ids WHERE fid = $f", {"f": a})[0][0]
    mid = sql("SELECT public_id FROM feature_ids WHERE fid = $f", {"f": b})[0][0]
    d = get(url, "/circuit/paths", source=src, target=public, fanout="50", format="json").json()
    assert [src, mid, public] in [p["nodes"] for p in d["paths"]]
    t = assert_safe(get(url, "/circuit/paths", source=src, target=public, fanout="50"))
    layer_rows = [
        x
        for x in Tree(get(url, "/circuit/paths", source=src, target=public, fanout="50").text).text
        if x.startswith("layer ")
    ]
    assert layer_rows[:1] == ["layer 2"] and layer_rows[-1] == "layer 0"  # highest layer on top
    assert {f"/feature/{x}" for x in (src, mid, public)} <= {a["href"] for tag, a in t.tags if tag == "a"}
    r = get(url, "/circuit/paths", source=public, target=src)
    assert r.status_code == 400 and "downstream" in r.text
    r = get(url, "/circuit/paths", source=src, target=public, maxHops="9")
    assert r.status_code == 400 and "maxHops = 9 is out of range [1, 4]" in r.text
    r = get(url, "/circuit/paths", source="bad", target=public, format="json")
    assert r.status_code == 404 and "'bad'" in r.json()["error"]


def test_every_page_has_json(url, hostile):
    for path, params in [("/", {}), (f"/feature/{hostile[2]}", {}), ("/circuit/drivers", {"target": hostile[2]})]:
        r = get(url, path, **params, format="json")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        html = get(url, path, **params).text
        assert "format=json" in html  # the page links its JSON


def test_without_front_end_files_graphiql_says_what_is_missing_and_data_pages_work(url, hostile, monkeypatch, tmp_path):
    monkeypatch.setenv("ATLAS_FRONTEND_DIR", str(tmp_path))  # an empty node_modules
    r = get(url, "/graphql")
    assert r.status_code == 503 and "graphiql/graphiql.min.js" in r.text and "make setup" in r.text
    assert httpx.get(url + "/assets/vendor/graphiql.min.js").status_code == 404
    assert get(url, f"/feature/{hostile[2]}").status_code == 200
    body = httpx.post(url + "/graphql", json={"query": "{ stats { nFeatures } }"}).json()
    assert body["data"]["stats"]["nFeatures"] == 256


def _api_pages(url: str, field: str, args: str) -> list[tuple]:
    """Every match of a paged GraphQL list, as (id, side) - the independent reference for search."""
    out, after = [], None
    while True:
        q = f"""query($after: String) {{ {field}({args}, first: 100, after: $after) {{
            edges {{ node {{ {"feature { id } token { side }" if field != "features" else "id"} }} }}
            pageInfo {{ hasNextPage endCursor }} }} }}"""
        body = httpx.post(url + "/graphql", json={"query": q, "variables": {"after": after}}).json()
        assert "errors" not in body, body
        conn = body["data"][field]
        out += [
            (n["node"]["feature"]["id"], n["node"]["token"]["side"]) if field != "features" else (n["node"]["id"], None)
            for n in conn["edges"]
        ]
        if not conn["pageInfo"]["hasNextPage"]:
            return out
        after = conn["pageInfo"]["endCursor"]


@pytest.mark.parametrize("q", [" the", "Paris", "river", "nothing-matches-this"])
@pytest.mark.parametrize("first", ["3", "100"])
def test_search_pages_agree_with_the_api(url, q, first):
    for by, field, args, with_side in [
        ("readers", "tokenReaders", f"token: {q!r}".replace("'", '"'), True),
        ("writers", "tokenWriters", f"token: {q!r}".replace("'", '"'), True),
        ("text", "features", f"descriptionContains: {q!r}".replace("'", '"'), False),
    ]:
        want = _api_pages(url, field, args)
        got, after = [], None
        while True:
            sec = get(url, "/", q=q, by=by, first=first, after=after, format="json").json()["search"]["sections"][0]
            got += [(f["id"], f.get("side")) for f in sec["features"]]
            after = sec["next_after"]
            if after is None:
                break
        assert got == want if with_side else [g[0] for g in got] == [w[0] for w in want], (by, q)


def test_time_limit_is_a_503_naming_it(hostile, api_server, tmp_path):
    from api.limits import ApiLimits
    from atlas.publish import publish

    link, work = tmp_path / "current.duckdb", tmp_path / "work.duckdb"
    shutil.copyfile(hostile[0], work)  # the module's `sql` fixture holds the original open read-only
    publish(work, link)  # a file of its own for a server with other limits
    slow = api_server(link, ApiLimits(request_s=0.0))
    r = get(slow, f"/feature/{hostile[2]}")
    assert r.status_code == 503 and "request exceeded the time limit of 0.0 s" in r.text
    assert get(slow, "/graphql").status_code == 200  # GraphiQL reads no data


def test_the_graphql_query_shown_on_the_feature_page_runs(url, hostile):
    d = get(url, f"/feature/{hostile[2]}", format="json").json()
    body = httpx.post(url + "/graphql", json={"query": d["graphql"]}).json()
    assert "errors" not in body, body
    f = body["data"]["feature"]
    assert f["id"] == hostile[2] and f["description"] == ", ".join(d["description"])
    assert [t["token"] for t in f["inputTokens"]] == [t["token"] for t in d["input_tokens"]]
    assert [u["source"]["id"] for u in f["upstream"]] == [u["id"] for u in d["edges"]["upstream"]]


def test_unknown_path_is_a_404_naming_it(url):
    r = get(url, "/no/such/page")
    assert r.status_code == 404 and "/no/such/page" in r.text
    assert_safe(r)
    r = httpx.get(url + "/%3Cscript%3E")  # a client: JSON
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "there is no page at '/<script>'"
    r = get(url, "/%3Cscript%3E")  # a browser: escaped HTML
    assert r.status_code == 404 and "<script>" not in r.text and "&#x27;/&lt;script&gt;&#x27;" in r.text
    assert httpx.post(url + "/graphql", json={"query": "{ stats { nFeatures } }"}).status_code == 200
