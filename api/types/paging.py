"""Cursor paging shared by every list: ``first`` checked against the limit, opaque cursors.

Cursors encode the last id of a page (keyset paging: stable while rows are added), as
base64 so clients treat them as opaque.
"""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

from strawberry import relay

from api.errors import BadUserInput

if TYPE_CHECKING:
    pass

MAX_FIRST = 100
CURSOR_PREFIX = "cursor"


def check_first(first: int, *, name: str = "first", maximum: int = MAX_FIRST) -> int:
    if not 1 <= first <= maximum:
        raise BadUserInput(f"`{name}` must be between 1 and {maximum}, got {first}", argument=name)
    return first


def encode_cursor(key: int) -> str:
    return relay.to_base64(CURSOR_PREFIX, key)


def decode_cursor(cursor: str | None, *, name: str = "after") -> int | None:
    if cursor is None:
        return None
    try:
        prefix, key = relay.from_base64(cursor)
        if prefix != CURSOR_PREFIX:
            raise ValueError(prefix)
        return int(key)
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError) as exc:
        raise BadUserInput(f"`{name}` is not a cursor this API issued: {cursor[:40]!r}", argument=name) from exc
