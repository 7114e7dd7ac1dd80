"""The import contract of the layers (README): the core ``atlas/`` imports neither ``ingest`` nor ``api``;
the lenses (``atlas/lens``) are pure computation, with no database, HTTP or job code; ``api`` (serving)
does not import ``ingest``; publishing reads no migration script.

Imports are read from the source (AST), every one of them: at module level, inside functions, under
``if TYPE_CHECKING``, and ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules of the core allowed to break the core's contract, each with the change that removes it.
CORE_ALLOWED: set[str] = set()  # none: the command table lives in cli/, outside the core


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (``from a import b`` gives ``a`` and ``a.b``)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
    return out


def _under(names: set[str], *prefixes: str) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def violations(directory: str, *forbidden: str, root: Path = ROOT) -> dict[str, list[str]]:
    """file (relative to ``root``) -> the forbidden modules it imports, for every .py under ``directory``."""
    found = {}
    for path in sorted((root / directory).rglob("*.py")):
        bad = _under(imported_modules(path, root), *forbidden)
        if bad:
            found[str(path.relative_to(root))] = bad
    return found


def test_the_reader_sees_function_local_relative_and_dynamic_imports(tmp_path):
    pkg = tmp_path / "atlas" / "lens"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text(
        "import importlib\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from api import schema\n"
        "def f():\n    from ..db import AtlasWriter\n    import ingest.shards\n"
        "    return importlib.import_module('httpx')\n"
    )
    assert imported_modules(pkg / "m.py", tmp_path) >= {
        "api.schema",
        "atlas.db",
        "atlas.db.AtlasWriter",
        "ingest.shards",
        "httpx",
    }
    assert violations("atlas", "ingest", "api", root=tmp_path) == {
        "atlas/lens/m.py": ["api", "api.schema", "ingest.shards"]
    }


def test_the_core_imports_neither_ingest_nor_api():
    found = violations("atlas", "ingest", "api")
    assert set(found) <= CORE_ALLOWED, {f: found[f] for f in set(found) - CORE_ALLOWED}
    stale = CORE_ALLOWED - set(found)
    assert not stale, f"{sorted(stale)} no longer import ingest or api: remove them from CORE_ALLOWED"


@pytest.mark.parametrize("forbidden", ["ingest", "api", "atlas.db", "atlas.publish", "duckdb", "httpx"])
def test_the_lenses_are_pure_computation(forbidden):
    assert violations("atlas/lens", forbidden) == {}


def test_serving_does_not_import_ingest():
    assert violations("api", "ingest") == {}


def test_publishing_reads_no_migration_script():
    """atlas/publish.py builds from what the database holds; the schema's revisions are atlas.db's business."""
    assert _under(imported_modules(ROOT / "atlas" / "publish.py"), "migrations", "alembic") == []
