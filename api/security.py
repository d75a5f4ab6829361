"""What the endpoint refuses, by the OWASP GraphQL cheat sheet and graphql-cop's checks
(docs/api.md, "Security checklist").

- ``JsonPostOnly`` (mixed into the endpoint): a POST must say ``Content-Type: application/json``;
  anything else (a form's ``application/x-www-form-urlencoded``, ``multipart/form-data`` or
  ``text/plain``, which a browser sends cross-site without a preflight) answers 415 and runs
  nothing. Strawberry alone only looks for ``application/json`` *inside* the header value.
- ``HideSuggestions`` (a schema extension, used when introspection is off): graphql-core's
  "Did you mean …?" hints, which would spell the schema out field by field, are cut from every
  error message (validation and variable coercion alike).
- ``DirectiveLimit`` (a validation rule): a field or fragment carrying more than
  ``MAX_DIRECTIVES_PER_NODE`` directives is refused with one ``QUERY_TOO_COMPLEX`` error and
  validation stops there, instead of one error per directive (directive overloading).

GET never runs an operation (``allow_queries_via_get=False`` in api/app.py: GET only serves the
GraphiQL page), batching stays off (Strawberry's default) and CORS is closed unless
``MARQUEE_CORS_ORIGINS`` names origins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import DocumentNode, GraphQLError, Node, ValidationRule, Visitor, visit
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.http.parse_content_type import parse_content_type

#: @include and @skip are the only executable directives and neither repeats: more is abuse.
MAX_DIRECTIVES_PER_NODE = 4

_SUGGESTION = re.compile(r"\s*Did you mean .*\?\s*$", re.DOTALL)


def without_suggestions(message: str) -> str:
    """``message`` without graphql-core's trailing " Did you mean …?" hint."""
    return _SUGGESTION.sub("", message)


class JsonPostOnly:
    """Mixin for Strawberry's ASGI ``GraphQL`` view: POST bodies must be ``application/json``."""

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> Any:
        if request.method == "POST":
            media_type, _ = parse_content_type(request.content_type or "")
            if media_type.strip().lower() != "application/json":
                raise HTTPException(415, "Unsupported Media Type: send the GraphQL request as application/json")
        return await super().parse_http_body(request)  # type: ignore[misc]


class HideSuggestions(SchemaExtension):
    """Cuts "Did you mean …?" from every error of the result (they leak the schema)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors: list[GraphQLError] | None = getattr(result, "errors", None)
        if errors:
            result.errors = [_hidden(error) for error in errors]  # type: ignore[union-attr]


def _hidden(error: GraphQLError) -> GraphQLError:
    message = without_suggestions(error.message)
    if message == error.message:
        return error
    # A copy: the validation cache hands the same error objects to every request.
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions=error.extensions,
    )


class DirectiveLimit(ValidationRule):
    """Refuses a document whose field, fragment or operation carries too many directives,
    before any other rule reports on them one by one."""

    def enter_document(self, node: DocumentNode, *_args: Any) -> None:
        counter = _MostDirectives()
        visit(node, counter)
        if counter.most > MAX_DIRECTIVES_PER_NODE:
            raise ValidationAbortedError(
                f"a field or fragment carries {counter.most} directives; at most {MAX_DIRECTIVES_PER_NODE} allowed",
                nodes=counter.where,
                extensions={"code": "QUERY_TOO_COMPLEX", "directives": counter.most, "limit": MAX_DIRECTIVES_PER_NODE},
            )


class _MostDirectives(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.most = 0
        self.where: Node | None = None

    def enter(self, node: Node, *_args: Any) -> None:
        count = len(getattr(node, "directives", None) or ())
        if count > self.most:
            self.most, self.where = count, node
