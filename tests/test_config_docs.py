"""Every configuration field and every API limit is documented: each dataclass of atlas/config.py
has a table in docs (docs/config.md, or docs/weightlens.md for WeightLensConfig) whose `field`
column names each of its fields, and docs/api.md's limits table names each ApiLimits field. A field
added without its row, or a row left behind by a removed field, fails here."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import atlas.config
from api.limits import ApiLimits

DOCS = Path(__file__).resolve().parent.parent / "docs"
# class -> (docs file, the heading of the section that holds its table); default: docs/config.md, '## Name'
PLACES = {
    "WeightLensConfig": ("weightlens.md", "## Configuration (`atlas.config.WeightLensConfig`)"),
    "ApiLimits": ("api.md", "## Limits and errors"),
}
CONFIGS = [
    cls
    for _, cls in inspect.getmembers(atlas.config, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == atlas.config.__name__
]


def section(text: str, heading: str) -> str:
    """The lines under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def documented_fields(text: str) -> set[str]:
    """The `names` in the 'field' column of every Markdown table in ``text``."""
    names, column = set(), None
    for line in text.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:
            column = cells.index("field") if "field" in cells else -1
        elif column >= 0 and not set(line) <= set("|-: "):
            names |= set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[column]))
    return names


def test_the_config_module_has_its_classes():
    assert {"WeightLensConfig", "ActivationsConfig", "CircuitLensConfig", "TrainConfig", "DemoConfig"} <= {
        cls.__name__ for cls in CONFIGS
    }


@pytest.mark.parametrize("cls", [*CONFIGS, ApiLimits], ids=lambda cls: cls.__name__)
def test_every_field_is_documented_and_every_documented_field_exists(cls):
    name, heading = PLACES.get(cls.__name__, ("config.md", f"## {cls.__name__}"))
    text = (DOCS / name).read_text()
    assert heading in text.splitlines(), f"docs/{name} has no section {heading!r} for {cls.__name__}"
    documented = documented_fields(section(text, heading))
    fields = {f.name for f in dataclasses.fields(cls)}
    assert not fields - documented, (
        f"{cls.__name__} fields missing from docs/{name} {heading!r}: {sorted(fields - documented)}"
    )
    assert not documented - fields, (
        f"docs/{name} {heading!r} lists fields {cls.__name__} lacks: {sorted(documented - fields)}"
    )


def test_the_parser_finds_a_missing_row():
    table = "| field | default |\n|---|---|\n| `a`, `b` | 1 |\n| `c` | 2 |\n"
    assert documented_fields(table) == {"a", "b", "c"}
    assert documented_fields(table.replace("| `c` | 2 |\n", "")) == {"a", "b"}
