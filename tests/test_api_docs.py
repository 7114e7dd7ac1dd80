"""The example queries checked into docs/queries run against a synthetic atlas and appear in docs/api.md."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "docs" / "queries").glob("*.graphql"))


@pytest.fixture(scope="module")
def url(synthetic_atlas, api_server):
    return api_server(synthetic_atlas("tiny-docs")[1])


def test_there_are_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_query_runs_and_is_documented(url, path):
    body = httpx.post(f"{url}/graphql", json={"query": path.read_text()}, timeout=30).json()
    assert "errors" not in body, body["errors"]
    assert all(v not in (None, [], {}) for v in body["data"].values()), body["data"]
    assert f"docs/queries/{path.name}" in (REPO / "docs" / "api.md").read_text()
