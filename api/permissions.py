"""Who may call what: the API key a mutation needs, as a Strawberry permission class."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from api.context import Info
from api.errors import Unauthenticated


class HasApiKey(BasePermission):
    """Allowed when no keys are configured (``MARQUEE_API_KEYS``) or the request's
    ``X-API-Key`` is one of them; otherwise ``UNAUTHENTICATED``, before the resolver runs."""

    message = "this mutation needs a valid X-API-Key header"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.api_key_valid()

    def on_unauthorized(self) -> None:
        raise Unauthenticated(self.message)
