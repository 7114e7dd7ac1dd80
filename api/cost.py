"""A query-cost validation rule: the sum, over every field, of the product of the page sizes
(``first``, ``topK``) of the list fields above it and itself. Nested lists multiply: a page of
100 features each with 100 upstream edges each with 100 ... costs 100 * 100 * 100. A document
over the limit is refused before anything runs.
"""

from __future__ import annotations

from graphql import (FieldNode, FragmentSpreadNode, GraphQLError, InlineFragmentNode, IntValueNode,
                     OperationDefinitionNode, ValidationRule)

PAGE_ARGS = {"first": 10, "topK": 10}  # the schema's defaults


def cost_rule(max_cost: int, max_page: int):
    """A variable page size counts as ``max_page`` (variables are not known at validation)."""

    class QueryCost(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args):
            cost = self._cost(node.selection_set, 1, set())
            if cost > max_cost:
                self.report_error(GraphQLError(
                    f"query cost {cost} exceeds the limit of {max_cost} (cost = sum over fields of the product "
                    f"of the page sizes first/topK above them); ask for smaller pages", [node]))

        def _cost(self, selection_set, mult: int, seen: set) -> int:
            total = 0
            for sel in selection_set.selections if selection_set else []:
                if isinstance(sel, FieldNode):
                    m = mult * _page_size(sel)
                    total += m + (self._cost(sel.selection_set, m, seen) if sel.selection_set else 0)
                elif isinstance(sel, InlineFragmentNode):
                    total += self._cost(sel.selection_set, mult, seen)
                elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                    frag = self.context.get_fragment(sel.name.value)
                    if frag:
                        total += self._cost(frag.selection_set, mult, seen | {sel.name.value})
            return total

    def _page_size(field: FieldNode) -> int:
        for arg in field.arguments or []:
            if arg.name.value in PAGE_ARGS:
                if isinstance(arg.value, IntValueNode):
                    return min(max(1, int(arg.value.value)), max_page)  # larger: refused by the resolver
                return max_page  # a variable: assume the largest page it may ask for
        return PAGE_ARGS["first"] if field.name.value in LIST_FIELDS else 1

    return QueryCost


# list fields with a page size argument (first or topK, default 10)
LIST_FIELDS = {"inputTokens", "outputTokens", "examples", "upstream", "downstream", "features", "drivers", "paths",
               "tokenReaders", "tokenWriters"}
