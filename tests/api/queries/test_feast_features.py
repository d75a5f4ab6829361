"""Online features through GraphQL, and mutations pushing into them (real Feast, real stores)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.queries.feast_features import VIEW_OF_TABLE, FeastUserFeatures
from api.serving import plug_feature_store
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores
from tests.api.conftest import offline_latest, undo_rating

if TYPE_CHECKING:
    from feast import FeatureStore

USER = 1  # rated 272 movies in ML-100K
NEVER = float("inf")  # a refresh period: no background look starts in the middle of a test


@pytest.fixture(scope="module")
def client(settings: Settings, stores: Stores, feature_store: FeatureStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, stores=stores, configure=plug_feature_store)) as opened:
        yield opened


def gql(client: TestClient, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def online(client: TestClient, user_id: int) -> dict[str, Any]:
    body = gql(client, "query($id: Int!) { user(id: $id) { onlineFeatures } }", {"id": user_id})
    assert "errors" not in body, body
    features_: dict[str, Any] = body["data"]["user"]["onlineFeatures"]
    return features_


def test_online_features_are_the_latest_offline_values(client: TestClient, stores: Stores) -> None:
    got = online(client, USER)
    reviews = offline_latest(stores, "feat_user_reviews", USER)
    assert got["user_reviews__review_count"] == reviews["review_count"] == 272
    assert got["user_reviews__mean_rating"] == pytest.approx(reviews["mean_rating"])
    assert got["user_profile__age"] == 24 and got["user_profile__occupation"] == "technician"
    assert len(got["user_playback__last5_durations"]) == 5


def _unrated_movie(stores: Stores, user_id: int) -> int:
    rated = {d["movie_id"] for d in mongo.live(stores.mongo, "reviews").find({"user_id": user_id}, {"movie_id": 1})}
    return min(m for m in range(1, 1683) if m not in rated)


def test_rate_movie_pushes_features_and_changes_recommendations(
    client: TestClient, stores: Stores, feature_store: FeatureStore
) -> None:
    movie = _unrated_movie(stores, USER)
    before = online(client, USER)
    result = gql(
        client,
        """mutation($u: Int!, $m: Int!) {
             rateMovie(userId: $u, movieId: $m, rating: 5, clientMutationId: "feat-test-1") {
               __typename ... on RatingRecorded { reviewId ratedAt featuresPushed } } }""",
        {"u": USER, "m": movie},
    )
    recorded = result["data"]["rateMovie"]
    assert recorded["__typename"] == "RatingRecorded", result
    try:
        assert recorded["featuresPushed"] is True
        after = online(client, USER)
        n = before["user_reviews__review_count"]
        assert after["user_reviews__review_count"] == n + 1
        assert after["user_reviews__mean_rating"] == pytest.approx(
            (before["user_reviews__mean_rating"] * n + 5) / (n + 1)
        )
        # the offline table holds the same new row (the next export will skip the event)
        assert offline_latest(stores, "feat_user_reviews", USER)["review_count"] == n + 1
        recs = gql(
            client,
            "query($u: Int!) { recommendations(userId: $u, first: 20) { items { movie { movieId } } } }",
            {"u": USER},
        )
        assert "errors" not in recs, recs
        ids = [item["movie"]["movieId"] for item in recs["data"]["recommendations"]["items"]]
        assert ids and movie not in ids
    finally:
        at = datetime.fromisoformat(recorded["ratedAt"])
        undo_rating(stores, feature_store, recorded["reviewId"], USER, movie, at)
    assert online(client, USER) == before


def test_reader_refuses_an_unapplied_repository(stores: Stores, feature_store: FeatureStore) -> None:
    assert FeastUserFeatures(stores, feature_store).user_features(10**6) == {}


def test_cached_pair_features_equal_feasts_own_read(stores: Stores, feature_store: FeatureStore) -> None:
    """The serving hot path (movie features held in memory, one user row read) gives exactly
    what Feast's get_online_features gives for the same pairs, on-demand view included."""
    import numpy as np

    from api.queries.reads import movie_ids
    from model.serve.pair_features import CachedPairFeatures, FeastPairFeatures

    movies = [1, 50, 181, 300, 1682, 7]
    expected = FeastPairFeatures(feature_store).pairs(USER, movies)
    got = CachedPairFeatures(feature_store, movie_ids(pg=stores.pg), refresh_s=NEVER).pairs(USER, movies)
    assert sorted(got.columns) == sorted(expected.columns)
    for column in expected.columns:
        for want, have in zip(expected[column].tolist(), got[column].tolist(), strict=True):
            if isinstance(want, list | np.ndarray):
                np.testing.assert_allclose(np.asarray(have, dtype=float), np.asarray(want, dtype=float))
            elif want is None or (isinstance(want, float) and np.isnan(want)):
                assert have is None or (isinstance(have, float) and np.isnan(have)), column
            else:
                assert have == pytest.approx(want), column


def test_encoded_hot_path_equals_encoding_feasts_rows(stores: Stores, feature_store: FeatureStore) -> None:
    """What the ranker is fed on a request (movie rows encoded once, the user's row and the
    on-demand view written in) is tensor-for-tensor what encoding Feast's own rows gives,
    categorical vocabularies, list slots, the playback sequence and id factors included."""
    import torch

    from api.queries.reads import movie_ids
    from model.data.engagement_frame import schema_config
    from model.serve.pair_features import CachedPairFeatures, FeastPairFeatures

    movies = [1, 50, 181, 300, 1682, 7, 50]  # a repeat is fine
    reference = FeastPairFeatures(feature_store)
    sample = pd.concat([reference.pairs(user, movies) for user in (1, 2, 3, 500)], ignore_index=True)
    encoder = schema_config(sample, user_ids=range(1, 944), movie_ids=range(1, 1683), factor_dim=4)
    assert encoder.config.categorical_features, "the sample should exercise categorical columns"
    cached = CachedPairFeatures(feature_store, movie_ids(pg=stores.pg), refresh_s=NEVER)
    users = (USER, 2, 500, 943)
    wanted = []
    for user in users:
        want, got = encoder.encode(reference.pairs(user, movies)), cached.encoded(user, movies, encoder)
        assert want.keys() == got.keys()
        for name in want:
            assert torch.equal(want[name], got[name]), (user, name)
        wanted.append(want)
    # Several users at once (one user-row read, one on-demand call): each user's rows, in order.
    together = cached.encoded_many([(user, movies[: 3 + i]) for i, user in enumerate(users)], encoder)
    for name in together:
        rows = torch.cat([want[name][: 3 + i] for i, want in enumerate(wanted)])
        assert torch.equal(together[name], rows), name


def test_movie_features_follow_online_writes_rereading_only_what_changed(
    stores: Stores, feature_store: FeatureStore
) -> None:
    """A write to a movie's online row (a push or a materialization) reaches the held movie
    features at the next look, by re-reading that movie alone; the patched block equals one
    built from a full read; a look that finds nothing re-reads nothing."""
    import torch

    from api.queries.reads import movie_ids
    from model.data.engagement_frame import schema_config
    from model.serve.pair_features import CachedPairFeatures, FeastPairFeatures

    movies, changed = [1, 50, 181], 50
    encoder = schema_config(pd.concat([FeastPairFeatures(feature_store).pairs(u, movies) for u in (1, 2)]))
    cached = CachedPairFeatures(feature_store, movie_ids(pg=stores.pg), refresh_s=NEVER)  # looks made by hand
    assert cached._changes is not None, "the suite's online store is Feast's postgres one"
    before = cached.encoded(USER, movies, encoder)
    reads: list[list[int] | None] = []
    read = cached._read_movies

    def counted(movie_ids: list[int] | None = None) -> pd.DataFrame:
        reads.append(None if movie_ids is None else list(movie_ids))
        return read(movie_ids)

    cached._read_movies = counted  # type: ignore[method-assign]
    cached._refresh()
    assert reads == [] and cached.refresh_error is None  # nothing written: nothing re-read

    original = offline_latest(stores, "feat_movie_reviews", changed, "movie_id")
    view = VIEW_OF_TABLE["feat_movie_reviews"]
    try:
        feature_store.write_to_online_store(view, pd.DataFrame([{**original, "review_count": 10_000}]))
        cached._refresh()
        assert reads == [[changed]], reads
        after = cached.encoded(USER, movies, encoder)
        assert not torch.equal(after["numeric"][1], before["numeric"][1]), "the written movie's row must change"
        for row in (0, 2):
            assert torch.equal(after["numeric"][row], before["numeric"][row])
        full = CachedPairFeatures(feature_store, movie_ids(pg=stores.pg), refresh_s=NEVER)
        patched, rebuilt = cached._block(encoder)[0], full._block(encoder)[0]
        for name in rebuilt.batch:
            assert torch.equal(patched.batch[name], rebuilt.batch[name]), name
    finally:
        feature_store.write_to_online_store(view, pd.DataFrame([original]))
    cached._refresh()
    for name, tensor in cached.encoded(USER, movies, encoder).items():
        assert torch.equal(tensor, before[name]), name


def test_movie_features_refresh_in_the_background_and_survive_a_failed_read(
    stores: Stores, feature_store: FeatureStore
) -> None:
    """Changed movie features are re-read by a background thread while requests use the
    current frame; a re-read that fails keeps the last good frame, records why, and the change
    is picked up once reads work again."""
    import time

    import torch

    from api.queries.reads import movie_ids
    from model.data.engagement_frame import schema_config
    from model.serve.pair_features import CachedPairFeatures, FeastPairFeatures

    movies, changed = [1, 50, 181], 181
    encoder = schema_config(pd.concat([FeastPairFeatures(feature_store).pairs(u, movies) for u in (1, 2)]))
    cached = CachedPairFeatures(feature_store, movie_ids(pg=stores.pg), refresh_s=0.0)
    first = cached.encoded(USER, movies, encoder)

    def wait_for(done: Callable[[], bool], seconds: float = 60.0) -> bool:
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            cached.encoded(USER, movies, encoder)  # a request: starts a look when none runs
            time.sleep(0.05)
        return done()

    def broken(movie_ids: list[int] | None = None) -> pd.DataFrame:
        raise ConnectionError("online store away")

    read = cached._read_movies
    original = offline_latest(stores, "feat_movie_reviews", changed, "movie_id")
    view = VIEW_OF_TABLE["feat_movie_reviews"]
    try:
        assert wait_for(lambda: not cached._refreshing)
        cached._read_movies = broken  # type: ignore[method-assign]
        served = cached._movies
        feature_store.write_to_online_store(view, pd.DataFrame([{**original, "review_count": 10_000}]))
        assert wait_for(lambda: cached.refresh_error is not None)
        assert cached.refresh_error == "ConnectionError: online store away"
        assert cached._movies is served
        assert torch.equal(cached.encoded(USER, movies, encoder)["numeric"], first["numeric"])
        cached._read_movies = read  # type: ignore[method-assign]
        assert wait_for(lambda: cached._movies is not served), "the change was lost with the failed read"
        assert wait_for(lambda: cached.refresh_error is None)
        assert not torch.equal(cached.encoded(USER, movies, encoder)["numeric"][2], first["numeric"][2])
    finally:
        cached._read_movies = read  # type: ignore[method-assign]
        feature_store.write_to_online_store(view, pd.DataFrame([original]))
    try:
        assert wait_for(lambda: torch.equal(cached.encoded(USER, movies, encoder)["numeric"], first["numeric"]))
    finally:
        cached.close()
    assert not cached._refresher or not cached._refresher.is_alive()


def test_user_values_spread_over_rows_keep_one_value_per_row() -> None:
    """The hot path hands the on-demand view one array per input column; a list-valued user
    feature must stay one list per row, not become a second dimension."""
    import numpy as np

    from model.serve.pair_features import _column

    assert _column([1.0, None]).tolist() == [1.0, None]
    assert _column([3.5, 4.0]).dtype == np.float64
    spread = np.repeat(_column([[1, 2], [3, 4]]), [2, 1])
    assert spread.shape == (3,) and spread.tolist() == [[1, 2], [1, 2], [3, 4]]
