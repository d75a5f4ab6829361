"""Checkpoint hot reload: a new ``marquee train`` (or ``marquee refresh``) reaches a running API
without a restart.

``CheckpointWatcher`` looks at the checkpoint files' modification times every ``poll_s``
seconds; when they change it loads the new ranker *beside* the one serving (in its own
thread, so requests go on), then hands it to ``swap``: one reference assignment, so every
request is answered wholly by the old ranker or wholly by the new one and none fails, and
``modelVersion`` names the one that answered. A checkpoint that cannot be loaded (half copied,
other features) is logged and the old ranker keeps serving; it is tried again once its files
change again. Checkpoints are written atomically (model/checkpoint.py), so a reader never
sees half a file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sources.errors import first_line

log = logging.getLogger(__name__)


def file_stamp(paths: Sequence[Path]) -> tuple[float, ...]:
    """The files' modification times (0 for a missing file): what changes when one is rewritten."""
    return tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in paths)


class CheckpointWatcher:
    """Polls ``paths``; on a change, ``load()`` then ``swap(loaded)`` (see the module docstring)."""

    def __init__(
        self,
        paths: Sequence[Path],
        load: Callable[[], Any],
        swap: Callable[[Any], str],
        *,
        poll_s: float = 5.0,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """``tick``, when given, also runs on every poll (e.g. placing titles another process added)."""
        self.paths, self._load, self._swap, self.poll_s, self._tick = list(paths), load, swap, poll_s, tick
        self._seen = file_stamp(self.paths)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-watcher", daemon=True)
        self.swaps = 0
        self.failing: str | None = None

    def start(self) -> CheckpointWatcher:
        self._thread.start()
        return self

    def check(self) -> str | None:
        """One look: the version swapped in, or None when nothing changed or the load failed."""
        stamp = file_stamp(self.paths)
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            loaded = self._load()
            version = self._swap(loaded)
        except Exception as exc:  # keep serving the old ranker
            self.failing = first_line(exc)
            log.warning("new checkpoint not loaded, the old one keeps serving: %s", self.failing)
            return None
        self.failing = None
        self.swaps += 1
        log.info("serving checkpoint %s", version)
        return version

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check()
            if self._tick is not None:
                try:
                    self._tick()
                except Exception as exc:  # a store away: the next poll tries again
                    log.warning("checkpoint watcher tick failed: %s", first_line(exc))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
