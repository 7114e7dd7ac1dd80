"""The query-cost rule: what one field of a document costs, before anything runs.

The cost of a document is the sum, over every field of its full expansion, of the product of the
page sizes (``first``, ``topK``) of the list fields above it and itself. Nested lists multiply: a
page of 100 features each with 100 upstream edges each with 100 ... costs 100 * 100 * 100. The
fields that scan or search much more than their page (``stats`` counts whole tables,
``paths``/``pathGraph`` run a beam search of up to maxHops statements over beam x fanout edges)
cost ``EXPENSIVE_EXTRA`` more each time they appear (times the page sizes above them), so a
handful of them, not 20 aliases, fill a request. api/measure.py computes the sum once per fragment definition; a
document over the limit is refused before anything runs.
"""

from __future__ import annotations

from graphql import FieldNode, IntValueNode

PAGE_ARGS = {"first": 10, "topK": 10}  # the schema's defaults

# list fields with a page size argument (first or topK, default 10)
LIST_FIELDS = {
    "inputTokens",
    "outputTokens",
    "examples",
    "upstream",
    "downstream",
    "features",
    "drivers",
    "paths",
    "tokenReaders",
    "tokenWriters",
}

EXPENSIVE_EXTRA = 2500  # with the default max_cost of 20,000: at most 7 of them in one document
FIELD_EXTRA = {"stats": EXPENSIVE_EXTRA, "paths": EXPENSIVE_EXTRA, "pathGraph": EXPENSIVE_EXTRA}


def field_page(field: FieldNode, max_page: int) -> int:
    """The page size a field asks for; a variable page size counts as ``max_page`` (unknown at validation)."""
    for arg in field.arguments or []:
        if arg.name.value in PAGE_ARGS:
            if isinstance(arg.value, IntValueNode):
                return min(max(1, int(arg.value.value)), max_page)  # larger: refused by the resolver
            return max_page  # a variable: assume the largest page it may ask for
    return PAGE_ARGS["first"] if field.name.value in LIST_FIELDS else 1


def field_extra(field: FieldNode) -> int:
    """The extra cost of one occurrence of an expensive field (0 for the others)."""
    return FIELD_EXTRA.get(field.name.value, 0)


def cost_message(cost: int, max_cost: int) -> str:
    return (
        f"query cost {cost} exceeds the limit of {max_cost} (cost = sum over fields of the product of the page "
        f"sizes first/topK above them, stats/paths/pathGraph costing {EXPENSIVE_EXTRA} more); ask for smaller pages "
        f"or fewer fields"
    )
