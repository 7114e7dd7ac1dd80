"""Hostile or broken queries get clear GraphQL errors, and their cost is bounded before anything runs."""

from __future__ import annotations

import httpx
import pytest

from api.limits import ApiLimits

M = "gpt2-small"


@pytest.fixture(scope="module")
def url(synthetic_atlas, api_server):
    return api_server(synthetic_atlas("tiny")[1])


def errors(url: str, query: str, **variables) -> list[str]:
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    body = r.json()
    assert body.get("errors"), body
    return [e["message"] for e in body["errors"]]


@pytest.mark.parametrize(
    "query, expected",
    [
        (
            '{ feature(id: "gpt2-small/2-synth/999999") { id } }',
            "feature 'gpt2-small/2-synth/999999' is not in the atlas",
        ),
        ('{ feature(id: "no-such-model/2-synth/1") { id } }', "feature 'no-such-model/2-synth/1' is not in the atlas"),
        ('{ feature(id: "gpt2-small/2-synth") { id } }', "is not of the form 'model/source/index'"),
        (
            '{ drivers(target: "gpt2-small/3-synth/1", via: "gpt2-small/9-synth/1") { product } }',
            "feature 'gpt2-small/9-synth/1' is not in the atlas",
        ),
        (
            '{ paths(source: "gpt2-small/3-synth/1", target: "gpt2-small/0-synth/1") { score } }',
            "paths go downstream within one model",
        ),
    ],
)
def test_unknown_or_malformed_ids_name_the_id(url, query, expected):
    assert any(expected in m for m in errors(url, query))


@pytest.mark.parametrize(
    "query, expected",
    [
        ("{ features(first: 0) { nodes { id } } }", "argument first = 0 is out of range [1, 100]"),
        ("{ features(first: 100000) { nodes { id } } }", "argument first = 100000 is out of range [1, 100]"),
        ('{ feature(id: "gpt2-small/2-synth/1") { upstream(topK: 5000) { weight } } }', "argument topK = 5000"),
        (
            '{ paths(source: "gpt2-small/0-synth/1", target: "gpt2-small/3-synth/1", maxHops: 9) { score } }',
            "argument maxHops = 9 is out of range [1, 4]",
        ),
        (
            '{ drivers(target: "gpt2-small/3-synth/1", via: "gpt2-small/2-synth/1", viaLayer: 2) { product } }',
            "either via (a feature) or viaLayer, not both",
        ),
        ('{ features(after: "garbage") { nodes { id } } }', "cursor 'garbage' is not a cursor this API returned"),
        ('{ feature(id: "gpt2-small/2-synth/1") { upstream(kind: SIDEWAYS) { weight } } }', "SIDEWAYS"),
        ('{ feature(id: "gpt2-small/2-synth/1") { noSuchField } }', "Cannot query field 'noSuchField'"),
        ("{ feature(id: 5", "Syntax Error"),
    ],
)
def test_bad_arguments_get_clear_errors(url, query, expected):
    assert any(expected in m for m in errors(url, query))


def test_a_bad_field_does_not_hide_the_good_ones(url):
    r = httpx.post(
        f"{url}/graphql",
        json={
            "query": """{ good: feature(id: "gpt2-small/2-synth/1") { id }
        bad: feature(id: "gpt2-small/2-synth/99999") { id } }"""
        },
    ).json()
    assert r["data"]["good"]["id"] == "gpt2-small/2-synth/1" and r["data"]["bad"] is None
    assert "not in the atlas" in r["errors"][0]["message"]


def test_excessive_depth_is_refused(url):
    inner = "id"
    for _ in range(6):
        inner = f"upstream(topK: 1) {{ source {{ {inner} }} }}"
    msgs = errors(url, f'{{ feature(id: "{M}/3-synth/1") {{ {inner} }} }}')
    assert any("exceeds maximum operation depth" in m for m in msgs)


def test_alias_amplification_is_refused(url):
    body = " ".join(f'a{i}: feature(id: "{M}/2-synth/{i}") {{ id }}' for i in range(40))
    assert any("aliases" in m for m in errors(url, "{ " + body + " }"))


def test_huge_documents_are_refused(url):
    fields = " ".join(["id"] * 3000)
    assert any("token" in m.lower() for m in errors(url, f'{{ feature(id: "{M}/2-synth/1") {{ {fields} }} }}'))


def test_query_cost_multiplies_page_sizes(url):
    q = """{ features(first: 100) { nodes { upstream(topK: 100) { source { downstream(topK: 100) { weight } } } } } }"""
    msgs = errors(url, q)
    assert any("query cost" in m and "exceeds the limit" in m for m in msgs)
    # a variable page size counts as the largest allowed
    msgs = errors(
        url,
        "query($n: Int!) { features(first: $n) { nodes { upstream(topK: $n) { source { "
        "upstream(topK: $n) { weight } } } } } }",
        n=2,
    )
    assert any("query cost" in m for m in msgs)


def test_batching_and_get_queries_are_off(url):
    batch = [{"query": "{ stats { nFeatures } }"}] * 3
    r = httpx.post(f"{url}/graphql", json=batch)
    assert r.status_code == 400
    r = httpx.get(f"{url}/graphql", params={"query": "{ stats { nFeatures } }"}, headers={"accept": "application/json"})
    assert r.status_code in (400, 405) and "nFeatures" not in r.text


def test_graphiql_is_served_to_browsers(url):
    r = httpx.get(f"{url}/graphql", headers={"accept": "text/html"})
    assert r.status_code == 200 and "graphiql" in r.text.lower()


def test_request_time_limit(synthetic_atlas, api_server):
    url = api_server(synthetic_atlas("tiny-2")[1], ApiLimits(request_s=0.0))  # one file, one config per process
    msgs = errors(url, f'{{ feature(id: "{M}/2-synth/1") {{ id upstream {{ weight }} }} }}')
    assert any("request exceeded the time limit of 0.0 s" in m for m in msgs)


def test_statement_time_limit(synthetic_atlas, api_server):
    """DuckDB's max_execution_time interrupts a statement (stats scans ~100k edges: >> 2 ms)."""
    _, current = synthetic_atlas("medium", n_layers=6, d_sae=2048, k_up=10, n_examples=1)
    url = api_server(current, ApiLimits(statement_ms=2))
    msgs = errors(url, "{ stats { nFeatures edges { n } coverage { nDescribed } } }")
    assert any("exceeded the time limit of 2 ms per statement" in m for m in msgs)


def test_a_repeated_document_is_validated_once_and_a_refused_one_stays_refused(synthetic_atlas):
    """A document seen before is not validated again (it was, on every request, when the limit
    extensions made new rule classes per request), and a refused one stays refused. Counted by the
    verdict cache's own counter (api/bounded_validation.py): a miss is one run of graphql's rules."""
    from api.bounded_validation import validation_cache_info
    from api.context import Context, Version
    from api.schema import build_schema

    before = validation_cache_info()
    limits = ApiLimits()
    schema, version = build_schema(limits), Version(str(synthetic_atlas("tiny")[1].resolve()), limits)
    try:
        ok = f'{{ feature(id: "{M}/3-synth/1") {{ upstream(topK: 3) {{ weight }} }} }}'
        deep = f'{{ feature(id: "{M}/3-synth/1") {{ {"upstream { source { " * 8}id{" } }" * 8} }} }}'
        for query, refused in [(ok, False), (ok, False), (deep, True), (deep, True)]:
            result = schema.execute_sync(query, context_value=Context(version, limits))
            assert bool(result.errors) == refused, result.errors
            if refused:
                assert "exceeds maximum operation depth" in result.errors[0].message
        after = validation_cache_info()
        assert after.misses - before.misses == 1  # one validation per distinct accepted document; the deep one
        # is refused by its measures (api/measure.py) before graphql's rules would walk it
        assert after.hits - before.hits == 1  # the repeated accepted document reused the verdict
    finally:
        version.close()
