"""A publish verifies its file whole before the flip; version names are ordered by a sequence;
retention never deletes the link's target; damaged, foreign and locked files get clear errors from
the CLI (issue 16, items 2, 3 and 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import httpx
import pytest

from atlas import db
from atlas.errors import CorruptDatabaseError
from atlas.publish import publish, version_files

BLOCK = 262144  # DuckDB's block size
HEADER = 3 * 4096  # file header + two database headers before block 0


def data_block_offset(path: Path, table: str = "edges") -> int:
    """The file offset of a block that holds rows of ``table`` (so damage there is read by a query)."""
    with duckdb.connect(str(path), read_only=True) as con:
        block = con.execute(f"SELECT min(block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0").fetchone()[
            0
        ]
    return HEADER + block * BLOCK


def damaged_copies(work: Path, root: Path) -> dict[str, Path]:
    size = work.stat().st_size
    truncated = root / "truncated.duckdb"
    shutil.copyfile(work, truncated)
    os.truncate(truncated, size // 2)
    random_bytes = root / "random-middle.duckdb"
    shutil.copyfile(work, random_bytes)
    with open(random_bytes, "r+b") as f:
        f.seek(data_block_offset(work) + 4096)
        f.write(os.urandom(65536))
    foreign = root / "foreign.duckdb"
    foreign.write_bytes(os.urandom(20000))
    return {"truncated": truncated, "random-middle": random_bytes, "foreign": foreign}


@pytest.fixture(scope="module")
def served(synthetic_atlas, api_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    work, _ = synthetic_atlas("tiny")
    link = root / "current.duckdb"
    first = publish(work, link)
    return root, work, link, first, api_server(link)


@pytest.mark.parametrize("damage", ["truncated", "random-middle", "foreign"])
def test_publish_refuses_a_damaged_file_and_the_link_stays(served, cli, damage):
    root, work, link, _, url = served
    before = os.readlink(link)
    (root / damage).mkdir()
    bad = damaged_copies(work, root / damage)[damage]
    proc = cli("db", "publish", str(bad), str(link), check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert any(s in proc.stderr for s in ("is damaged", "is not a DuckDB database file", "cannot be opened")), (
        proc.stderr
    )
    assert os.readlink(link) == before
    assert not list(link.parent.glob("*.tmp")), "the refused copy is removed"
    status = cli("db", "status", str(bad), check=False)
    assert status.returncode == 2 and status.stderr.startswith("error: ") and "Traceback" not in status.stderr
    body = httpx.post(f"{url}/graphql", json={"query": "{ stats { nFeatures } }"}).json()
    assert body == {"data": {"stats": {"nFeatures": 256}}}


def test_random_bytes_in_a_data_block_are_found_by_verify(served):
    root, work, *_ = served
    (root / "v").mkdir()
    bad = damaged_copies(work, root / "v")["random-middle"]
    with duckdb.connect(str(bad), read_only=True) as con:  # what the old check did: opens, counts rows
        assert con.execute("SELECT count(*) FROM edges").fetchone()[0] > 0
    with pytest.raises(CorruptDatabaseError, match="table edges cannot be read to its end"):
        db.verify(bad)
    assert {t.table: t.rows for t in db.verify(work).tables}["edges"] > 0


@pytest.mark.parametrize("keep", [1, 3])
def test_rapid_publishes_keep_the_newest_and_never_delete_the_target(synthetic_atlas, tmp_path, keep):
    work, _ = synthetic_atlas("tiny")
    link = tmp_path / "current.duckdb"
    published = []
    for _ in range(8):  # several within one second: names with equal times
        version = publish(work, link, keep=keep)
        published.append(version.name)
        assert os.readlink(link) == version.name and version.exists()
    seqs = [int(n.split(".v")[1].split(".")[0]) for n in published]
    assert seqs == sorted(seqs) and len(set(seqs)) == 8
    left = sorted(p.name for _, p in version_files(link))
    assert left == sorted(published[-keep:])


def test_retention_keeps_the_target_even_when_it_is_not_the_newest(synthetic_atlas, tmp_path):
    work, _ = synthetic_atlas("tiny")
    link = tmp_path / "current.duckdb"
    first = publish(work, link, keep=1)
    (tmp_path / f"{link.name}.v{99:08d}.20990101T000000").write_bytes(b"")  # a higher number, not the target
    second = publish(work, link, keep=1)
    assert os.readlink(link) == second.name and second.exists()
    assert not first.exists()


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from atlas import db
    w = db.AtlasWriter(sys.argv[1])
    print("holding", flush=True)
    time.sleep(3600)   # killed by the test when done (a slow machine can take over a minute for the calls)
""")


def test_locked_foreign_and_unreadable_files_are_clear_errors(tmp_path, atlas_db, cli, write_transcoder_files):
    foreign = tmp_path / "foreign.duckdb"
    foreign.write_bytes(b"not a database at all" * 100)
    folder = tmp_path / "a-folder.duckdb"
    folder.mkdir()
    for path, expected in [(foreign, "is not a DuckDB database file"), (folder, "is a directory")]:
        for args in (["sql", "SELECT 1", "--db", str(path)], ["db", "status", str(path)]):
            proc = cli(*args, check=False)
            assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    script = tmp_path / "hold.py"
    script.write_text(LOCK_HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(atlas_db)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(db.MIGRATIONS_DIR.parent)},
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        tc = write_transcoder_files("saelens", layers=(0,))
        for args in (
            ["sql", "SELECT 1", "--db", str(atlas_db)],
            ["db", "status", str(atlas_db)],
            ["ingest", "weightlens", "--model", "random:tiny", "--transcoders", tc.spec, "--db", str(atlas_db)],
        ):
            proc = cli(*args, check=False)
            assert proc.returncode == 2, proc.stderr
            assert "is open for writing by another process" in proc.stderr and "Traceback" not in proc.stderr, (
                proc.stderr
            )
    finally:
        holder.kill()
        holder.wait()
