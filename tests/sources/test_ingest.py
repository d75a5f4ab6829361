"""MovieLens-100K lands in all three stores with the source files' counts, idempotently."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from api.queries.reads import NEAREST_SQL, nearest_to_vector
from sources.datasets.movielens import CREDIT_RELATIONS, Dataset, recbole_ml100k_dir
from sources.ingest import IngestReport, ingest, store_counts
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores


def _rows(name: str) -> list[list[str]]:
    lines = (recbole_ml100k_dir() / name).read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t") for line in lines]


def expected_counts() -> dict[str, int]:
    """Counts computed straight from the files, independently of the loader."""
    link = {mid: item for item, mid in _rows("ml-100k.link")}
    relations: Counter[str] = Counter()
    people = set()
    for head, relation, tail in _rows("ml-100k.kg"):
        if relation in CREDIT_RELATIONS and head in link:
            relations[CREDIT_RELATIONS[relation]] += 1
            people.add(tail)
    items = _rows("ml-100k.item")
    return {
        "users": len(_rows("ml-100k.user")),
        "movies": len(items),
        "ratings": len(_rows("ml-100k.inter")),
        "genre_links": sum(len(set(row[3].split())) for row in items),
        "people": len(people),
        **relations,
    }


def test_counts_match_the_source_files(loaded: IngestReport, stores: Stores) -> None:
    want = expected_counts()
    assert (want["users"], want["movies"], want["ratings"]) == (943, 1682, 100_000)
    got = store_counts(stores)
    assert got["pg.users"] == got["graph.node.User"] == want["users"]
    assert got["pg.movies"] == got["graph.node.Movie"] == got["pg.movie_embeddings"] == want["movies"]
    assert got["mongo.reviews"] == got["graph.edge.RATED"] == got["graph.edge.WATCHED"] == want["ratings"]
    assert got["mongo.playback_logs"] == want["users"]
    assert got["pg.movie_genres"] == got["graph.edge.HAS_GENRE"] == want["genre_links"]
    assert got["graph.node.Person"] == want["people"]
    for role in ("ACTED_IN", "DIRECTED", "WROTE", "PRODUCED"):
        assert got[f"graph.edge.{role}"] == want[role], role
    assert (want["ACTED_IN"], want["DIRECTED"], want["WROTE"], want["PRODUCED"]) == (40152, 1727, 2381, 2615)
    assert got["pg.subscriptions"] == want["users"]
    assert got["graph.edge.FOLLOWS"] > 0


def test_known_facts(loaded: IngestReport, stores: Stores) -> None:
    with stores.pg.connect() as conn:
        user = conn.execute(text("SELECT age, gender, occupation, zip_code FROM users WHERE id = 1")).one()
        movie = conn.execute(text("SELECT title, year FROM movies WHERE id = 1")).one()
        genres = conn.execute(text(
            "SELECT g.name FROM movie_genres mg JOIN genres g ON g.id = mg.genre_id WHERE mg.movie_id = 1 ORDER BY 1"
        )).scalars().all()  # fmt: skip
    assert tuple(user) == (24, "M", "technician", "85711")
    assert tuple(movie) == ("Toy Story", 1995)
    assert genres == ["Animation", "Children's", "Comedy"]
    review = mongo.live(stores.mongo, "reviews").find_one({"user_id": 196, "movie_id": 242})
    assert review is not None and review["rating"] == 3 and int(review["ts"].timestamp()) == 881250949
    logs = mongo.live(stores.mongo, "playback_logs").find_one({"_id": 196})
    assert logs is not None and len(logs["sessions"]) == 39  # user 196 rated 39 movies
    session = logs["sessions"][0]
    assert set(session) >= {"session_id", "timestamp", "duration_seconds", "device", "buffer_rate", "errors"}
    rows = stores.graph.read(
        "MATCH (u:User {id: 196})-[r:RATED]->(m:Movie {id: 242}) RETURN r.score AS score, r.ts AS ts"
    )
    assert rows == [{"score": 3.0, "ts": 881250949}]


def test_generated_sessions_grow_with_rating(loaded: IngestReport, stores: Stores) -> None:
    by_star: dict[float, list[float]] = {}
    stars = {(r["user_id"], r["movie_id"]): r["rating"] for r in mongo.live(stores.mongo, "reviews").find(
        {"user_id": {"$lte": 50}}, {"user_id": 1, "movie_id": 1, "rating": 1})}  # fmt: skip
    for doc in mongo.live(stores.mongo, "playback_logs").find({"user_id": {"$lte": 50}}):
        for s in doc["sessions"]:
            by_star.setdefault(stars[(doc["user_id"], s["movie_id"])], []).append(s["duration_seconds"])
    means = [np.mean(by_star[k]) for k in sorted(by_star)]
    assert means == sorted(means) and means[-1] > 1.8 * means[0]


def test_second_ingest_changes_nothing(
    loaded: IngestReport, stores: Stores, ml100k: Dataset, settings: Settings
) -> None:
    before = store_counts(stores)
    again = ingest(stores, ml100k, seed=settings.seed, quiet=True)
    assert again.skipped
    assert store_counts(stores) == before


def test_forced_reload_gives_identical_data(
    loaded: IngestReport, stores: Stores, ml100k: Dataset, settings: Settings
) -> None:
    before = store_counts(stores)
    with stores.pg.connect() as conn:
        payments_before = conn.execute(
            text("SELECT user_id, amount, method, paid_at FROM payments ORDER BY 1, 4")
        ).all()
    sample_before = mongo.live(stores.mongo, "playback_logs").find_one({"_id": 7})
    report = ingest(stores, ml100k, seed=settings.seed, force=True, quiet=True)
    assert not report.skipped
    assert store_counts(stores) == before
    with stores.pg.connect() as conn:
        assert conn.execute(text("SELECT user_id, amount, method, paid_at FROM payments ORDER BY 1, 4")).all() == (
            payments_before
        )
    assert mongo.live(stores.mongo, "playback_logs").find_one({"_id": 7}) == sample_before
    # the replaced collections are gone, only the live ones remain
    names = stores.mongo.list_collection_names()
    assert sorted(n for n in names if "__" in n) == sorted(mongo.live_names(stores.mongo).values())


def test_embeddings_unit_norm_and_hnsw_nearest_neighbour_is_exact(loaded: IngestReport, stores: Stores) -> None:
    with stores.pg.connect() as conn:
        rows = conn.execute(text("SELECT movie_id, embedding::text FROM movie_embeddings ORDER BY movie_id")).all()
        ids = np.array([r[0] for r in rows])
        vectors = np.array([np.array(r[1].strip("[]").split(","), dtype=np.float64) for r in rows])
        assert vectors.shape == (1682, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # A 1,682-row table would otherwise be scanned; make sure HNSW answers.
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        for movie_id in (1, 50, 181, 1000):  # Toy Story, Star Wars, Return of the Jedi, …
            query = vectors[ids == movie_id][0]
            sims = vectors @ query
            sims[ids == movie_id] = -np.inf
            exact = int(ids[np.argmax(sims)])
            literal = "[" + ",".join(repr(float(x)) for x in query) + "]"
            sql = "SELECT movie_id FROM movie_embeddings ORDER BY embedding <=> CAST(:v AS vector) LIMIT 2"
            plan = conn.execute(text("EXPLAIN " + sql), {"v": literal}).scalars().all()
            assert any("ix_movie_embeddings_hnsw" in line for line in plan), plan
            got = next(m for m in conn.execute(text(sql), {"v": literal}).scalars() if m != movie_id)
            assert got == exact, movie_id
            # searchMovies' own statement sends the vector once and orders by the selected distance:
            # the index must still serve it, and the similarity is 1 - the cosine distance
            plan = conn.execute(text("EXPLAIN " + NEAREST_SQL), {"v": literal, "k": 2}).scalars().all()
            assert any("ix_movie_embeddings_hnsw" in line for line in plan), plan
    for movie_id in (1, 50):
        query = vectors[ids == movie_id][0]
        (first, similarity), (second, _) = nearest_to_vector(pg=stores.pg, vector=query.tolist(), k=2)
        sims = vectors @ query
        assert first == movie_id and similarity == pytest.approx(1.0, abs=1e-5)
        sims[ids == movie_id] = -np.inf
        assert second == int(ids[np.argmax(sims)])


def test_recbole_files_are_read_not_imported() -> None:
    import sys

    assert "recbole" not in sys.modules
    assert Path(recbole_ml100k_dir(), "ml-100k.kg").is_file()
