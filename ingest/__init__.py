"""Ingest jobs: configuration -> lens -> database writer, in resumable units of work."""
