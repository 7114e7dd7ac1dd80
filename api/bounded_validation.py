"""Validation in bounded time: the document's measures first, graphql's rules only on what passes.

``BoundedValidation`` (a strawberry extension, in place of QueryDepthLimiter, MaxAliasesLimiter, a
cost rule and ValidationCache):
1. measures the document (api/measure.py: depth, aliases, expanded fields and cost, each computed
   once per fragment definition, so the time is linear in the document's text);
2. refuses a document over any limit with errors that name the limit, without running graphql's
   validation rules (whose walks over fragment spreads could still be long);
3. validates an accepted document with graphql's rules once and caches the verdict (an LRU keyed
   on the parsed document, which ParserCache returns unchanged for the same text).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.cost import cost_message
from api.limits import ApiLimits
from api.measure import measure_document


def refusals(document, limits: ApiLimits) -> list[GraphQLError]:
    """The limit errors of a parsed document (empty when every operation is within the limits)."""
    errors = []
    ops = measure_document(document, limits.max_page)
    fields = sum(op.measure.fields for op in ops)
    if fields > limits.max_fields:
        errors.append(
            GraphQLError(
                f"the document expands to {fields} fields (fragments spread in full), over the "
                f"limit of {limits.max_fields}"
            )
        )
    aliases = sum(op.measure.aliases for op in ops)
    if aliases > limits.max_aliases:
        errors.append(GraphQLError(f"{aliases} aliases found. Allowed: {limits.max_aliases}"))
    for op in ops:
        m = op.measure
        if m.depth > limits.max_depth:
            errors.append(GraphQLError(f"'{op.name}' exceeds maximum operation depth of {limits.max_depth}"))
        if m.cost > limits.max_cost:
            errors.append(GraphQLError(cost_message(m.cost, limits.max_cost)))
    return errors


@functools.lru_cache(maxsize=256)
def _validate(schema, document, rules) -> list[GraphQLError]:
    from strawberry.schema.schema import validate_document

    return validate_document(schema, document, rules)


def validation_cache_info() -> functools._CacheInfo:
    """Hits and misses of the verdict cache since start-up: each miss is one run of graphql's rules."""
    return _validate.cache_info()


class BoundedValidation(SchemaExtension):
    def __init__(self, limits: ApiLimits):
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        refused = refusals(ctx.graphql_document, self.limits)
        ctx.pre_execution_errors = refused or _validate(
            ctx.schema._schema, ctx.graphql_document, tuple(ctx.validation_rules)
        )
        yield
