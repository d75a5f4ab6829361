"""What every command shares: the settings, read once from the environment with a readable error."""

from __future__ import annotations

from typing import Annotated

import typer

from sources.errors import MarqueeError
from sources.settings import Settings


def load_settings() -> Settings:
    """``Settings()`` from the environment; a bad variable becomes one line naming it."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:  # name the bad variable, not pydantic's internals
        problems = "; ".join(
            f"MARQUEE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise MarqueeError(f"invalid configuration: {problems}") from exc


#: ``--quiet``, a plain flag (no ``--no-quiet``), shared by every command with progress bars.
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
