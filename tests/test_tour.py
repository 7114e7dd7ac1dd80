"""docs/tour.md, step by step, against a demo atlas of every layer of a 4-layer model: each step's SQL
picks its features, its GraphQL query answers over HTTP, and every answer is non-empty and agrees with
the SQL that picked it, so the tour cannot rot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from tests.factories import tiny_train_config, write_text_corpus

TOUR = Path(__file__).resolve().parent.parent / "docs" / "tour.md"


def _steps() -> list[tuple[str, str, str | None]]:
    """(title, picker SQL, GraphQL query or None) for every '### N.' section of the tour."""
    steps = []
    for section in re.split(r"^### ", TOUR.read_text(), flags=re.M)[1:]:
        blocks = dict((lang, body) for lang, body in re.findall(r"```(sql|graphql)\n(.*?)```", section, re.S))
        steps.append((section.splitlines()[0], blocks["sql"], blocks.get("graphql")))
    return steps


# ATLAS_TOUR_DB=path/to/atlas.duckdb takes the tour on an atlas built before (the demo's, say)
# instead of building the tiny one; every step must then answer.
GIVEN = os.environ.get("ATLAS_TOUR_DB")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if GIVEN:
        return Path(GIVEN), _picks(Path(GIVEN))
    from atlas.config import CorpusConfig, DemoConfig
    from ingest import demo

    tmp = tmp_path_factory.mktemp("tour")
    corpus = CorpusConfig(
        source=str(write_text_corpus(tmp / "corpus", n_docs=150, words_per_doc=200)), seq_len=32, heldout_fraction=0.2
    )
    cfg = DemoConfig(data_dir=tmp / "demo", model_id="tiny4", serve=False, circuitlens_features=4)
    train = tiny_train_config(model="random:tiny4", layers=(), n_tokens=2048, epochs=2)  # () = every layer
    db_path = demo.build(cfg, train, corpus).db_path
    return db_path, _picks(db_path)


def _picks(db_path: Path) -> dict[str, list[dict]]:
    """Every step's picked rows, and the atlas's layers under "layers" (before the server opens the file)."""
    picks = {title: _sql(db_path, picker) for title, picker, _ in _steps()}
    return picks | {"layers": _sql(db_path, "SELECT DISTINCT layer FROM sources")}


@pytest.fixture(scope="module")
def url(built, api_server):
    return api_server(built[0])


def _sql(db, sql: str) -> list[dict]:
    from atlas.db import connect_readonly

    con = connect_readonly(db)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def test_the_tour_has_every_question():
    titles = [t for t, _, _ in _steps()]
    assert len(titles) == 7
    for word in ("page", "through Y", "whole layer", "three hops", "token", "clusters", "every layer"):
        assert any(word in t for t in titles), (word, titles)


# Steps 4 and 5 need a richer atlas than the random 4-layer model's: its WeightLens edges join
# layers (0,1), (0,2), (0,3) and (2,3) only (30 edges over 512 features), so no chain of three edges
# exists, and its 127 distinct input tokens and 148 promoted ones, drawn from 50,257, share none.
# Both steps answer on the atlas of Gemma 3 270M (docs/benchmarks.md, "Demo").
SPARSE_ON_TINY = {"4", "5"}


def _marked(step):
    number = step[0].split(".")[0]
    if number in SPARSE_ON_TINY and not GIVEN:
        return pytest.param(step, id=number, marks=pytest.mark.xfail(strict=True, reason="sparse tiny atlas"))
    return pytest.param(step, id=number)


@pytest.mark.parametrize("step", [_marked(s) for s in _steps()])
def test_each_step_answers(built, url, step):
    title, picker, query = step
    rows = built[1][title]
    assert rows, f"step {title!r}: its SQL picks nothing on this atlas"
    if query is None:  # the SQL analytic: every layer pair with edges, all layers seen
        layers = {r["dst_layer"] for r in rows} | {r["src_layer"] for r in rows}
        every = {r["layer"] for r in built[1]["layers"]}
        assert layers == every and all(r["edges"] > 0 for r in rows)
        return
    picked = rows[0]
    body = httpx.post(f"{url}/graphql", json={"query": query, "variables": picked}, timeout=60).json()
    assert "errors" not in body, body["errors"]
    data = body["data"]
    assert all(v not in (None, [], {}) for v in data.values()), data
    _agrees(title, picked, data)


def _agrees(title: str, picked: dict, data: dict) -> None:
    """Each answer is about what the SQL picked (not just any non-empty answer)."""
    if "feature" in data:
        assert data["feature"]["id"] == picked["id"]
        if "clusters" in data["feature"]:
            assert not data["feature"]["validated"] and any(c["label"] >= 0 for c in data["feature"]["clusters"])
        else:
            assert data["feature"]["validated"]
    elif "drivers" in data and "via" in picked:
        assert all(d["via"]["id"] == picked["via"] for d in data["drivers"])
    elif "drivers" in data:
        layer = picked["viaLayer"]
        assert all(d["via"]["id"].split("/")[1].startswith(f"{layer}-") for d in data["drivers"])
    elif "paths" in data:
        best = data["paths"][0]["features"]
        assert best[0]["id"] == picked["source"] and best[-1]["id"] == picked["target"]
    else:
        assert data["tokenReaders"]["nodes"] and data["tokenWriters"]["nodes"], title
