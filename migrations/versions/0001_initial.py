"""The initial atlas schema: models, transcoder sources, features and everything computed about them.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Conventions (docs/schema.md explains each table):
- A feature is one BIGINT ``fid = sid * 2**32 + idx``; ``sid`` is the integer key of its source
  (one transcoder layer). Public ids are ``model_id / source_id / idx`` (Neuronpedia's convention).
- Every computed row carries the ``run_id`` of the ingest run that wrote it.
- Bulk tables (edges, feature_tokens, examples, attributions) have no primary key or foreign
  key: they are written by whole units of work (delete the unit's rows, insert, mark the unit
  done, all in one transaction; see atlas/db.py), and keys would slow those bulk loads.
- Methods and parameters are stored as JSON next to every explanation, score and metric, so
  results of different judges and settings sit side by side.
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATEMENTS = [
    # ---- what was loaded -------------------------------------------------------------------
    """
    CREATE TABLE models (
        model_id      VARCHAR PRIMARY KEY,      -- e.g. 'gpt2-small', 'gemma-3-270m'
        tl_name       VARCHAR,                  -- TransformerLens name the model was built as
        loader        VARCHAR NOT NULL,         -- 'tl' | 'hf-dir' | 'gguf' | 'random'
        uri           VARCHAR,                  -- where the weights came from
        n_layers      INTEGER NOT NULL,
        d_model       INTEGER NOT NULL,
        d_mlp         INTEGER,
        n_heads       INTEGER,
        d_vocab       INTEGER NOT NULL,
        bos_token_id  INTEGER,
        provenance    JSON,
        created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
    )
    """,
    "CREATE SEQUENCE source_sid START 1",
    """
    CREATE TABLE sources (
        sid         INTEGER PRIMARY KEY DEFAULT nextval('source_sid'),
        model_id    VARCHAR NOT NULL,
        source_id   VARCHAR NOT NULL,           -- '{layer}-{set_name}', e.g. '8-tres-dc'
        set_name    VARCHAR NOT NULL,           -- the transcoder set, e.g. 'gemmascope-transcoder-16k'
        layer       INTEGER NOT NULL,
        d_in        INTEGER NOT NULL,
        d_out       INTEGER NOT NULL,
        d_sae       INTEGER NOT NULL,
        hook_in     VARCHAR NOT NULL,           -- TransformerLens hook it reads
        hook_out    VARCHAR NOT NULL,           -- TransformerLens hook it writes
        activation  VARCHAR NOT NULL CHECK (activation IN ('relu', 'jumprelu', 'topk')),
        has_skip    BOOLEAN NOT NULL DEFAULT false,
        dtype       VARCHAR,
        format      VARCHAR NOT NULL,           -- loader format, e.g. 'saelens-dir', 'dunefsky-pt'
        uri         VARCHAR,                    -- file, directory or 'release/id'
        sha256      VARCHAR,
        provenance  JSON,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        UNIQUE (model_id, source_id)
    )
    """,
    """
    CREATE TABLE features (
        fid    BIGINT PRIMARY KEY,              -- sid * 2^32 + idx
        sid    INTEGER NOT NULL,
        layer  INTEGER NOT NULL,
        idx    INTEGER NOT NULL
    )
    """,
    # ---- metrics of a whole source (reconstruction quality, WeightLens coverage, ...) --------
    """
    CREATE TABLE source_metrics (
        sid      INTEGER NOT NULL,
        method   VARCHAR NOT NULL,              -- 'reconstruction', 'weightlens', 'training', ...
        metric   VARCHAR NOT NULL,              -- 'fve', 'l0', 'dead_share', 'coverage', ...
        value    DOUBLE,
        data     VARCHAR,                       -- the text / split it was measured on
        params   JSON,
        run_id   VARCHAR,
        PRIMARY KEY (sid, method, metric)
    )
    """,
    # ---- WeightLens (docs/method.md §2) ---------------------------------------------------
    """
    CREATE TABLE feature_weightlens (
        fid              BIGINT PRIMARY KEY,
        validated        BOOLEAN NOT NULL,      -- [BOS] + description activates the feature
        validation_soft  DOUBLE,                -- share of inherited tokens that activate it
        n_input_tokens   INTEGER NOT NULL,      -- validated input tokens (before inheritance)
        n_upstream       INTEGER NOT NULL,      -- kept upstream virtual-weight links
        description      VARCHAR[],             -- post-processed description terms
        run_id           VARCHAR
    )
    """,
    """
    CREATE TABLE feature_tokens (
        fid        BIGINT NOT NULL,
        side       VARCHAR NOT NULL CHECK (side IN ('input', 'promoted', 'suppressed', 'description')),
        rank       INTEGER NOT NULL,            -- 0 = strongest
        token_id   INTEGER,                     -- NULL for post-processed description terms
        token      VARCHAR NOT NULL,
        score      DOUBLE,                      -- raw projection (W_E f_enc or f_dec W_U)
        zscore     DOUBLE,
        validated  BOOLEAN,                     -- isolation check result ('input' side only)
        run_id     VARCHAR
    )
    """,
    """
    CREATE TABLE edges (
        src_fid           BIGINT NOT NULL,      -- upstream feature
        dst_fid           BIGINT NOT NULL,      -- downstream feature
        kind              VARCHAR NOT NULL CHECK (kind IN ('virtual', 'era', 'twera')),
        variant           VARCHAR NOT NULL,     -- e.g. 'raw', 'ln_centered'; see docs/methods.md
        weight            DOUBLE NOT NULL,
        rel_contribution  DOUBLE,               -- |c| / (sum|s| + sum|c|), WeightLens edges
        run_id            VARCHAR
    )
    """,
    # ---- activations over a corpus (docs/method.md §3, §4.1) ------------------------------
    """
    CREATE TABLE feature_stats (
        fid          BIGINT PRIMARY KEY,
        n_tokens     BIGINT NOT NULL,           -- tokens seen
        n_active     BIGINT NOT NULL,
        frequency    DOUBLE NOT NULL,
        max_act      DOUBLE,
        mean_act     DOUBLE,                    -- mean over active tokens
        quantiles    DOUBLE[],                  -- of non-zero activations, at quantile_levels
        quantile_levels DOUBLE[],
        hist_edges   DOUBLE[],
        hist_counts  BIGINT[],
        run_id       VARCHAR
    )
    """,
    "CREATE SEQUENCE example_id_seq START 1",
    """
    CREATE TABLE examples (
        example_id     BIGINT NOT NULL DEFAULT nextval('example_id_seq'),
        fid            BIGINT NOT NULL,
        kind           VARCHAR NOT NULL CHECK (kind IN ('top', 'quantile')),
        bin            INTEGER,                 -- quantile bin (0..19) for 'quantile' examples
        sample_weight  DOUBLE,                  -- 1 / n_bin^0.9
        doc_id         BIGINT NOT NULL,         -- sequence in the corpus
        pos            INTEGER NOT NULL,        -- the activating token, in the document
        activation     DOUBLE NOT NULL,
        window_start   INTEGER NOT NULL,        -- document position of tokens[0]
        tokens         INTEGER[] NOT NULL,      -- token ids in the window
        token_strs     VARCHAR[] NOT NULL,
        acts           FLOAT[] NOT NULL,        -- the feature's activation at each window token
        run_id         VARCHAR
    )
    """,
    # ---- CircuitLens (docs/method.md §4) --------------------------------------------------
    """
    CREATE TABLE attributions (
        example_id  BIGINT NOT NULL,
        fid         BIGINT NOT NULL,            -- the explained feature
        side        VARCHAR NOT NULL CHECK (side IN ('input', 'output')),
        kind        VARCHAR NOT NULL,           -- 'feature', 'head', 'token', 'bias', 'error', 'logit'
        layer       INTEGER,
        src_fid     BIGINT,                     -- kind = 'feature'
        head        INTEGER,                    -- kind = 'head'
        src_pos     INTEGER,                    -- source position in the document
        rel_pos     INTEGER,                    -- src_pos - target position (<= 0)
        token_id    INTEGER,                    -- kind = 'token' or 'logit'
        value       DOUBLE NOT NULL,
        run_id      VARCHAR
    )
    """,
    """
    CREATE TABLE clusters (
        fid           BIGINT NOT NULL,
        label         INTEGER NOT NULL,         -- -1 = noise (DBSCAN)
        n_examples    INTEGER NOT NULL,
        contributors  JSON,                     -- the contributors shared by the cluster
        summary       JSON,                     -- driving tokens in context, upstream features, outputs
        run_id        VARCHAR,
        PRIMARY KEY (fid, label)
    )
    """,
    """
    CREATE TABLE cluster_members (
        fid         BIGINT NOT NULL,
        label       INTEGER NOT NULL,
        example_id  BIGINT NOT NULL,
        run_id      VARCHAR
    )
    """,
    # ---- descriptions and their scores (docs/method.md §4.5, §5) --------------------------
    "CREATE SEQUENCE explanation_id_seq START 1",
    """
    CREATE TABLE explanations (
        explanation_id  BIGINT PRIMARY KEY DEFAULT nextval('explanation_id_seq'),
        fid             BIGINT NOT NULL,
        cluster_label   INTEGER,                -- NULL: the whole feature
        method          VARCHAR NOT NULL,       -- 'weightlens', 'circuitlens-template', 'llm', ...
        text            VARCHAR NOT NULL,
        tokens          VARCHAR[],
        params          JSON,                   -- inputs and parameters (an LLM's name and prompt)
        run_id          VARCHAR,
        created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
    )
    """,
    "CREATE SEQUENCE score_id_seq START 1",
    """
    CREATE TABLE scores (
        score_id        BIGINT PRIMARY KEY DEFAULT nextval('score_id_seq'),
        explanation_id  BIGINT,
        fid             BIGINT NOT NULL,
        method          VARCHAR NOT NULL,       -- 'token-membership', 'fade', ...
        metric          VARCHAR NOT NULL,       -- 'precision', 'recall', 'auroc', 'clarity', ...
        value           DOUBLE,
        data            VARCHAR,                -- the held-out text it was measured on
        params          JSON,
        run_id          VARCHAR,
        created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
    )
    """,
    # ---- ingest bookkeeping -------------------------------------------------------------------
    """
    CREATE TABLE ingest_runs (
        run_id         VARCHAR PRIMARY KEY,
        job            VARCHAR NOT NULL,        -- 'weightlens', 'activations', 'circuitlens', ...
        model_id       VARCHAR,
        config         JSON NOT NULL,
        status         VARCHAR NOT NULL CHECK (status IN ('running', 'done', 'failed')),
        atlas_version  VARCHAR,
        started_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
        finished_at    TIMESTAMP,
        error          VARCHAR
    )
    """,
    """
    CREATE TABLE ingest_units (
        job          VARCHAR NOT NULL,
        scope        VARCHAR NOT NULL,          -- usually the model id
        unit         VARCHAR NOT NULL,          -- e.g. 'layer-3'
        config_hash  VARCHAR NOT NULL,          -- a unit is done for one configuration
        run_id       VARCHAR,
        n_rows       BIGINT,
        completed_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (job, scope, unit, config_hash)
    )
    """,
]

TABLES = [
    "ingest_units",
    "ingest_runs",
    "scores",
    "explanations",
    "cluster_members",
    "clusters",
    "attributions",
    "examples",
    "feature_stats",
    "edges",
    "feature_tokens",
    "feature_weightlens",
    "source_metrics",
    "features",
    "sources",
    "models",
]
SEQUENCES = ["score_id_seq", "explanation_id_seq", "example_id_seq", "source_sid"]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
    for sequence in SEQUENCES:
        op.execute(f"DROP SEQUENCE IF EXISTS {sequence}")
