"""What bounds one GraphQL request's work: a deadline, the client staying, the response size.

``BoundedGraphQL`` is mixed into the endpoint (api/app.py):

- its store calls run a few at a time in worker threads of its own share (api/threads.py), so
  a query with many of them cannot make every other request's calls queue behind them;
- every operation runs under ``MARQUEE_REQUEST_TIMEOUT_S`` (``sources.stores.deadline``): store
  calls past it are not started and fail with ``TIMEOUT``, fields already answered are kept;
- a client that disconnects cancels its operation, and the worker threads stop at their next
  store call;
- as a backstop the whole operation is abandoned a second after its deadline, answering one
  ``TIMEOUT`` error;
- a response larger than ``MARQUEE_MAX_RESPONSE_BYTES`` is replaced by a ``RESPONSE_TOO_LARGE``
  error (the cost limit, api/cost.py, keeps honest queries far below it).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from strawberry.types import ExecutionResult

from api.context import Context
from api.threads import request_threads
from sources.stores import deadline

#: how long past its deadline an operation may still run before it is abandoned
GRACE_S = 2.0
DISCONNECT_POLL_S = 0.25


def timeout_result(seconds: float) -> ExecutionResult:
    error = GraphQLError(f"the request did not finish within {seconds:g} s", extensions={"code": "TIMEOUT"})
    return ExecutionResult(data=None, errors=[error])


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


class BoundedGraphQL:
    """Mixin for Strawberry's ASGI ``GraphQL`` view; see the module docstring."""

    async def execute_operation(self, request: Request, request_adapter: Any, request_data: Any, context: Context,
                                root_value: Any, sub_response: Any) -> Any:  # fmt: skip
        settings = context.services.settings
        seconds = settings.request_timeout_s
        with deadline.within(seconds) as budget, request_threads():
            operation = super().execute_operation(  # type: ignore[misc]
                request=request, request_adapter=request_adapter, request_data=request_data, context=context,
                root_value=root_value, sub_response=sub_response,
            )  # fmt: skip
            work = asyncio.ensure_future(operation)  # a task of its own: it carries the budget
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                done, _ = await asyncio.wait({work, gone}, timeout=seconds + GRACE_S,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                gone.cancel()
            if work in done:
                return work.result()
            budget.cancelled = True  # threads still at work stop at their next store call
            work.cancel()
            context.services.abandoned["disconnected" if gone in done else "timed out"] += 1
            return timeout_result(seconds)

    def encode_json(self, data: object) -> str | bytes:
        encoded: str | bytes = super().encode_json(data)  # type: ignore[misc]
        limit: int = self.max_response_bytes  # type: ignore[attr-defined]
        if len(encoded) <= limit:
            return encoded
        error = {"message": f"the response is larger than {limit} bytes; ask for fewer items",
                 "extensions": {"code": "RESPONSE_TOO_LARGE", "limit": limit}}  # fmt: skip
        return json.dumps({"data": None, "errors": [error]})
