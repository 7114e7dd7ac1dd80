"""The size of a GraphQL document, measured in time linear in its text: depth, aliases, cost, fields.

A document may define fragments that spread other fragments several times each: a 1 KB document of
30 fragments that each spread the next one twice expands to 2**30 fields. Walking every expansion
path (as strawberry's depth and alias limiters and a naive cost rule do) takes time exponential in
the number of fragments. Each measure here is instead computed once per fragment definition and
reused at every spread (memoized over the fragment graph):

1. For a selection set S and a fragment F, with page(f) the page size of field f (api/cost.py) and
   extra(f) the extra cost of an expensive field (0 for most):
   - depth(S)   = max over fields f of S of (0 if f is a leaf else 1 + depth(sub(f))), fragments inline;
   - aliases(S) = the number of aliased fields in the full expansion of S;
   - fields(S)  = the number of fields in the full expansion of S (what any later walk visits);
   - cost(S)    = sum over fields f of extra(f) + page(f) * (1 + cost(sub(f))): the cost rule of
     api/cost.py at multiplier 1. The cost at multiplier m is m * cost(S) (the rule is linear), so a
     fragment's cost is computed once and scaled at each spread.
2. A fragment's measures are memoized by name; a spread of a fragment that is being measured (a
   cycle, which graphql's NoFragmentCycles rule then refuses) counts as empty.
3. Python integers do not overflow: a 2**30 expansion is a number, not a walk.
Introspection fields (``__typename``, ``__schema`` ...) count as fields but add no depth, as in
strawberry's QueryDepthLimiter.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from api.cost import field_extra, field_page


@dataclass(frozen=True)
class Measure:
    depth: int
    aliases: int
    fields: int
    cost: int

    def __add__(self, other: Measure) -> Measure:
        return Measure(
            max(self.depth, other.depth),
            self.aliases + other.aliases,
            self.fields + other.fields,
            self.cost + other.cost,
        )


EMPTY = Measure(0, 0, 0, 0)


@dataclass(frozen=True)
class OperationMeasure:
    name: str  # the operation's name, or "anonymous"
    measure: Measure


class _Measurer:
    def __init__(self, document: DocumentNode, max_page: int):
        self.max_page = max_page
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.memo: dict[str, Measure] = {}
        self.active: set[str] = set()

    def fragment(self, name: str) -> Measure:
        if name in self.memo:
            return self.memo[name]
        frag = self.fragments.get(name)
        if frag is None or name in self.active:  # unknown (validation reports it) or a cycle
            return EMPTY
        self.active.add(name)
        try:
            m = self.selection_set(frag.selection_set)
        finally:
            self.active.discard(name)
        self.memo[name] = m
        return m

    def selection_set(self, sset: SelectionSetNode | None) -> Measure:
        total = EMPTY
        for sel in sset.selections if sset else ():
            if isinstance(sel, FieldNode):
                total = total + self.field(sel)
            elif isinstance(sel, InlineFragmentNode):
                total = total + self.selection_set(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                total = total + self.fragment(sel.name.value)
        return total

    def field(self, f: FieldNode) -> Measure:
        page = field_page(f, self.max_page)
        own = Measure(0, 1 if f.alias else 0, 1, field_extra(f) + page)
        if not f.selection_set:
            return own
        sub = self.selection_set(f.selection_set)
        depth = 0 if f.name.value.startswith("__") else 1 + sub.depth
        return Measure(depth, own.aliases + sub.aliases, own.fields + sub.fields, own.cost + page * sub.cost)


def measure_document(document: DocumentNode, max_page: int) -> list[OperationMeasure]:
    """The measures of every operation of ``document`` (fragments memoized across operations)."""
    m = _Measurer(document, max_page)
    return [
        OperationMeasure(d.name.value if d.name else "anonymous", m.selection_set(d.selection_set))
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    ]
