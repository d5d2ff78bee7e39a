"""A query cost limit counted after fragment expansion, checked before anything executes.

Depth, token and alias limits all read the query as written, so a query that spreads a
fragment twice, whose fragment spreads another twice, and so on sixteen levels down, is short,
shallow and alias-free, yet selects 2^16 fields when run. The cost here is the number of field
selections the executor would visit: every fragment spread counts the fields of its fragment,
each fragment's cost is computed once (memoised), so measuring a fan-out bomb takes time
linear in the query's length while its cost grows exponentially.

Strawberry ships no cost analysis (its limiters are depth, tokens and aliases), and
graphql-core has no cost rule, so this is a small graphql-core ``ValidationRule`` added with
strawberry's ``AddValidationRules``; list sizes are not multiplied in, because every list
field is paginated and capped by ``max_page_size`` already.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)


class _CostCounter:
    """Fields selected by a selection set, fragments expanded and memoised by name."""

    def __init__(self, context: ValidationContext) -> None:
        self.context = context
        self.fragment_costs: dict[str, int] = {}
        self.visiting: set[str] = set()

    def selection_set(self, selections: SelectionSetNode | None) -> int:
        if selections is None:
            return 0
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += 1 + self.selection_set(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                total += self.selection_set(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> int:
        if name in self.fragment_costs:
            return self.fragment_costs[name]
        definition = self.context.get_fragment(name)
        if definition is None or name in self.visiting:
            return 0  # unknown fragments and cycles are refused by graphql-core's own rules
        self.visiting.add(name)
        cost = self.selection_set(definition.selection_set)
        self.visiting.discard(name)
        self.fragment_costs[name] = cost
        return cost


def query_cost_rule(max_cost: int) -> type[ValidationRule]:
    """A validation rule refusing any operation that selects more than ``max_cost`` fields."""

    class QueryCostRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.counter = _CostCounter(context)

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            cost = self.counter.selection_set(node.selection_set)
            if cost > max_cost:
                name = f"operation {node.name.value!r}" if node.name else "the operation"
                self.report_error(
                    GraphQLError(
                        f"{name} selects {cost} fields once fragments are expanded; "
                        f"the limit is {max_cost} (CIRCUITREG_MAX_QUERY_COST)",
                        node,
                    )
                )

    QueryCostRule.__name__ = f"QueryCostRule{max_cost}"
    return QueryCostRule
