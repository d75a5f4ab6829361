"""Load a Dataset into the three systems of record, all-or-nothing per store.

One streaming pass over the per-user rating blocks writes, in batches, one writer per store
running concurrently:
  MongoDB   fresh ``reviews__<run>`` and ``playback_logs__<run>`` collections (straight into
            the embedded server's file, ``sources.stores.mongo_bulk``),
  graph     a staging graph (FalkorDB) or one open transaction (Neo4j), edges in batches
            that look their endpoints up once per batch (``edge_batch``),
then PostgreSQL is replaced in one transaction, the new Mongo collections are published
through the catalog (``sources.stores.mongo``) and the staging graph replaces the live graph. A failure anywhere
before a store's swap leaves that store as it was. A run whose dataset fingerprint and
counts match the last complete run is skipped (``force`` reloads).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pymongo.database import Database
from rich.progress import Progress
from sqlalchemy import Connection, text

from sources.datasets import embeddings, enrich
from sources.datasets.movielens import Dataset, MovieRecord
from sources.errors import IngestError, MarqueeError, first_line
from sources.progress import console, progress_bar
from sources.stores import mongo, mongo_scan
from sources.stores.clients import Stores
from sources.stores.graph import GraphWriter
from sources.stores.mongo_bulk import BulkInserter
from sources.stores.pgcopy import copy_rows
from sources.vocabulary import CREDIT_ROLES

PG_TABLES = (
    "payments",
    "subscriptions",
    "movie_embeddings",
    "movie_genres",
    "genres",
    "subscription_tiers",
    "movies",
    "users",
)
INGEST_LOCK = 0x6D617271  # pg advisory lock id: one ingest at a time per database
GRAPH_INDEXES = (
    "CREATE INDEX FOR (n:User) ON (n.id)",
    "CREATE INDEX FOR (n:Movie) ON (n.id)",
    "CREATE INDEX FOR (n:Person) ON (n.id)",
    "CREATE INDEX FOR (n:Genre) ON (n.name)",
)
#: Ratings per pass batch: one Mongo write of each collection and one RATED and one WATCHED
#: statement. Each edge statement pays a fixed cost (it collects the whole catalogue), so
#: larger batches load the graph faster (docs/scale.md); two batches are in memory at most.
STREAM_BATCH = 20_000


@dataclass
class IngestReport:
    dataset: str
    skipped: bool
    counts: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    sessions: int = 0  # playback sessions written (inside playback_logs documents)

    def rows_per_second(self) -> dict[str, float]:
        rows = {
            "postgres": sum(v for k, v in self.counts.items() if k.startswith("pg.")),
            "mongo": self.counts.get("mongo.reviews", 0) + self.sessions,
            "graph": sum(v for k, v in self.counts.items() if k.startswith("graph.")),
        }
        return {k: rows[k] / s for k, s in self.seconds.items() if k in rows and s > 0}


# counts ------------------------------------------------------------------------------------


def store_counts(stores: Stores) -> dict[str, int]:
    """Rows per table, documents per collection, nodes per label and edges per type."""
    counts: dict[str, int] = {}
    with stores.pg.connect() as conn:
        for table in PG_TABLES:
            counts[f"pg.{table}"] = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    for name in mongo.LOGICAL:
        counts[f"mongo.{name}"] = mongo_scan.count(stores, name)
    for row in stores.graph.read("MATCH (n) RETURN labels(n)[0] AS label, count(n) AS n"):
        counts[f"graph.node.{row['label']}"] = int(row["n"])
    for row in stores.graph.read("MATCH ()-[r]->() RETURN type(r) AS type, count(r) AS n"):
        counts[f"graph.edge.{row['type']}"] = int(row["n"])
    return dict(sorted(counts.items()))


# run bookkeeping ---------------------------------------------------------------------------


@contextmanager
def _ingest_lock(stores: Stores) -> Iterator[None]:
    with stores.pg.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": INGEST_LOCK}).scalar_one():
            raise IngestError("another ingest is running against this PostgreSQL; try again when it ends")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": INGEST_LOCK})


def _discard_interrupted(stores: Stores) -> None:
    """A 'running' row while we hold the lock means an earlier run died part-way."""
    with stores.pg.begin() as conn:
        stale = conn.execute(
            text(
                "UPDATE ingest_runs SET status = 'failed', finished_at = now(), "
                "error = 'interrupted before it finished' WHERE status = 'running' RETURNING id, dataset"
            )
        ).all()
    for run_id, dataset in stale:
        console.print(
            f"[yellow]an earlier ingest of {dataset} (run {run_id}) did not finish; "
            "its staged data is discarded and nothing of it was made visible[/]"
        )
    dropped = mongo.drop_unpublished(stores.mongo)
    if stores.graph.discard_staging():
        dropped.append("staging graph")
    if dropped and not stale:
        console.print(f"[yellow]removed what an interrupted load left behind: {', '.join(dropped)}[/]")


def _last_complete(stores: Stores) -> tuple[str, dict[str, int]] | None:
    with stores.pg.connect() as conn:
        row = conn.execute(
            text("SELECT fingerprint, counts FROM ingest_runs WHERE status = 'complete' ORDER BY id DESC LIMIT 1")
        ).first()
    return (row[0], row[1]) if row else None


def _run_key(dataset: Dataset, seed: int) -> str:
    import hashlib

    return hashlib.sha256(f"{dataset.fingerprint}:{seed}".encode()).hexdigest()


# the load ----------------------------------------------------------------------------------


def ingest(
    stores: Stores,
    dataset: Dataset,
    *,
    seed: int = 42,
    batch_size: int = STREAM_BATCH,
    force: bool = False,
    quiet: bool = False,
) -> IngestReport:
    """Load ``dataset`` into all three stores (see the module docstring for the guarantees)."""
    stores.require_all()
    key = _run_key(dataset, seed)
    with _ingest_lock(stores):
        _discard_interrupted(stores)
        last = _last_complete(stores)
        if not force and last is not None and last[0] == key:
            current = store_counts(stores)
            if current == last[1]:
                return IngestReport(dataset.name, True, current)
            console.print("[yellow]stores differ from the last complete load; reloading[/]")
        with stores.pg.begin() as conn:
            run_id = conn.execute(
                text("INSERT INTO ingest_runs (dataset, fingerprint, status) VALUES (:d, :f, 'running') RETURNING id"),
                {"d": dataset.name, "f": key},
            ).scalar_one()
        try:
            report = _load(stores, dataset, run_id=run_id, seed=seed, batch_size=batch_size, quiet=quiet)
        except BaseException as exc:
            mongo.drop_unpublished(stores.mongo)
            message = first_line(exc)
            with stores.pg.begin() as conn:
                conn.execute(
                    text("UPDATE ingest_runs SET status='failed', finished_at=now(), error=:e WHERE id=:i"),
                    {"e": message[:500], "i": run_id},
                )
            if isinstance(exc, MarqueeError | KeyboardInterrupt):
                raise
            raise IngestError(f"ingest of {dataset.name} failed, stores unchanged: {message}") from exc
        import json

        with stores.pg.begin() as conn:
            conn.execute(
                text(
                    "UPDATE ingest_runs SET status='complete', finished_at=now(), counts=CAST(:c AS jsonb) WHERE id=:i"
                ),
                {"c": json.dumps(report.counts), "i": run_id},
            )
        return report


#: Cypher for a batch of RATED / WATCHED edges. An index lookup per row runs ~5,000 rows/s on
#: the embedded FalkorDB (measured, docs/scale.md); instead each batch collects its users (one
#: index scan for the batch's ids) and its movies once, and rows point into those lists by
#: position, computed here. The rows travel as columns of plain integers (``$user_at[i]``,
#: ``$movie_at[i]``, ``$a[i]``, ``$b[i]``), not as a list of 4-element lists: the server parses
#: one list per column instead of one per row, and the client prints less (docs/scale.md). The
#: WHERE guards create nothing if a user (or a movie looked up by id) were missing (all are
#: created first from the same dataset), rather than pointing rows at the wrong node.
#:
#: The movies come one of two ways, whichever is cheaper for the batch (``edge_batch``):
#: every movie, sorted and collected (a cost that grows with the catalogue), or only the
#: batch's own movies by ``IN`` through the index (a cost per distinct movie, dearer than a
#: collected one). A batch touches most of a small catalogue but a small share of ML-25M's,
#: where looking up its own movies is the faster way (docs/scale.md).
ALL_MOVIES = "MATCH (m:Movie) WITH m ORDER BY m.id WITH collect(m) AS ms "
OWN_MOVIES = (
    "OPTIONAL MATCH (m:Movie) WHERE m.id IN $movies WITH m ORDER BY m.id WITH collect(m) AS ms "
    "WHERE size(ms) = size($movies) "
)
EDGE_ROWS = (
    "OPTIONAL MATCH (u:User) WHERE u.id IN $users WITH ms, u ORDER BY u.id WITH ms, collect(u) AS us "
    "WHERE size(us) = size($users) "
    "UNWIND range(0, size($movie_at) - 1) AS i "
    "WITH us[$user_at[i]] AS u, ms[$movie_at[i]] AS m, $a[i] AS a, $b[i] AS b "
)
CREATE_RATED = "CREATE (u)-[:RATED {score: a, ts: b}]->(m)"
CREATE_WATCHED = "CREATE (u)-[:WATCHED {ts: a, duration: b}]->(m)"
#: A batch whose distinct movies are fewer than this share of the catalogue looks up its own
#: movies: below the measured break-even (~0.4 on the embedded FalkorDB) with a margin.
OWN_MOVIES_BELOW = 0.3


def edge_batch(
    create: str, rows: list[list[Any]], catalogue: dict[int, int], own_movies_below: float = OWN_MOVIES_BELOW
) -> tuple[str, dict[str, Any]]:
    """The statement and parameters that write ``rows`` ([user id, movie id, a, b], every
    movie in ``catalogue``: movie id → position among all movie ids sorted) with ``create``
    (``CREATE_RATED`` or ``CREATE_WATCHED``). Either way the same edges are written."""
    users = sorted({r[0] for r in rows})
    user_position = {u: p for p, u in enumerate(users)}
    params: dict[str, Any] = {
        "users": users,
        "user_at": [user_position[r[0]] for r in rows],
        "a": [r[2] for r in rows],
        "b": [r[3] for r in rows],
    }
    distinct = {r[1] for r in rows}
    if len(distinct) < own_movies_below * len(catalogue):
        movies = sorted(distinct)  # OWN_MOVIES collects them in id order
        movie_position = {m: p for p, m in enumerate(movies)}
        params.update(movies=movies, movie_at=[movie_position[r[1]] for r in rows])
        return OWN_MOVIES + EDGE_ROWS + create, params
    params["movie_at"] = [catalogue[r[1]] for r in rows]
    return ALL_MOVIES + EDGE_ROWS + create, params


class _Pass:
    """State of the one streaming pass: batches waiting to be written, and summaries.

    Mongo batches are written by one background thread while this one writes the graph
    (one writer per store, concurrently); at most one Mongo batch is in flight, so memory
    stays at two batches whatever the dataset's size.
    """

    def __init__(
        self, stores: Stores, writer: GraphWriter, physical: dict[str, str], seed: int, batch_size: int,
        movie_ids: list[int],
    ) -> None:  # fmt: skip
        self.mongo: Database[dict[str, Any]] = stores.mongo
        sqlite_file = stores.mongo_file()
        self.inserters = {name: BulkInserter(stores.mongo, physical[name], sqlite_file) for name in mongo.LOGICAL}
        self._mongo_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-mongo")
        self._mongo_pending: Future[float] | None = None
        self.writer, self.seed, self.batch = writer, seed, batch_size
        self.movie_index = {m: i for i, m in enumerate(sorted(movie_ids))}  # position in ALL_MOVIES' list
        self.reviews: list[dict[str, Any]] = []
        self.playback: list[dict[str, Any]] = []
        self.rated: list[list[Any]] = []
        self.watched: list[list[Any]] = []
        self.activity: dict[int, enrich.Activity] = {}
        self.first_seen: dict[int, int] = {}
        self.follows = enrich.FollowBuilder()
        self.n_reviews = self.n_sessions = 0
        self.mongo_s = self.graph_s = 0.0  # time spent writing each store (rows/s per store)

    def add(self, user_id: int, ratings: list[Any]) -> None:
        if not ratings:
            return
        self.activity[user_id] = enrich.Activity(ratings[0].ts, ratings[-1].ts, len(ratings))
        self.follows.add(user_id, ratings)
        for r in ratings:
            ts = datetime.fromtimestamp(r.ts, tz=UTC)
            self.reviews.append(
                {
                    "_id": f"{user_id}:{r.movie_id}:{r.ts}",
                    "user_id": user_id,
                    "movie_id": r.movie_id,
                    "rating": r.rating,
                    "ts": ts,
                }
            )
            self.rated.append([user_id, r.movie_id, r.rating, r.ts])
            if r.ts < self.first_seen.get(r.movie_id, 1 << 62):
                self.first_seen[r.movie_id] = r.ts
        sessions = enrich.sessions(user_id, ratings, self.seed)
        for s in sessions:
            t = int(s["timestamp"].timestamp())  # type: ignore[attr-defined]
            self.watched.append([user_id, s["movie_id"], t, s["duration_seconds"]])
        self.playback.append(
            {"_id": user_id, "user_id": user_id, "sessions": sessions, "updated_at": sessions[-1]["timestamp"]}
        )
        self.n_reviews += len(ratings)
        self.n_sessions += len(sessions)
        if len(self.reviews) >= self.batch:
            self.flush()

    def _write_mongo(self, reviews: list[dict[str, Any]], playback: list[dict[str, Any]]) -> float:
        t0 = time.perf_counter()
        self.inserters["reviews"].insert(reviews)
        self.inserters["playback_logs"].insert(playback)
        return time.perf_counter() - t0

    def _wait_mongo(self) -> None:
        if self._mongo_pending is not None:
            pending, self._mongo_pending = self._mongo_pending, None
            self.mongo_s += pending.result()  # a Mongo failure is raised here, in the loading thread

    def flush(self) -> None:
        self._wait_mongo()
        self._mongo_pending = self._mongo_thread.submit(self._write_mongo, self.reviews, self.playback)
        t1 = time.perf_counter()
        self._write_edges(CREATE_RATED, self.rated)
        self._write_edges(CREATE_WATCHED, self.watched)
        self.graph_s += time.perf_counter() - t1
        self.reviews, self.playback, self.rated, self.watched = [], [], [], []

    def _write_edges(self, create: str, rows: list[list[Any]]) -> None:
        """``rows`` are [user id, movie id, a, b]; rows of a movie outside the catalogue are
        dropped, as the per-row MATCH did."""
        index = self.movie_index
        for i in range(0, len(rows), self.batch):
            chunk = [r for r in rows[i : i + self.batch] if r[1] in index]
            if chunk:
                self.writer.run(*edge_batch(create, chunk, index))

    def finish(self) -> None:
        """Write what is left and wait for the Mongo writer."""
        try:
            self.flush()
            self._wait_mongo()
        finally:
            self.close()

    def close(self) -> None:
        self._mongo_thread.shutdown(wait=True, cancel_futures=True)
        for inserter in self.inserters.values():
            inserter.close()


def _load(stores: Stores, dataset: Dataset, *, run_id: int, seed: int, batch_size: int, quiet: bool) -> IngestReport:
    seconds: dict[str, float] = {}
    users = [enrich.demographics(u, seed) for u in dataset.users]
    physical = mongo.staging_names(run_id)
    with progress_bar(quiet=quiet) as progress:
        vectors, texts = _embeddings(stores, dataset.movies, progress)
        state: dict[str, _Pass] = {}

        def load_graph(writer: GraphWriter) -> None:
            t0 = time.perf_counter()
            for statement in GRAPH_INDEXES:
                writer.run(statement)
            _graph_catalogue(writer, dataset, [u.id for u in users], batch_size)
            t_catalogue = time.perf_counter() - t0
            stream = _Pass(stores, writer, physical, seed, batch_size, [m.id for m in dataset.movies])
            task = progress.add_task("ratings → mongo + graph", total=dataset.n_ratings)
            try:
                for user_id, ratings in dataset.rating_blocks():
                    stream.add(user_id, ratings)
                    progress.advance(task, len(ratings))
            except BaseException:
                stream.close()
                raise
            stream.finish()
            follows = stream.follows.edges()
            for i in range(0, len(follows), batch_size):
                writer.run(
                    "UNWIND $rows AS r MATCH (a:User {id: r[0]}), (b:User {id: r[1]}) CREATE (a)-[:FOLLOWS]->(b)",
                    {"rows": follows[i : i + batch_size]},
                )
            seconds["stream"] = time.perf_counter() - t0
            seconds["graph_catalogue"] = t_catalogue
            state["pass"] = stream
            # PostgreSQL next, inside the graph's staging window: if it fails, the graph
            # swap never happens either.
            t0 = time.perf_counter()
            with stores.pg.begin() as conn:
                _load_postgres(conn, dataset.movies, users, stream, vectors, texts, seed, progress)
            seconds["postgres"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            mongo.create_indexes(stores.mongo, physical)
            mongo.publish(stores.mongo, physical)
            seconds["mongo_swap"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        stores.graph.replace(load_graph)
        seconds["total"] = time.perf_counter() - t0
    counts = store_counts(stores)
    stream = state["pass"]
    report = IngestReport(
        dataset.name,
        False,
        counts,
        {
            "postgres": seconds["postgres"],
            "mongo": stream.mongo_s + seconds["mongo_swap"],
            "graph": stream.graph_s + seconds["graph_catalogue"],
            "stream": seconds["stream"],
            "total": seconds["total"],
        },
    )
    report.sessions = stream.n_sessions
    return report


def _embeddings(stores: Stores, movies: list[MovieRecord], progress: Progress) -> tuple[np.ndarray, list[str]]:
    """Vectors for every movie, reusing stored ones whose text and model are unchanged."""
    texts = [embeddings.movie_text(m) for m in movies]
    with stores.pg.connect() as conn:
        stored = {
            (row[0], row[1]): row[2]
            for row in conn.execute(
                text("SELECT movie_id, source_text, embedding::text FROM movie_embeddings WHERE model = :m"),
                {"m": embeddings.MODEL_NAME},
            )
        }
    vectors = np.zeros((len(movies), embeddings.DIM), dtype=np.float32)
    missing = []
    for i, (movie, t) in enumerate(zip(movies, texts, strict=True)):
        hit = stored.get((movie.id, t))
        if hit is None:
            missing.append(i)
        else:
            vectors[i] = np.array(hit.strip("[]").split(","), dtype=np.float32)
    task = progress.add_task("title embeddings", total=len(movies), completed=len(movies) - len(missing))
    for start in range(0, len(missing), 512):
        chunk = missing[start : start + 512]
        vectors[chunk] = embeddings.encode([texts[i] for i in chunk])
        progress.advance(task, len(chunk))
    return vectors, texts


def _graph_catalogue(writer: GraphWriter, dataset: Dataset, user_ids: list[int], batch: int) -> None:
    def chunks(rows: list[Any]) -> Iterator[list[Any]]:
        for i in range(0, len(rows), batch):
            yield rows[i : i + batch]

    for rows in chunks(user_ids):
        writer.run("UNWIND $rows AS id CREATE (:User {id: id})", {"rows": rows})
    movie_rows = [{"id": m.id, "title": m.title, "year": m.year} for m in dataset.movies]
    for rows in chunks(movie_rows):
        writer.run(
            "UNWIND $rows AS r CREATE (:Movie {id: r.id, title: r.title, year: r.year})",
            {"rows": rows},
        )
    genres = sorted({g for m in dataset.movies for g in m.genres})
    writer.run("UNWIND $rows AS name CREATE (:Genre {name: name})", {"rows": genres})
    pairs = [[m.id, g] for m in dataset.movies for g in m.genres]
    for rows in chunks(pairs):
        writer.run(
            "UNWIND $rows AS r MATCH (m:Movie {id: r[0]}), (g:Genre {name: r[1]}) CREATE (m)-[:HAS_GENRE]->(g)",
            {"rows": rows},
        )
    # Two streaming passes over the credits (bounded memory at ML-25M scale): people first,
    # because edges MATCH their endpoints, then edges in per-role batches.
    people = sorted({c.person_id for c in dataset.credits()})
    for rows in chunks(people):
        writer.run("UNWIND $rows AS id CREATE (:Person {id: id})", {"rows": rows})
    del people
    pending: dict[str, list[list[Any]]] = {}
    for credit in dataset.credits():
        edges = pending.setdefault(credit.role, [])
        edges.append([credit.person_id, credit.movie_id])
        if len(edges) >= batch:
            _write_credits(writer, credit.role, edges)
            pending[credit.role] = []
    for role, edges in pending.items():
        if edges:
            _write_credits(writer, role, edges)


def _write_credits(writer: GraphWriter, role: str, rows: list[list[Any]]) -> None:
    assert role in CREDIT_ROLES  # interpolated into Cypher
    writer.run(
        f"UNWIND $rows AS r MATCH (p:Person {{id: r[0]}}), (m:Movie {{id: r[1]}}) CREATE (p)-[:{role}]->(m)",
        {"rows": rows},
    )


def _load_postgres(
    conn: Connection,
    movies: list[MovieRecord],
    users: list[Any],
    stream: _Pass,
    vectors: np.ndarray,
    texts: list[str],
    seed: int,
    progress: Progress,
) -> None:
    task = progress.add_task("postgres", total=len(users) + len(movies))
    conn.execute(text(f"TRUNCATE {', '.join(PG_TABLES)} RESTART IDENTITY CASCADE"))
    copy_rows(conn, "subscription_tiers", ("id", "name", "monthly_price"), enrich.TIERS)
    default_ts = min((a.first_ts for a in stream.activity.values()), default=0)
    bills = {}
    user_rows = []
    for u in users:
        activity = stream.activity.get(u.id) or enrich.Activity(default_ts, default_ts, 0)
        bill = enrich.billing(u.id, activity, seed)
        bills[u.id] = bill
        user_rows.append(
            (u.id, u.age, u.gender, u.occupation, u.zip_code, enrich.city_for(u.zip_code, u.id), bill.signed_up_at)
        )
    copy_rows(
        conn,
        "users",
        ("id", "age", "gender", "occupation", "zip_code", "city", "signed_up_at"),
        user_rows,
    )
    copy_rows(
        conn,
        "subscriptions",
        ("user_id", "tier_id", "started_at"),
        ((uid, b.tier_id, b.signed_up_at) for uid, b in bills.items()),
    )
    copy_rows(
        conn,
        "payments",
        ("user_id", "amount", "method", "paid_at"),
        ((uid, amount, method, at) for uid, b in bills.items() for amount, method, at in b.payments),
    )
    progress.advance(task, len(users))
    first_seen = stream.first_seen
    copy_rows(
        conn,
        "movies",
        ("id", "title", "year", "freebase_id", "imdb_id", "added_at"),
        (
            (
                m.id,
                m.title,
                m.year,
                m.freebase_id,
                m.imdb_id,
                datetime.fromtimestamp(first_seen[m.id], tz=UTC) if m.id in first_seen else None,
            )
            for m in movies
        ),
    )
    genres = sorted({g for m in movies for g in m.genres})
    genre_id = {g: i + 1 for i, g in enumerate(genres)}
    copy_rows(conn, "genres", ("id", "name"), ((genre_id[g], g) for g in genres))
    copy_rows(
        conn,
        "movie_genres",
        ("movie_id", "genre_id"),
        ((m.id, genre_id[g]) for m in movies for g in dict.fromkeys(m.genres)),
    )
    copy_rows(
        conn,
        "movie_embeddings",
        ("movie_id", "embedding", "model", "source_text"),
        (
            (m.id, "[" + ",".join(f"{x:.8g}" for x in vec) + "]", embeddings.MODEL_NAME, t)
            for m, vec, t in zip(movies, vectors, texts, strict=True)
        ),
    )
    progress.advance(task, len(movies))
    conn.execute(text("ANALYZE"))
