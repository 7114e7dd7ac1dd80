"""SERVE: the GraphQL API over an atlas database (read-only)."""
