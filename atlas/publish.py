"""PUBLISH: a working atlas copied, read-optimized and verified, then served through an atomic symlink flip.

A served atlas is a path that is a symlink, ``current``, to an immutable versioned file. Publishing
copies the working database to a new versioned file beside the link, materializes the adjacency
lists (the views ``edges_in``/``edges_out`` become tables sorted by fid), CHECKPOINTs and closes it,
then flips the link with one atomic rename. A server notices the new target on its next request,
opens it, and closes the old file once its in-flight requests finish (api/context.py). The working
database is never served, so ingest can keep writing to it.

Publishing builds from what the database holds: the adjacency tables are the rows of the file's own
``edges_in``/``edges_out`` views (whatever the migration that made them defined), never SQL taken
from a migration script, so editing an old migration cannot change what a publish writes.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import duckdb

from atlas.db import verify
from atlas.dbfile import open_duckdb
from atlas.errors import AtlasError, CorruptDatabaseError, NotFoundError, SchemaError

# The adjacency lists of the edge graph (docs/sql.md): one row per edge keyed by one end, ``fid``,
# with the other end in ``other``; views in a working atlas, tables in a published one.
ADJACENCY_LISTS = ("edges_in", "edges_out")
# The published tables' sort order: a feature's edges are contiguous, strongest first, so DuckDB's
# zone maps skip every other row group.
ADJACENCY_ORDER = "fid, kind, variant, abs(weight) DESC, other"

VERSION_SEQ_DIGITS = 8


def materialize_adjacency(con: duckdb.DuckDBPyConnection) -> None:
    """Replace each adjacency list (a view, or a table of an already published file) by a table of
    its own rows sorted by ``ADJACENCY_ORDER``."""
    for name in ADJACENCY_LISTS:
        kinds = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = $n AND table_schema = 'main'",
            {"n": name},
        ).fetchall()
        if not kinds:
            raise SchemaError(f"the atlas has no {name} view to publish (schema revision 0002 creates it)")
        con.execute(f"CREATE TABLE _atlas_adj AS SELECT * FROM {name} ORDER BY {ADJACENCY_ORDER}")
        con.execute(f"DROP {'VIEW' if kinds[0][0] == 'VIEW' else 'TABLE'} {name}")
        con.execute(f"ALTER TABLE _atlas_adj RENAME TO {name}")


def version_files(link: Path) -> list[tuple[int, Path]]:
    """The versioned files beside ``link``, oldest first: (sequence, path). Names are
    ``{link}.v{sequence}.{UTC time}``; names of the older ``{link}.{time}-{random}`` form count as
    sequence -1 (older than any numbered one), in name order."""
    pattern = re.compile(re.escape(link.name) + r"\.v(\d+)\.\d{8}T\d{6}$")
    legacy = re.compile(re.escape(link.name) + r"\.\d{8}T\d{6}-[0-9a-f]+$")
    found = []
    for p in link.parent.iterdir() if link.parent.exists() else ():
        m = pattern.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
        elif legacy.fullmatch(p.name):
            found.append((-1, p))
    return sorted(found, key=lambda sp: (sp[0], sp[1].name))


def _reserve_version(link: Path) -> tuple[Path, Path]:
    """A new versioned name with the next sequence number, and its .tmp file created exclusively
    (two publishes never get the same number)."""
    seq = max([s for s, _ in version_files(link)] + [0]) + 1
    while True:
        name = f"{link.name}.v{seq:0{VERSION_SEQ_DIGITS}d}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        version = link.parent / name
        tmp = version.with_name(name + ".tmp")
        if not version.exists():
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return version, tmp
            except FileExistsError:
                pass
        seq += 1


def publish(source: str | Path, link: str | Path, keep: int = 3) -> Path:
    """Publish ``source`` (a working atlas, not open by a writer) as the new target of symlink ``link``.

    1. Verify the source whole (``atlas.db.verify``: schema, every table read to its end); refuse it otherwise.
    2. Copy it to a new versioned file (``.tmp``) with the next sequence number, materialize the
       adjacency lists and CHECKPOINT.
    3. Verify the copy whole, with the source's row count in every table; refuse (and remove the
       copy) otherwise. The link is untouched until here.
    4. Rename the copy into place and flip the link atomically.
    5. Keep the ``keep`` highest-numbered versions and never the link's target: unlink the others
       (a server that still has one open keeps reading it until it closes it).
    Returns the new versioned file.
    """
    source, link = Path(source), Path(link)
    if not source.exists():
        raise NotFoundError(f"no atlas database at {source}")
    if link.exists() and not link.is_symlink():
        raise AtlasError(f"{link} exists and is not a symlink; publish needs a path of its own for the link")
    if keep < 1:
        raise AtlasError(f"--keep {keep}: at least the published version must be kept")
    src = verify(source)  # also refuses a file a writer holds (DatabaseLockedError)
    version, tmp = _reserve_version(link)
    try:
        shutil.copyfile(source, tmp)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():  # not checkpointed: the copy replays it when opened read-write below
            shutil.copyfile(wal, tmp.with_name(tmp.name + ".wal"))
        with open_duckdb(tmp, read_only=False) as con:
            materialize_adjacency(con)
            con.execute("CHECKPOINT")
        copy = verify(tmp).rows()
        wrong = {t: (n, copy.get(t)) for t, n in src.rows().items() if copy.get(t) != n}
        if wrong:
            raise CorruptDatabaseError(
                f"the published copy of {source} does not hold the source's rows "
                f"(table: source rows, copy rows): {wrong}"
            )
        os.replace(tmp, version)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        raise
    _flip(link, version)
    _prune(link, version, keep)
    return version


def _flip(link: Path, version: Path) -> None:
    """Point ``link`` at ``version`` with one atomic rename of a fresh relative symlink."""
    tmp_link = link.with_name(f".{link.name}.{version.name}.link")
    os.symlink(version.name, tmp_link)  # relative: the link and its versions move together
    os.replace(tmp_link, link)


def _prune(link: Path, version: Path, keep: int) -> None:
    """Unlink all but the ``keep`` highest-numbered versions, never the link's target nor ``version``."""
    target = os.readlink(link) if link.is_symlink() else None
    for _, old in version_files(link)[:-keep]:
        if old.name != target and old != version:
            old.unlink(missing_ok=True)
