"""Feature-id macros: the fid arithmetic of atlas/ids.py, in SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

A feature is one BIGINT ``fid = sid * 2**32 + idx`` (migration 0001). These macros are the one
place SQL packs and unpacks it, as ``make_fid``/``split_fid`` are in Python (atlas/ids.py); tests
check that both agree. CREATE MACRO stores them in the database file, so every copy of an atlas
(a published version, a read-only connection) has them. docs/sql.md ("Macros") documents them.

- ``make_fid(sid, idx)``: the fid; an error names the value unless 0 <= sid < 2**31 and
  0 <= idx < 2**32 (atlas.ids.MAX_SID, MAX_INDEX).
- ``fid_source(fid)``: the source's ``sid`` (``fid >> 32``).
- ``fid_index(fid)``: the feature's index in its source (``fid & (2**32 - 1)``).

They are plain expressions, so a query using them plans exactly as the shifts they replace.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MACROS = {
    "make_fid": """(sid, idx) AS CASE
        WHEN sid < 0 OR sid > 2147483647
            THEN error('make_fid: source id ' || sid || ' is outside [0, 2147483648) and does not fit a feature id')
        WHEN idx < 0 OR idx > 4294967295
            THEN error('make_fid: feature index ' || idx || ' is outside [0, 4294967296) and does not fit a feature id')
        ELSE (sid::BIGINT << 32) + idx
    END""",
    "fid_source": "(fid) AS fid >> 32",
    "fid_index": "(fid) AS fid & 4294967295",
}


def upgrade() -> None:
    for name, body in MACROS.items():
        op.execute(f"CREATE MACRO {name}{body}")


def downgrade() -> None:
    for name in reversed(list(MACROS)):
        op.execute(f"DROP MACRO IF EXISTS {name}")
