"""Errors the API reports to its callers, each with a stable ``extensions.code``.

    ApiError                    a user-facing error; the message is safe to show
    ├── NotFound                NOT_FOUND: no user/movie with that id
    ├── BadUserInput            BAD_USER_INPUT: an argument out of range or malformed
    └── Unauthenticated         UNAUTHENTICATED: a mutation without a valid X-API-Key

Errors from below the GraphQL layer keep their own types and get a code here:
``StoreDown`` (sources/stores/failures.py) → STORE_UNAVAILABLE with the store's name and the
request's id (``requestId``) — the message names only the store, the driver's reason is
logged under that id; ``UnknownUser`` (api/recommendations/contract.py) → NOT_FOUND;
``DeadlineExceeded`` (sources/stores/deadline.py) → TIMEOUT.

Anything else raised by a resolver is unexpected: ``ErrorPolicy`` masks its message
("Unexpected error.", code INTERNAL_SERVER_ERROR) so internals never leak. Errors found before
execution (syntax, unknown fields, argument types, limits) keep graphql-core's clear
message and get a code too.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, ClassVar

from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.relay.types import GlobalIDValueError

from api.recommendations.contract import UnknownUser
from sources.stores.deadline import DeadlineExceeded
from sources.stores.failures import StoreDown

log = logging.getLogger(__name__)

MASKED_MESSAGE = "Unexpected error."


class ApiError(Exception):
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        # graphql-core copies an original error's ``extensions`` onto the GraphQLError.
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class NotFound(ApiError):
    code = "NOT_FOUND"


def user_not_found(user_id: int) -> NotFound:
    return NotFound(f"no user with id {user_id}", user_id=user_id)


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


#: errors raised below the GraphQL layer → the code and extensions they are reported with
def _lower_extensions(exc: BaseException) -> dict[str, Any] | None:
    if isinstance(exc, StoreDown):
        return {"code": "STORE_UNAVAILABLE", "store": exc.store}  # + requestId, see ErrorPolicy
    if isinstance(exc, DeadlineExceeded):
        return {"code": "TIMEOUT"}
    if isinstance(exc, UnknownUser):
        return {"code": "NOT_FOUND", "user_id": exc.user_id}
    return None


def is_user_error(exc: BaseException) -> bool:
    """Safe to show: ours, a lower layer's known failure, or strawberry's complaint about a
    malformed global ID argument."""
    return isinstance(exc, ApiError | GlobalIDValueError | StoreDown | UnknownUser | DeadlineExceeded)


def _code_for_request_error(error: GraphQLError) -> str:
    """A code for errors raised before execution (no path): parse, validation, limits."""
    message = error.message
    if "exceeds maximum operation depth" in message or "aliases found" in message or "more than" in message:
        return "QUERY_TOO_COMPLEX"  # the depth, alias and token limiters
    if message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if "invalid value" in message or "cannot represent" in message:
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


class ErrorPolicy(MaskErrors):
    """MaskErrors that leaves our own and pre-execution errors readable and gives every error a code."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=self._should_mask, error_message=MASKED_MESSAGE)
        self._own_request_id: str | None = None

    @staticmethod
    def _should_mask(error: GraphQLError) -> bool:
        original = error.original_error
        if original is None or is_user_error(original):
            return False
        return error.path is not None

    def _request_id(self) -> str:
        request_id = getattr(getattr(self.execution_context, "context", None), "request_id", None)
        if isinstance(request_id, str):
            return request_id
        if self._own_request_id is None:  # executed without our Context (a bare schema.execute)
            self._own_request_id = uuid.uuid4().hex
        return self._own_request_id

    def _log_store_down(self, error: GraphQLError, exc: StoreDown) -> dict[str, Any]:
        """The driver's reason goes to the log, never to the client; the id links the two."""
        request_id = self._request_id()
        path = ".".join(str(p) for p in error.path or ()) or "-"
        log.warning("request %s: %s at %s: %s", request_id, exc, path, exc.reason or "(no reason given)")
        return {"requestId": request_id}

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            lower = _lower_extensions(error.original_error) if error.original_error is not None else None
            if lower is not None:
                if isinstance(error.original_error, StoreDown):
                    lower |= self._log_store_down(error, error.original_error)
                error.extensions = {**(error.extensions or {}), **lower}
                continue
            if "code" in (error.extensions or {}):
                continue
            if error.path is None:
                code = _code_for_request_error(error)
            elif error.original_error is not None and is_user_error(error.original_error):
                code = "BAD_USER_INPUT"  # e.g. a malformed global ID, rejected while converting arguments
            else:
                code = "INTERNAL_SERVER_ERROR"  # masked, or graphql-core's own (e.g. null in a non-null field)
            error.extensions = {**(error.extensions or {}), "code": code}
        return processed
