"""The in-memory title index (api/title_index.py) over ML-100K's real title embeddings in
PostgreSQL: its two-stage search against exact cosine, additions, catching up with the store,
and the API answering ``similar``/``searchMovies`` from it (and from pgvector without it)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.queries import reads
from api.serving import plug_title_index
from api.title_index import TitleIndex
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores


@pytest.fixture(scope="module")
def stored(stores: Stores, loaded: IngestReport) -> tuple[np.ndarray, np.ndarray]:
    """Every title's id and unit embedding, as PostgreSQL holds them."""
    ids, vectors = reads.title_embeddings(pg=stores.pg, page=500)  # several pages
    return ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(unit: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, skip: int | None = None) -> list[int]:
    sims = unit @ query
    if skip is not None:
        sims[ids == skip] = -np.inf
    return ids[np.lexsort((ids, -sims))[:k]].tolist()


def test_title_embeddings_are_read_in_pages_in_id_order(stored: tuple[np.ndarray, np.ndarray], stores: Stores) -> None:
    ids, vectors = stored
    assert len(ids) == reads.title_count(pg=stores.pg) == 1682 and vectors.shape == (1682, 384)
    assert np.all(np.diff(ids) > 0)
    after_ids, after_vectors = reads.title_embeddings(pg=stores.pg, after=int(ids[-3]))
    assert after_ids.tolist() == ids[-2:].tolist() and np.allclose(after_vectors[0] / np.linalg.norm(after_vectors[0]),
                                                                   vectors[-2], atol=1e-6)  # fmt: skip


def test_the_two_stages_find_the_exact_neighbours(stored: tuple[np.ndarray, np.ndarray]) -> None:
    ids, unit = stored
    narrow = TitleIndex(ids, unit, dims=64, candidates=128)  # stage 1 keeps 128 of 1,682
    picks = np.random.default_rng(5).choice(ids, size=100, replace=False)
    hits = 0
    for movie_id in picks.tolist():
        query = unit[ids == movie_id][0]
        found = narrow.similar(movie_id, 10)
        assert found is not None and movie_id not in [m for m, _ in found]
        sims = [s for _, s in found]
        assert sims == sorted(sims, reverse=True)
        hits += len({m for m, _ in found} & set(exact_top(unit, ids, query, 10, skip=movie_id)))
    assert hits / 1000 >= 0.95  # recall@10 against exact cosine
    wide = TitleIndex(ids, unit, candidates=len(ids))  # every title reaches stage 2: exact
    for movie_id in picks[:20].tolist():
        query = unit[ids == movie_id][0]
        assert [m for m, _ in wide.similar(movie_id, 10) or []] == exact_top(unit, ids, query, 10, skip=movie_id)
        found = wide.nearest(query * 3.0, 5)  # any length: cosine
        assert [m for m, _ in found] == exact_top(unit, ids, query, 5) and found[0] == (movie_id, pytest.approx(1.0))
    assert wide.similar(10**9, 5) is None and wide.nearest(unit[0], 0) == []


def test_added_titles_are_found_and_the_store_is_caught_up(
    stored: tuple[np.ndarray, np.ndarray], stores: Stores
) -> None:
    ids, unit = stored
    index = TitleIndex(ids[:-5], unit[:-5])
    assert index.similar(int(ids[-1]), 3) is None
    assert index.refresh(stores.pg) == 5 and len(index) == len(ids)  # the five past the newest held
    assert index.similar(int(ids[-1]), 3) is not None and index.refresh(stores.pg) == 0
    gappy = TitleIndex(np.delete(ids, [3, 4]), np.delete(unit, [3, 4], axis=0))  # two below the newest missing
    assert gappy.refresh(stores.pg) == 2 and int(ids[3]) in gappy and int(ids[4]) in gappy
    new_id, vector = 10**7, -unit[0]
    assert index.add([new_id], vector[None, :]) == 1 and index.add([new_id], vector[None, :]) == 0
    assert index.nearest(vector, 1)[0] == (new_id, pytest.approx(1.0)) and index.newest == new_id
    empty = TitleIndex(np.zeros(0, np.int64), np.zeros((0, 384), np.float32))
    assert empty.nearest(unit[0], 3) == [] and empty.add(ids[:2], unit[:2]) == 2
    assert [m for m, _ in empty.nearest(unit[1], 1)] == [int(ids[1])]


@pytest.fixture(scope="module")
def index_client(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    with TestClient(create_app(settings, stores=stores, configure=plug_title_index)) as client:
        yield client


def test_the_api_answers_from_the_index_as_from_pgvector(
    index_client: TestClient, api_client: TestClient, stored: tuple[np.ndarray, np.ndarray]
) -> None:
    query = (
        "{ movie(id: 50) { similar(first: 5) { similarity movie { movieId } } } "
        'searchMovies(text: "space adventure", first: 5) { similarity movie { movieId } } }'
    )
    answers = []
    for client in (index_client, api_client):  # the index; pgvector (the session's app has no index)
        body = client.post("/graphql", json={"query": query}).json()
        assert "errors" not in body
        answers.append(body["data"])
    memory, pgvector = answers
    for field in (memory["movie"]["similar"], memory["searchMovies"]):
        assert len(field) == 5
    ids = lambda rows: [r["movie"]["movieId"] for r in rows]  # noqa: E731
    assert ids(memory["movie"]["similar"]) == ids(pgvector["movie"]["similar"])
    assert ids(memory["searchMovies"]) == ids(pgvector["searchMovies"])
    for a, b in zip(memory["searchMovies"], pgvector["searchMovies"], strict=True):
        assert a["similarity"] == pytest.approx(b["similarity"], abs=1e-5)
    serving = index_client.get("/readyz").json()["serving"]
    assert serving["title_index"] == {"ok": True, "error": None, "titles": 1682}
