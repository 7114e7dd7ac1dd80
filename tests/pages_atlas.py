"""A demo-shaped synthetic atlas with hostile text, for the page and browser tests.

The tiny synthetic atlas (bench/synthetic_atlas.py) plus, on one feature of layer 2 (``HOSTILE``):
tokens, description terms, example tokens, explanations and a cluster summary that contain
``<script>``, ``"onerror=`` and ``javascript:`` payloads; a histogram; top and quantile examples
with known activations; a CircuitLens cluster with contributors and members; and reconstruction
quality (fve, l0, dead_share) for every layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from atlas.ids import split_fid
from atlas.lens.kinds import AttributionKind
from atlas.publish import publish

SCRIPT = "<script>alert('s')</script>"
ONERROR = '"onerror=alert(1) x="'
JSURL = "javascript:alert(2)"
IMG = "<img src=x onerror=alert(3)>"
PAYLOADS = (SCRIPT, ONERROR, JSURL, IMG)
M = "gpt2-small"
HOSTILE_INDEX = None  # set by build(): the layer-2 feature index carrying the payloads
QUALITY = {"fve": 0.8125, "l0": 12.5, "dead_share": 0.0625}
HIST_COUNTS = [40, 25, 12, 6, 3, 1]
TOP_ACTS = [0.0, 0.25, 1.0, 2.0, 0.5, 0.0, 0.125, 0.0]  # 8 tokens; the max (2.0) at window position 3


def build(root: Path) -> tuple[Path, Path, str]:
    """(working file, published link, hostile feature's public id)."""
    from bench.synthetic_atlas import SyntheticSpec
    from bench.synthetic_atlas import build as build_synthetic

    work = build_synthetic(root / "work.duckdb", SyntheticSpec(n_layers=4, d_sae=64, k_up=6, n_tokens=3, n_examples=2))
    con = duckdb.connect(str(work))
    sids = dict(con.execute("SELECT layer, sid FROM sources").fetchall())
    fid = con.execute(
        "SELECT min(t.fid) FROM feature_tokens t WHERE fid_source(t.fid) = $s AND t.side = 'input' "
        "AND t.fid IN (SELECT dst_fid FROM edges) AND t.fid IN (SELECT src_fid FROM edges)",
        {"s": sids[2]},
    ).fetchone()[0]
    index = split_fid(fid).idx
    up = con.execute(
        "SELECT src_fid FROM edges WHERE dst_fid = $f AND kind = 'virtual' ORDER BY abs(weight) DESC LIMIT 1",
        {"f": fid},
    ).fetchone()[0]
    up_layer = next(layer for layer, s in sids.items() if s == split_fid(up).sid)
    up_index = split_fid(up).idx
    con.execute(
        "UPDATE feature_tokens SET token = $t WHERE fid = $f AND side = 'input' AND rank = 0", {"t": SCRIPT, "f": fid}
    )
    con.execute(
        "UPDATE feature_tokens SET token = $t WHERE fid = $f AND side = 'input' AND rank = 1", {"t": ONERROR, "f": fid}
    )
    con.execute(
        "UPDATE feature_tokens SET token = $t WHERE fid = $f AND side = 'promoted' AND rank = 0", {"t": JSURL, "f": fid}
    )
    con.execute(
        "UPDATE feature_weightlens SET description = $d, validated = true WHERE fid = $f", {"d": [IMG, JSURL], "f": fid}
    )
    con.execute(
        "UPDATE feature_stats SET hist_edges = $e, hist_counts = $c, max_act = 2.0 WHERE fid = $f",
        {"e": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "c": HIST_COUNTS, "f": fid},
    )
    con.execute("DELETE FROM examples WHERE fid = $f", {"f": fid})
    toks = [" the", SCRIPT, " of", ONERROR, " and", JSURL, IMG, " end"]
    ids = []
    for i, (kind, scale) in enumerate([("top", 1.0), ("top", 0.75), ("quantile", 0.5), ("quantile", 0.25)]):
        acts = [a * scale for a in TOP_ACTS]
        ids.append(
            con.execute(
                "INSERT INTO examples "
                "(fid, kind, bin, doc_id, pos, activation, window_start, tokens, token_strs, acts) "
                "VALUES ($f, $k, $b, $d, $p, $a, 10, $t, $s, $x) RETURNING example_id",
                {
                    "f": fid,
                    "k": kind,
                    "b": None if kind == "top" else i,
                    "d": 100 + i,
                    "p": 13,
                    "a": max(acts),
                    "t": list(range(8)),
                    "s": toks,
                    "x": acts,
                },
            ).fetchone()[0]
        )
    con.execute("DELETE FROM clusters WHERE fid = $f", {"f": fid})
    con.execute("DELETE FROM explanations WHERE fid = $f", {"f": fid})
    con.execute("DELETE FROM scores WHERE fid = $f", {"f": fid})
    summary = {
        "n_examples": 2,
        "target_tokens": [{"token": SCRIPT, "count": 2}],
        "source_tokens": [{"token": ONERROR, "offset": -2, "count": 2}],
        "snippets": [JSURL],
        "upstream": [{"layer": up_layer, "index": up_index, "share": 1.0, "description": IMG}],
        "heads": [{"layer": 1, "head": 3, "offset": -2, "share": 0.5}],
        "output_tokens": [{"token": JSURL, "count": 1}],
    }
    con.execute(
        "INSERT INTO clusters (fid, label, n_examples, contributors, summary) VALUES ($f, 0, 2, $c, $s)",
        {
            "f": fid,
            "c": json.dumps([{"key": [int(AttributionKind.FEATURE), up_layer, up_index, 0], "n": 2}]),
            "s": json.dumps(summary),
        },
    )
    con.execute(
        "INSERT INTO cluster_members (fid, label, example_id) VALUES ($f, 0, $a), ($f, 0, $b)",
        {"f": fid, "a": ids[0], "b": ids[1]},
    )
    xid = con.execute(
        "INSERT INTO explanations (fid, cluster_label, method, text, tokens) VALUES "
        "($f, NULL, 'llm', $t, $k) RETURNING explanation_id",
        {"f": fid, "t": f"fires on {SCRIPT} then {ONERROR} see {JSURL}", "k": [SCRIPT]},
    ).fetchone()[0]
    con.execute(
        "INSERT INTO scores (explanation_id, fid, method, metric, value, data) VALUES "
        "($x, $f, 'token-membership', 'precision', 0.875, $d)",
        {"x": xid, "f": fid, "d": IMG},
    )
    for layer, sid in sids.items():
        for metric, value in QUALITY.items():
            con.execute(
                "INSERT INTO source_metrics (sid, method, metric, value) VALUES ($s, 'reconstruction', $m, $v)",
                {"s": sid, "m": metric, "v": value + layer},
            )
    con.execute("CHECKPOINT")
    con.close()
    link = root / "current.duckdb"
    publish(work, link)
    return work, link, f"{M}/2-synth/{index}"
