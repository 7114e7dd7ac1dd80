"""Publishing a new atlas version under continuous query load: no errors, no downtime, old files closed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from atlas import db
from atlas.errors import AtlasError
from atlas.publish import publish

QUERY = '{ feature(id: "gpt2-small/3-synth/5") { upstream(topK: 1) { weight } } stats { nFeatures } }'


def strongest_weight(path) -> float:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "SELECT e.weight FROM edges e JOIN features f ON f.fid = e.dst_fid WHERE f.layer = 3 AND f.idx = 5 "
            "AND kind = 'virtual' ORDER BY abs(weight) DESC LIMIT 1"
        ).fetchone()[0]


def test_publish_flip_under_load(tmp_path, api_server):
    from bench.synthetic_atlas import SyntheticSpec, build

    spec = dict(n_layers=4, d_sae=64, k_up=6, n_tokens=2, n_examples=1)
    works = [build(tmp_path / f"work{seed}.duckdb", SyntheticSpec(**spec, seed=seed)) for seed in range(3)]
    expected = [strongest_weight(w) for w in works]
    assert len(set(expected)) == 3  # each version answers differently
    link = tmp_path / "current.duckdb"
    publish(works[0], link)
    url = api_server(link)

    seen, failures, stop = [], [], threading.Event()

    def client():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    body = http.post(f"{url}/graphql", json={"query": QUERY}).json()
                    if "errors" in body:
                        failures.append(body["errors"])
                    else:
                        seen.append(body["data"]["feature"]["upstream"][0]["weight"])
                except Exception as exc:  # noqa: BLE001 - a dropped connection is a failure too
                    failures.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        for work in works[1:]:
            time.sleep(0.5)
            publish(work, link, keep=2)
        time.sleep(0.5)
    finally:
        stop.set()
        for c in clients:
            c.join()

    assert failures == []
    assert set(seen) == set(expected)  # every version was served, and nothing else
    assert seen[-1] == expected[-1]
    # one link, the two newest versions kept; the first version's file is gone
    assert os.path.islink(link) and len(list(tmp_path.glob("current.duckdb.*T*"))) == 2
    database = api_server.apps[url].database
    assert database.opened == 3 and database.current.path == os.path.realpath(link)


def test_a_bad_or_broken_link_keeps_the_current_version_until_a_good_one_is_published(tmp_path, synthetic_atlas):
    from api.context import AtlasDatabase

    work, _ = synthetic_atlas("tiny")
    link = tmp_path / "current.duckdb"
    publish(work, link)
    served = AtlasDatabase(link)
    first = served.acquire()

    def point_link_at(target: Path) -> None:
        tmp = tmp_path / "link.tmp"
        tmp.symlink_to(target)
        os.replace(tmp, link)

    not_an_atlas = tmp_path / "plain.duckdb"
    duckdb.connect(str(not_an_atlas)).close()
    for target in (not_an_atlas, tmp_path / "missing.duckdb"):
        point_link_at(target)
        v = served.acquire()
        assert v is first and served.opened == 1  # still answering from the first version
        served.release(v)
    publish(work, link)
    second = served.acquire()
    assert second is not first and served.opened == 2 and first.retired
    served.release(first)  # its last request ends: it is closed
    with pytest.raises(duckdb.ConnectionException):
        first.con.execute("SELECT 1")
    served.release(second)
    served.close()


def test_publish_refuses_a_file_being_written_and_a_plain_file_link(tmp_path, atlas_db):
    writer = db.AtlasWriter(atlas_db)
    try:
        with pytest.raises(AtlasError, match="is an ingest job still writing it"):
            publish(atlas_db, tmp_path / "current.duckdb")
    finally:
        writer.close()
    plain = tmp_path / "plain.duckdb"
    plain.write_bytes(b"")
    with pytest.raises(AtlasError, match="not a symlink"):
        publish(atlas_db, plain)


def test_publish_materializes_adjacency_lists_with_the_same_answers(synthetic_atlas):
    work, current = synthetic_atlas("tiny-views")  # a file no server of this process holds
    q = "SELECT * FROM {} ORDER BY fid, kind, variant, other"
    with duckdb.connect(str(work), read_only=True) as con:
        assert (
            con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'edges_in'").fetchone()[0]
            == "VIEW"
        )
        as_views = [con.execute(q.format(t)).fetchall() for t in ("edges_in", "edges_out")]
    with duckdb.connect(str(current), read_only=True) as con:
        assert (
            con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'edges_in'").fetchone()[0]
            == "BASE TABLE"
        )
        assert [con.execute(q.format(t)).fetchall() for t in ("edges_in", "edges_out")] == as_views


def _catalog(con) -> dict[str, tuple[str, str | None]]:
    """name -> (table type, view SQL or None) of every table and view of the file."""
    views = dict(
        con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'").fetchall()
    )
    kinds = con.execute(
        "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()
    return {name: (kind, views.get(name)) for name, kind in kinds}


def test_published_copy_has_the_same_views_and_answers_the_same_queries(synthetic_atlas):
    work, current = synthetic_atlas("tiny-views")
    with duckdb.connect(str(work), read_only=True) as src, duckdb.connect(str(current), read_only=True) as pub:
        before, after = _catalog(src), _catalog(pub)
        assert set(before) == set(after) and {"feature_summary", "edges_in", "coverage_per_layer"} <= set(before)
        for name, (kind, sql) in before.items():
            if name in ("edges_in", "edges_out"):  # the adjacency lists: materialized
                assert kind == "VIEW" and after[name] == ("BASE TABLE", None)
            else:
                assert after[name] == (kind, sql), name
            q = f"SELECT * FROM {name} ORDER BY ALL"
            assert pub.execute(q).fetchall() == src.execute(q).fetchall(), name


PUBLISH_AND_LIST_MODULES = """
import sys
from atlas.publish import publish
publish(sys.argv[1], sys.argv[2])
print(sorted(m for m in sys.modules if m.startswith("migrations.")))
"""


def test_publish_builds_from_the_files_views_and_imports_no_migration(synthetic_atlas, tmp_path):
    """The adjacency tables are the file's own views' rows (here a view redefined after the migrations),
    and the publishing process never imports a migration module."""
    import shutil
    import subprocess
    import sys

    work = tmp_path / "redefined.duckdb"
    shutil.copyfile(synthetic_atlas("tiny-views")[0], work)
    with duckdb.connect(str(work)) as con:
        con.execute(
            "CREATE OR REPLACE VIEW edges_in AS SELECT dst_fid AS fid, kind, variant, src_fid AS other, "
            "weight, rel_contribution FROM edges WHERE weight > 0"
        )
        n_edges, n_positive = con.execute("SELECT count(*), count(*) FILTER (weight > 0) FROM edges").fetchone()
    assert 0 < n_positive < n_edges
    link = tmp_path / "current.duckdb"
    proc = subprocess.run(
        [sys.executable, "-c", PUBLISH_AND_LIST_MODULES, str(work), str(link)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert proc.stdout.strip() == "[]"
    with duckdb.connect(str(link), read_only=True) as con:
        assert con.execute("SELECT count(*), min(weight) > 0 FROM edges_in").fetchone() == (n_positive, True)
        assert con.execute("SELECT count(*) FROM edges_out").fetchone()[0] == n_edges


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_publish_and_serve(tmp_path, synthetic_atlas, cli, workers):
    import socket
    import subprocess
    import sys

    work, _ = synthetic_atlas("tiny")
    link = tmp_path / "served.duckdb"
    assert "served.duckdb -> served.duckdb." in cli("db", "publish", str(work), str(link)).stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--db", str(link), "--port", str(port), "--workers", workers],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(400):
            try:
                body = httpx.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": "{ stats { nFeatures } }"}, timeout=2
                ).json()
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert body == {"data": {"stats": {"nFeatures": 256}}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    missing = cli("serve", "--db", str(tmp_path / "nope.duckdb"), check=False)
    assert missing.returncode == 2 and "no atlas database at" in missing.stderr
