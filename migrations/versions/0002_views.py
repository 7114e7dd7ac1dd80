"""Views for the common questions, and the adjacency lists the API reads edges through.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

docs/sql.md documents every view. Two of them, ``edges_in`` and ``edges_out``, are the
adjacency lists of the edge graph: every edge keyed by its downstream (``edges_in``) or upstream
(``edges_out``) end, ``fid``, with the other end in ``other``. Here they are plain views over
``edges``, correct on any atlas; ``atlas db publish`` (atlas/publish.py) materializes them,
from the views the file holds, as tables sorted by (fid, kind, variant, |weight| desc) in the
published copy, so a feature's edges are contiguous and DuckDB's zone maps skip every other row group.
(Measured on 13M edges: flat sorted rows answer a top-k in ~2 ms and 20 scattered features in
~17 ms; LIST-per-feature rows took ~2-9 ms and ~65 ms, as fetching list columns is costly.)
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# side -> (this feature's column, the other end's column)
ADJACENCY = {"edges_in": ("dst_fid", "src_fid"), "edges_out": ("src_fid", "dst_fid")}


def adjacency_sql(name: str) -> str:
    """The SELECT of one adjacency list: one row per edge, keyed by this end's fid."""
    this, other = ADJACENCY[name]
    return f"""
    SELECT {this} AS fid, kind, variant, {other} AS other, weight, rel_contribution FROM edges
    """


VIEWS = {
    # One row per feature, with its public id (Neuronpedia convention model/source/index).
    "feature_ids": """
    SELECT f.fid, s.model_id || '/' || s.source_id || '/' || f.idx AS public_id,
           s.model_id, s.source_id, s.set_name, f.layer, f.idx, f.sid
    FROM features f JOIN sources s USING (sid)
    """,
    # What a researcher scans first: description, validation, activity, best explanation.
    "feature_summary": """
    SELECT i.fid, i.public_id, i.model_id, i.source_id, i.layer, i.idx,
           array_to_string(w.description, ', ') AS description, w.validated, w.validation_soft,
           w.n_input_tokens, w.n_upstream, st.frequency, st.max_act, st.mean_act,
           (SELECT count(*) FROM explanations x WHERE x.fid = i.fid) AS n_explanations
    FROM feature_ids i
    LEFT JOIN feature_weightlens w USING (fid)
    LEFT JOIN feature_stats st USING (fid)
    """,
    # Every edge with both public ids and layers.
    "edge_list": """
    SELECT e.kind, e.variant, e.weight, e.rel_contribution,
           a.public_id AS src_id, a.layer AS src_layer, b.public_id AS dst_id, b.layer AS dst_layer,
           e.src_fid, e.dst_fid, e.run_id
    FROM edges e JOIN feature_ids a ON a.fid = e.src_fid JOIN feature_ids b ON b.fid = e.dst_fid
    """,
    "edges_in": adjacency_sql("edges_in"),
    "edges_out": adjacency_sql("edges_out"),
    # Features whose (validated or not) input tokens include a token: who reads it.
    "token_readers": """
    SELECT t.token, t.token_id, t.rank, t.score, t.zscore, t.validated, i.public_id, i.layer, t.fid
    FROM feature_tokens t JOIN feature_ids i USING (fid) WHERE t.side = 'input'
    """,
    # Features that promote (or suppress) a token through the unembedding: who writes it.
    "token_writers": """
    SELECT t.token, t.token_id, t.side, t.rank, t.score, t.zscore, i.public_id, i.layer, t.fid
    FROM feature_tokens t JOIN feature_ids i USING (fid) WHERE t.side IN ('promoted', 'suppressed')
    """,
    # How much of each layer the atlas covers.
    "coverage_per_layer": """
    SELECT s.model_id, s.source_id, s.layer, s.d_sae AS n_features,
           (SELECT count(*) FROM feature_weightlens w JOIN features f USING (fid)
             WHERE f.sid = s.sid AND len(w.description) > 0) AS n_described,
           (SELECT count(*) FROM feature_weightlens w JOIN features f USING (fid)
             WHERE f.sid = s.sid AND w.validated) AS n_validated,
           (SELECT count(*) FROM feature_stats st JOIN features f USING (fid)
             WHERE f.sid = s.sid AND st.n_active > 0) AS n_alive,
           (SELECT count(DISTINCT x.fid) FROM explanations x JOIN features f USING (fid)
             WHERE f.sid = s.sid) AS n_explained
    FROM sources s
    """,
    # Explanations with their public feature id and every score, one row per (explanation, score).
    "explanation_scores": """
    SELECT i.public_id, i.layer, x.explanation_id, x.cluster_label, x.method AS explanation_method,
           x.text, sc.method AS score_method, sc.metric, sc.value, sc.data
    FROM explanations x JOIN feature_ids i USING (fid)
    LEFT JOIN scores sc USING (explanation_id)
    """,
}


def upgrade() -> None:
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"DROP TABLE IF EXISTS {name}")  # edges_in/edges_out once published
