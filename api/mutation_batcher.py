"""Concurrent mutations of one process, checked and logged together (a group commit).

``await MutationBatcher.log(mutation) -> Logged``. A mutation's acknowledgement costs three
round trips that do not depend on the mutation's size: is its user there, is its movie there
(PostgreSQL), and its record's insert into the mutation log (Mongo). One request at a time, they
were most of a mutation's cost and capped the acknowledged rate near a quarter of the no-op
floor (docs/performance.md). Through api/batching.py, the mutations that arrive while a group
is being logged go together in the next group: one query for all their users, one for all
their movies, one ``insert_many`` (``writes.accept_many``). A lone mutation waits for nothing.

Each mutation gets its own outcome: a ``Logged`` (durable from here on), an ``UnknownSubject``
(no such user or movie: nothing was written), or the ``writes.MutationIdConflict`` of its
client id. A store that fails fails the group's requests, none of which was acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from api.batching import Batcher
from api.queries import reads, writes
from sources.stores.clients import Stores

#: most mutations logged as one group
MAX_BATCH = 64


class UnknownSubject(LookupError):
    """The mutation names a user or a movie that does not exist; nothing was written."""

    def __init__(self, kind: Literal["user", "movie"], subject_id: int) -> None:
        super().__init__(f"no {kind} with id {subject_id}")
        self.kind, self.subject_id = kind, subject_id


@dataclass(frozen=True)
class Logged:
    """A mutation in the log, with the rows of its user and movie for the answer."""

    accepted: writes.Accepted
    user: reads.UserRow
    movie: reads.MovieRow


class MutationBatcher(Batcher[writes.MutationInput, Logged]):
    """``await log(mutation)``; see the module docstring."""

    def __init__(self, stores: Stores, max_batch: int = MAX_BATCH) -> None:
        super().__init__(self._log_group, max_batch)
        self.stores = stores

    async def log(self, mutation: writes.MutationInput) -> Logged:
        return await self.submit(mutation)

    def _log_group(self, mutations: list[writes.MutationInput]) -> list[Logged | Exception]:
        """In a worker thread: the users and movies read, the known mutations logged in one insert."""
        pg = self.stores.pg_reads
        with self.stores.call("postgres"):
            users = reads.users_by_id(pg=pg, ids=sorted({m.user_id for m in mutations}))
            movies = reads.movies_by_id(pg=pg, ids=sorted({m.movie_id for m in mutations}))
        known = [m for m in mutations if m.user_id in users and m.movie_id in movies]
        with self.stores.call("mongo"):  # fails at once while Mongo's breaker is open
            accepted = iter(writes.accept_many(self.stores.mongo, known))
        outcomes: list[Logged | Exception] = []
        for m in mutations:
            if m.user_id not in users:
                outcomes.append(UnknownSubject("user", m.user_id))
            elif m.movie_id not in movies:
                outcomes.append(UnknownSubject("movie", m.movie_id))
            else:
                outcome = next(accepted)
                if isinstance(outcome, writes.Accepted):
                    outcomes.append(Logged(outcome, users[m.user_id], movies[m.movie_id]))
                else:
                    outcomes.append(outcome)
        return outcomes
