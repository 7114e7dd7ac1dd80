"""Feature-id arithmetic has one home: atlas/ids.py in Python, migration 0004's macros in SQL, and both agree."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from atlas import db
from atlas.errors import AtlasError, FeatureIdError
from atlas.ids import (
    MAX_INDEX,
    MAX_SID,
    fid_range,
    make_fid,
    make_fids,
    split_fid,
    split_fids,
)
from atlas.publish import publish

# (sid, idx) pairs at and next to every boundary
PAIRS = [(0, 0), (1, 0), (1, 1), (1, MAX_INDEX), (2, 0), (7, 12345), (MAX_SID, 0), (MAX_SID, MAX_INDEX)]


def test_make_and_split_round_trip_and_sort_by_source_then_index():
    fids = [make_fid(s, i) for s, i in PAIRS]
    assert fids == [s * 2**32 + i for s, i in PAIRS]
    assert [split_fid(f) for f in fids] == PAIRS
    assert split_fid(fids[3]).sid == 1 and split_fid(fids[3]).idx == MAX_INDEX
    assert fids == sorted(fids)  # (sid, idx) order is fid order
    assert make_fid(MAX_SID, MAX_INDEX) == 2**63 - 1  # the largest fid still is a BIGINT


def test_vectorised_helpers_agree_with_the_scalar_ones():
    sids, idxs = np.array([s for s, _ in PAIRS]), np.array([i for _, i in PAIRS])
    fids = make_fids(sids, idxs)
    assert fids.dtype == np.int64 and fids.tolist() == [make_fid(s, i) for s, i in PAIRS]
    back = split_fids(fids)
    assert back.sid.tolist() == sids.tolist() and back.idx.tolist() == idxs.tolist()
    # broadcasting a scalar sid over a 2-D index array keeps the shape: [2, 3]
    grid = make_fids(5, np.arange(6).reshape(2, 3))
    assert grid.shape == (2, 3) and grid[1, 2] == make_fid(5, 5)
    assert split_fids(grid).idx.shape == (2, 3)
    # Python lists, unsigned and narrow dtypes, and empty inputs
    assert make_fids([3, 3], np.array([0, 9], dtype=np.uint32)).tolist() == [make_fid(3, 0), make_fid(3, 9)]
    assert make_fids(np.int32(3), np.array([], dtype=np.int64)).shape == (0,)
    assert split_fids([]).sid.dtype == np.int64


def test_vectorised_helpers_read_torch_tensors():
    torch = pytest.importorskip("torch")
    fids = make_fids(torch.tensor([2, 4]), torch.tensor([10, 20]))
    assert fids.tolist() == [make_fid(2, 10), make_fid(4, 20)]
    assert split_fids(torch.as_tensor(fids)).idx.tolist() == [10, 20]


@pytest.mark.parametrize(
    ("sid", "idx", "message"),
    [
        (1, -1, "feature index -1 is outside"),
        (1, 2**32, f"feature index {2**32} is outside"),
        (-1, 0, "source id -1 is outside"),
        (2**31, 0, f"source id {2**31} is outside"),
    ],
)
def test_out_of_range_parts_are_refused_with_the_value_named(sid, idx, message):
    with pytest.raises(FeatureIdError, match=message):
        make_fid(sid, idx)
    with pytest.raises(FeatureIdError, match=message):
        make_fids(np.array([1, sid]), np.array([0, idx]))


def test_bad_fids_and_non_integer_arrays_are_refused():
    assert issubclass(FeatureIdError, AtlasError) and issubclass(FeatureIdError, ValueError)
    with pytest.raises(FeatureIdError, match="fid -1 is outside"):
        split_fid(-1)
    with pytest.raises(FeatureIdError, match=f"fid {2**63} is outside"):
        split_fid(2**63)
    with pytest.raises(FeatureIdError, match="fid -5 is outside"):
        split_fids(np.array([make_fid(1, 0), -5]))
    with pytest.raises(FeatureIdError, match=f"fid {2**64 - 1} is outside"):  # would wrap to -1 as int64
        split_fids(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(FeatureIdError, match="feature index values must be integers, not float64"):
        make_fids(1, np.array([1.5]))


def test_fid_range_is_half_open():
    whole = fid_range(3)
    assert whole == (make_fid(3, 0), make_fid(4, 0))
    assert whole.contains(make_fid(3, 0)) and whole.contains(make_fid(3, MAX_INDEX))
    assert not whole.contains(make_fid(4, 0)) and not whole.contains(make_fid(2, MAX_INDEX))
    block = fid_range(3, 4, 8)
    assert [i for i in range(12) if block.contains(make_fid(3, i))] == [4, 5, 6, 7]
    assert fid_range(3, 5, 5).lo == fid_range(3, 5, 5).hi  # empty
    assert block.params() == {"lo": make_fid(3, 4), "hi": make_fid(3, 8)}
    assert block.sql("dst_fid") == "dst_fid >= $lo AND dst_fid < $hi"
    for bad in [dict(start=-1), dict(start=5, stop=4), dict(stop=2**32 + 1)]:
        with pytest.raises(FeatureIdError):
            fid_range(3, **bad)
    with pytest.raises(FeatureIdError, match="source id -1"):
        fid_range(-1)


def _source(w: db.AtlasWriter, layer: int, d_sae: int) -> int:
    return w.upsert_source(
        dict(
            model_id="m",
            source_id=f"{layer}-t",
            set_name="t",
            layer=layer,
            d_in=4,
            d_out=4,
            d_sae=d_sae,
            hook_in=f"blocks.{layer}.ln2.hook_normalized",
            hook_out=f"blocks.{layer}.hook_mlp_out",
            activation="relu",
            format="saelens-dir",
        )
    )


def test_sql_macros_agree_with_the_python_helpers(atlas_db):
    with db.AtlasWriter(atlas_db) as w:
        sids = [_source(w, 0, 8), _source(w, 1, 16)]
        # the features table (written by upsert_source through make_fid) holds exactly make_fids's ids
        for sid, n in zip(sids, (8, 16)):
            got = w.fetchall(
                "SELECT fid, fid_source(fid), fid_index(fid), sid, idx FROM features "
                f"WHERE {fid_range(sid).sql()} ORDER BY fid",
                fid_range(sid).params(),
            )
            assert [r[0] for r in got] == make_fids(sid, np.arange(n)).tolist()
            assert all(r[1] == r[3] == sid and r[2] == r[4] for r in got)
        # every boundary pair, packed and unpacked in SQL, as in Python
        rows = w.fetchall(
            "SELECT make_fid(s, i), fid_source(make_fid(s, i)), fid_index(make_fid(s, i)) "
            "FROM (SELECT unnest($s) AS s, unnest($i) AS i)",
            {"s": [s for s, _ in PAIRS], "i": [i for _, i in PAIRS]},
        )
        assert rows == [(make_fid(s, i), s, i) for s, i in PAIRS]
        # a block range selects the same features in SQL as in Python
        block = fid_range(sids[1], 4, 9)
        assert w.fetchall(f"SELECT fid_index(fid) FROM features WHERE {block.sql()} ORDER BY fid", block.params()) == [
            (i,) for i in range(4, 9)
        ]
        for s, i, message in [
            (1, -1, "feature index -1"),
            (1, 2**32, f"feature index {2**32}"),
            (-1, 0, "source id -1"),
            (2**31, 0, f"source id {2**31}"),
        ]:
            with pytest.raises(duckdb.Error, match=message):
                w.fetchall("SELECT make_fid($s::BIGINT, $i::BIGINT)", {"s": s, "i": i})


def test_a_published_copy_answers_with_the_macros(atlas_db, tmp_path):
    with db.AtlasWriter(atlas_db) as w:
        sid = _source(w, 0, 8)
    link = tmp_path / "current.duckdb"
    publish(atlas_db, link)
    con = db.connect_readonly(link)
    try:
        assert con.execute(
            "SELECT count(*), min(fid_index(fid)), max(fid_index(fid)) FROM features WHERE fid_source(fid) = $s",
            {"s": sid},
        ).fetchall() == [(8, 0, 7)]
        assert con.execute("SELECT make_fid($s, 5)", {"s": sid}).fetchall() == [(make_fid(sid, 5),)]
    finally:
        con.close()


def test_the_macros_arrive_with_migration_0004(tmp_path):
    from tests.test_coverage import _upgrade_to

    path = tmp_path / "old.duckdb"
    _upgrade_to(path, "0003")
    macros = "SELECT count(*) FROM duckdb_functions() WHERE function_name IN ('make_fid', 'fid_source', 'fid_index')"
    with duckdb.connect(str(path)) as con:
        assert con.execute(macros).fetchall() == [(0,)]
    db.upgrade(path)
    with duckdb.connect(str(path)) as con:
        assert con.execute(macros).fetchall() == [(3,)]


def test_every_macro_is_documented():
    import importlib

    from tests.conftest import REPO

    doc = (REPO / "docs" / "sql.md").read_text()
    for name in importlib.import_module("migrations.versions.0004_fid_macros").MACROS:
        assert f"| `{name}(" in doc, f"macro {name} is not documented in docs/sql.md"
