"""What a query will ask of the stores, counted before it runs; over the budget it is refused.

The model is the one the large public GraphQL APIs use (GitHub's node count, Shopify's
calculated cost): every field has a cost for one call, and a field that pages
(``first``; ``nodes(ids)``) runs what is selected under it once per item, so

    cost(field) = own cost + page size × cost of its selection

and nested lists multiply along the path. Own costs (``FIELD_COSTS``): a column or an
in-memory object is 0, an object a resolver fetches is 1, a store list 2, a vector search
5-10, a one-hop graph walk 5, a two-hop walk or a ranking 50. The page size is the ``first`` given, a
variable's value, the schema's default when omitted, or the largest allowed (``MAX_FIRST``)
when a variable is unknown; values past ``MAX_FIRST`` count as ``MAX_FIRST`` because the
resolver refuses them anyway. Named and inline fragments count where they are spread (each
spread counted; a union's or interface's alternatives are summed), ``@skip``/``@include``
are honoured when their condition is known.

``QueryCostLimit`` runs it in Strawberry's validation step, after validation proper, and
refuses a query over ``limit`` with ``QUERY_TOO_COMPLEX`` and ``cost``/``limit`` in the
error's extensions, before any resolver runs. It is an extension rather than a validation
rule because the cost depends on the request's variables while validation results are cached
per query text (``ValidationCache``): a rule would either miss that cache on every request or
be skipped when the same text comes with a larger ``first``. The walk is linear in the
document (a fragment is costed once, however often it is spread).

graphql-complexity (the one Python library for this) was looked at and not used: it does not
multiply through non-null lists (``[X!]!``) or connections, ignores schema defaults and does
not resolve variable defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    Undefined,
    ValueNode,
    VariableNode,
    get_named_type,
    is_composite_type,
    type_from_ast,
    value_from_ast,
)
from graphql.language import DocumentNode
from strawberry.extensions import SchemaExtension

from api.context import Context
from api.fairness import EXPENSIVE_COST, EXPENSIVE_THREADS, rate_limited
from api.threads import current_request_threads
from api.types.paging import MAX_FIRST
from sources.settings import Settings
from sources.stores import deadline

#: A ranking: candidates retrieved, features read, a model scored, the list kept.
RANKING_COST = 50
#: The default budget (``MARQUEE_QUERY_MAX_COST``, 20,000): a page of 100 users with 100
#: recommendations each and their movies (15,002), or 100 movies with 100 two-hop neighbours
#: each (15,002), fits; a vector search, a graph walk or a ranking per item of such a page
#: does not (the abusive queries cost 1-50 million).
DEFAULT_MAX_COST: int = Settings.model_fields["query_max_cost"].default

CostOf = int | Callable[[Mapping[str, Any]], int]

#: ``Type.field`` → its own cost for one call (an int, or a function of its arguments).
#: Unlisted fields cost 1 when they return an object, 0 when they return a scalar or enum;
#: connection plumbing (``*Connection.*``, ``*Edge.*``) costs 0.
FIELD_COSTS: dict[str, CostOf] = {
    "Query.recommendations": RANKING_COST,
    "User.recommendations": RANKING_COST,
    "Query.searchMovies": 10,  # the text embedded, then an HNSW search
    "Movie.similar": 5,  # an HNSW search
    "Movie.predictedAudience": RANKING_COST,  # every user's vector (kept a minute), one product
    "Mutation.addMovie": 10,  # the title embedded, three stores written
    # One hop ~5 ms; two hops fan out through every linked movie (~50 ms measured) — as
    # costly as a ranking. An unknown depth counts as 2.
    "Movie.neighbours": lambda args: 5 if args.get("depth") == 1 else 50,
    "Query.movies": 2,
    "Query.users": 2,
    "Query.genres": 1,
    "User.following": 2,
    "User.followers": 2,
    "User.watched": 2,
    "User.reviews": 2,
    "User.recentSessions": 2,
    "User.payments": 2,
    "User.onlineFeatures": 1,  # a feature store read, though its type is a scalar (JSON)
    "Movie.genres": 1,
    "Movie.people": 2,
    "RecommendationList.items": 0,  # the ranked list is already made
    "Neighbour.path": 0,
}

PAGE_ARGUMENT = "first"
BOOLEAN = GraphQLNonNull(GraphQLBoolean)
ID_LIST_FIELDS = {"Query.nodes": "ids"}


class _Counter:
    """One document's cost under one set of variables."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.fragment_costs: dict[str, int] = {}

    def selection_set(self, parent: GraphQLNamedType, selection_set: SelectionSetNode) -> int:
        total = 0
        for selection in selection_set.selections:
            if self._skipped(selection):
                continue
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                on = self._type(selection.type_condition.name.value) if selection.type_condition else parent
                total += self.selection_set(on, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> int:
        if name not in self.fragment_costs:
            definition = self.fragments[name]
            self.fragment_costs[name] = 0  # validation rejects cycles; this only guards the recursion
            on = self._type(definition.type_condition.name.value)
            self.fragment_costs[name] = self.selection_set(on, definition.selection_set)
        return self.fragment_costs[name]

    def field(self, parent: GraphQLNamedType, node: FieldNode) -> int:
        name = node.name.value
        fields: Mapping[str, GraphQLField] = getattr(parent, "fields", {})  # objects and interfaces
        definition = fields.get(name)
        if definition is None:  # __typename, introspection: no store involved
            return 0
        key = f"{parent.name}.{name}"
        args = self._arguments(definition, node)
        own = _own_cost(key, parent.name, definition, args)
        if node.selection_set is None:
            return own
        children = self.selection_set(get_named_type(definition.type), node.selection_set)
        return own + self._page_size(key, node, args) * children

    def _page_size(self, key: str, node: FieldNode, args: Mapping[str, Any]) -> int:
        """How many times the selection under a field runs: its page size, else once."""
        if key in ID_LIST_FIELDS:
            given = next((a.value for a in node.arguments or () if a.name.value == ID_LIST_FIELDS[key]), None)
            if isinstance(given, ListValueNode):
                ids: Any = given.values
            elif isinstance(given, VariableNode):
                ids = self.variables.get(given.name.value)
            else:
                ids = None
            return min(len(ids), MAX_FIRST) if isinstance(ids, list | tuple) else MAX_FIRST
        if PAGE_ARGUMENT not in args:
            return 1
        first = args[PAGE_ARGUMENT]
        if not isinstance(first, int) or isinstance(first, bool):
            return MAX_FIRST  # a variable the request did not give
        return max(0, min(first, MAX_FIRST))

    def _arguments(self, definition: GraphQLField, node: FieldNode) -> dict[str, Any]:
        """Argument values: given, from a variable, or the schema's default; None when unknown."""
        given = {argument.name.value: argument.value for argument in node.arguments or ()}
        values: dict[str, Any] = {}
        for name, argument in definition.args.items():
            if name in ID_LIST_FIELDS.values():
                continue  # counted from the AST (coercing a global ID can fail; its count cannot)
            if name in given and not self._absent(given[name]):
                try:
                    value = value_from_ast(given[name], argument.type, dict(self.variables))
                except (GraphQLError, ValueError, TypeError):
                    value = Undefined  # execution reports it; the cost takes the worst case
            else:
                value = argument.default_value
            values[name] = None if value is Undefined else value  # unknown: the worst case is taken
        return values

    def _absent(self, value: ValueNode) -> bool:
        """A variable the request leaves out: the argument takes its default, as in execution."""
        return isinstance(value, VariableNode) and value.name.value not in self.variables

    def _skipped(self, node: SelectionNode) -> bool:
        for directive in node.directives or ():
            if directive.name.value not in ("skip", "include"):
                continue
            condition = next((a.value for a in directive.arguments or () if a.name.value == "if"), None)
            value = value_from_ast(condition, BOOLEAN, dict(self.variables)) if condition is not None else Undefined
            if not isinstance(value, bool):
                continue  # unknown: count the field
            if value is (directive.name.value == "skip"):
                return True
        return False

    def _type(self, name: str) -> GraphQLNamedType:
        named = self.schema.get_type(name)
        assert named is not None, name  # validated
        return named


def _own_cost(key: str, parent: str, definition: GraphQLField, args: Mapping[str, Any]) -> int:
    cost = FIELD_COSTS.get(key)
    if cost is not None:
        return cost(args) if callable(cost) else cost
    if parent.endswith(("Connection", "Edge")):
        return 0
    return 1 if is_composite_type(get_named_type(definition.type)) else 0


def _operation(document: DocumentNode, operation_name: str | None) -> Iterator[OperationDefinitionNode]:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    named = [o for o in operations if operation_name is not None and o.name and o.name.value == operation_name]
    yield from named or operations


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
) -> int:
    """The cost of the operation that will run (the costliest one when that is ambiguous).
    The document must be valid against ``schema``."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    costs = [0]
    for operation in _operation(document, operation_name):
        root = schema.get_root_type(operation.operation)
        if root is None:
            continue
        effective: dict[str, Any] = {}
        for definition in operation.variable_definitions or ():
            input_type = type_from_ast(schema, definition.type)
            if definition.default_value is not None and input_type is not None:
                default = value_from_ast(definition.default_value, input_type)  # type: ignore[arg-type]
                if default is not Undefined:
                    effective[definition.variable.name.value] = default
        effective.update(variables or {})
        counter = _Counter(schema, fragments, effective)
        costs.append(counter.selection_set(root, operation.selection_set))
    return max(costs)


def too_complex(cost: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"query cost {cost} exceeds the limit of {limit}; ask for smaller pages (`first`) or fewer nested lists",
        extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost, "limit": limit},
    )


def query_cost_limit(limit: int) -> Callable[[], SchemaExtension]:
    """A factory for ``build_schema``'s extensions: a fresh ``QueryCostLimit`` per request."""
    return lambda: QueryCostLimit(limit)


class QueryCostLimit(SchemaExtension):
    """Refuses an operation costing more than ``limit`` before it runs. List it after
    ``ValidationCache``: it counts only a document that validation passed."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.cost = 0

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None and context.graphql_document is not None:
            # No validation ran before this extension (no ValidationCache): run it here.
            from strawberry.schema.schema import validate_document

            context.pre_execution_errors = validate_document(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
        if not context.pre_execution_errors and context.graphql_document is not None:
            cost = query_cost(
                context.schema._schema, context.graphql_document, context.variables, context.operation_name
            )
            self.cost = cost
            if cost > self.limit:
                context.pre_execution_errors = [too_complex(cost, self.limit)]
            elif isinstance(context.context, Context) and (wait := context.context.charge_query(cost)) > 0:
                context.pre_execution_errors = [rate_limited(cost, wait)]
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        """An expensive operation (``EXPENSIVE_COST``) goes to the heavy lane when one runs
        (api/lane.py); otherwise, or when the lane cannot answer, it runs here only when no other
        one does, with fewer worker threads: the process stays free for everyone else's light
        queries."""
        context = self.execution_context.context
        if self.cost < EXPENSIVE_COST or not isinstance(context, Context):
            yield
            return
        lane = context.services.heavy_lane
        if lane is not None:
            execution = self.execution_context
            answer = await lane.execute(
                execution.query or "", execution.variables, execution.operation_name,
                api_key=context.api_key, request_id=context.request_id,
                timeout_s=deadline.remaining() or context.services.settings.request_timeout_s,
            )  # fmt: skip
            if answer is not None:
                execution.result = answer  # Strawberry then skips its own execution
                yield
                return
        limiter = current_request_threads()
        if limiter is not None:
            limiter.total_tokens = EXPENSIVE_THREADS
        async with context.services.expensive_slot:
            yield


__all__ = ["DEFAULT_MAX_COST", "FIELD_COSTS", "QueryCostLimit", "query_cost", "query_cost_limit"]
