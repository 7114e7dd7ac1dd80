"""WeightLens profiles: negative input tokens, description length, the profile of each run, coverage.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

1. ``feature_tokens.side`` also takes ``'input_negative'``: the bottom-pool input outliers
   (z < -threshold of W_E · f_enc), which the reference records. DuckDB cannot change a CHECK
   constraint in place, so the table is rebuilt (same columns, rows copied in order).
2. ``feature_weightlens.n_description_tokens``: the length of the raw description D(l, i)
   (backfilled from the stored ``description`` token rows).
3. ``ingest_runs.profile`` and ``source_metrics.profile``: the WeightLens profile ('atlas' or
   'reference') a run / a coverage figure was made with (rows written before this revision were
   made by the only profile there was, 'atlas').
4. ``coverage_per_layer`` defines the counts in one place (docs/sql.md repeats it):
   - described: a non-empty raw description D(l, i) (``n_description_tokens > 0``);
   - validated: D(l, i) run as one sequence activates the feature (only a described feature can be);
   - weightlens_explained: validated and at least one post-processed term (a 'weightlens' explanation);
   - explained: at least one explanation of any method (WeightLens or CircuitLens).
   So weightlens_explained <= validated <= described, and weightlens_explained <= explained.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SIDES = ("input", "input_negative", "promoted", "suppressed", "description")

FEATURE_TOKENS = """
CREATE TABLE {name} (
    fid        BIGINT NOT NULL,
    side       VARCHAR NOT NULL CHECK (side IN ({sides})),
    rank       INTEGER NOT NULL,            -- 0 = strongest (description: position in D)
    token_id   INTEGER,                     -- NULL for post-processed description terms
    token      VARCHAR NOT NULL,
    score      DOUBLE,                      -- raw projection (W_E f_enc or f_dec W_U)
    zscore     DOUBLE,
    validated  BOOLEAN,                     -- isolation check result ('input' side only)
    run_id     VARCHAR
)
"""

COLUMNS = "fid, side, rank, token_id, token, score, zscore, validated, run_id"

COVERAGE_PER_LAYER = """
SELECT s.model_id, s.source_id, s.layer, s.d_sae AS n_features,
       (SELECT count(*) FROM feature_weightlens w JOIN features f USING (fid)
         WHERE f.sid = s.sid AND w.n_description_tokens > 0) AS n_described,
       (SELECT count(*) FROM feature_weightlens w JOIN features f USING (fid)
         WHERE f.sid = s.sid AND w.validated) AS n_validated,
       (SELECT count(*) FROM feature_stats st JOIN features f USING (fid)
         WHERE f.sid = s.sid AND st.n_active > 0) AS n_alive,
       (SELECT count(DISTINCT x.fid) FROM explanations x JOIN features f USING (fid)
         WHERE f.sid = s.sid) AS n_explained,
       (SELECT count(DISTINCT x.fid) FROM explanations x JOIN features f USING (fid)
         WHERE f.sid = s.sid AND x.method = 'weightlens') AS n_weightlens_explained,
       (SELECT m.profile FROM source_metrics m
         WHERE m.sid = s.sid AND m.method = 'weightlens' AND m.metric = 'coverage') AS profile
FROM sources s
"""


def _sides(sides) -> str:
    return ", ".join(f"'{s}'" for s in sides)


def _rebuild_feature_tokens(sides) -> None:
    op.execute(FEATURE_TOKENS.format(name="feature_tokens_0003", sides=_sides(sides)))
    op.execute(
        f"INSERT INTO feature_tokens_0003 ({COLUMNS}) SELECT {COLUMNS} FROM feature_tokens "
        f"WHERE side IN ({_sides(sides)})"
    )
    op.execute("DROP TABLE feature_tokens")
    op.execute("ALTER TABLE feature_tokens_0003 RENAME TO feature_tokens")


def upgrade() -> None:
    _rebuild_feature_tokens(SIDES)
    op.execute("ALTER TABLE feature_weightlens ADD COLUMN n_description_tokens INTEGER")
    op.execute("""
    UPDATE feature_weightlens SET n_description_tokens = coalesce(
        (SELECT count(*) FROM feature_tokens t WHERE t.fid = feature_weightlens.fid AND t.side = 'description'), 0)
    """)
    op.execute("ALTER TABLE ingest_runs ADD COLUMN profile VARCHAR")
    op.execute("UPDATE ingest_runs SET profile = 'atlas' WHERE job = 'weightlens'")
    op.execute("ALTER TABLE source_metrics ADD COLUMN profile VARCHAR")
    op.execute("UPDATE source_metrics SET profile = 'atlas' WHERE method = 'weightlens'")
    op.execute("DROP VIEW IF EXISTS coverage_per_layer")
    op.execute(f"CREATE VIEW coverage_per_layer AS {COVERAGE_PER_LAYER}")


def downgrade() -> None:
    import importlib

    old = importlib.import_module("migrations.versions.0002_views").VIEWS["coverage_per_layer"]
    op.execute("DROP VIEW IF EXISTS coverage_per_layer")
    op.execute(f"CREATE VIEW coverage_per_layer AS {old}")
    op.execute("ALTER TABLE source_metrics DROP COLUMN profile")
    op.execute("ALTER TABLE ingest_runs DROP COLUMN profile")
    op.execute("ALTER TABLE feature_weightlens DROP COLUMN n_description_tokens")
    _rebuild_feature_tokens(tuple(s for s in SIDES if s != "input_negative"))
