"""Every limit of the API, declared once with its reason (docs/api.md lists them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiLimits:
    max_page: int = 100  # `first` of a connection and `topK` of an edge list
    max_hops: int = 4  # paths(maxHops)
    max_fanout: int = 50  # per-node edges followed by paths and drivers(viaLayer / any)
    max_beam: int = 1000  # partial paths kept per hop
    max_depth: int = 8  # nesting of selections (QueryDepthLimiter)
    max_aliases: int = 20  # aliases in one document (MaxAliasesLimiter)
    max_tokens: int = 2000  # tokens in one document (MaxTokensLimiter)
    max_cost: int = 20000  # sum over list fields of the product of page sizes above them
    max_fields: int = 5000  # fields of the document with every fragment spread in full (api/measure.py)
    max_body_bytes: int = 1 << 20  # HTTP request body (413 above it)
    max_query_bytes: int = 64 << 10  # the query text inside it (413 above it)
    statement_ms: int = 2000  # DuckDB max_execution_time for each SQL statement
    request_s: float = 10.0  # a request stops issuing SQL after this long
    memory_limit: str = "2GB"  # DuckDB memory cap of the serving process
    threads: int = 2  # DuckDB threads
