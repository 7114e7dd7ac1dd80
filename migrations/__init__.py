"""Versioned schema of an atlas database (alembic scripts; run through ``atlas.db.upgrade``)."""
