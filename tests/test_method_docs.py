"""docs/method.md is the method the code cites: every cited section exists, and nothing cites the old file."""

from __future__ import annotations

import re

from tests.conftest import REPO

CITED = re.compile(r"docs/method\.md((?:(?:,? and |, |-| )§\d+(?:\.\d+)?)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")


def _sources():
    for top in ("atlas", "ingest", "api", "migrations", "tests", "bench", "docs"):
        for path in (REPO / top).rglob("*"):
            if path.suffix in (".py", ".md", ".graphql") and path.is_file():
                yield path
    yield REPO / "README.md"


def _headings() -> set[str]:
    text = (REPO / "docs" / "method.md").read_text()
    return {m.group(1) for m in re.finditer(r"^#{2,3} §(\d+(?:\.\d+)?) ", text, flags=re.M)}


def test_every_cited_section_exists():
    headings = _headings()
    assert {"1", "2", "2.1", "2.7", "3", "4", "4.5", "5"} <= headings
    cited = {}
    for path in _sources():
        for m in CITED.finditer(path.read_text(errors="replace")):
            for s in SECTION.findall(m.group(1)):
                cited.setdefault(s, []).append(path.relative_to(REPO).as_posix())
    assert len(cited) >= 15, cited  # the code does cite it, widely
    missing = {s: where for s, where in cited.items() if s not in headings}
    assert not missing, f"cited sections not in docs/method.md: {missing}"


def test_nothing_cites_a_file_that_is_not_in_the_repository():
    stale = [p.relative_to(REPO).as_posix() for p in _sources() if "science" + ".md" in p.read_text(errors="replace")]
    assert stale == []
