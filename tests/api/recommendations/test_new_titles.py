"""``addMovie`` end to end on the served app (api/catalog_mutations.py, api/queries/catalog.py): typed
errors that write nothing, then a new title in PostgreSQL, the graph and the online store, found
by ``similar`` and placed by the retriever's content path in a user's recommendations and in
its own ``predictedAudience`` without retraining."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from api.app import create_app
from api.serving import plug_serving
from sources.settings import Settings
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

ADD = """mutation($input: AddMovieInput!, $c: String) { addMovie(input: $input, clientMutationId: $c) {
  __typename
  ... on MovieAdded { replayed complete recommendable movie { movieId title year genres
                      people { actors { freebaseId } } } }
  ... on MutationError { message }
  ... on InvalidMovie { field }
  ... on UnknownGenre { genres }
  ... on DuplicateMovie { movie { movieId } } } }"""
TITLE = "Toy Story Returns"
NEW = {"title": TITLE, "year": 1998, "genres": ["Animation", "Children's", "Comedy"],
       "people": [{"freebaseId": "m.0i17new", "role": "ACTOR"}]}  # fmt: skip


def _gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def _movie_count(stores: Stores) -> int:
    with stores.pg.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM movies")).scalar_one())


def _remove(stores: Stores, title: str) -> None:
    """Take a test title out of PostgreSQL (cascading to genres, embedding, record) and the graph."""
    with stores.pg.begin() as conn:
        deleted = conn.execute(text("DELETE FROM movies WHERE title = :t RETURNING id"), {"t": title})
        ids = [int(i) for i in deleted.scalars()]
    for movie_id in ids:
        stores.graph.write("MATCH (m:Movie {id: $id}) DETACH DELETE m", {"id": movie_id})
    stores.graph.write("MATCH (p:Person {id: 'm.0i17new'}) DETACH DELETE p")


@pytest.fixture(scope="module")
def served(served_settings: Settings, stores: Stores, feature_store: FeatureStore) -> Iterator[TestClient]:
    _remove(stores, TITLE)
    settings = served_settings.model_copy(update={"recommendation_warm_users": 0})
    try:
        with TestClient(create_app(settings, stores=stores, configure=plug_serving)) as client:
            yield client
    finally:
        _remove(stores, TITLE)


def test_bad_input_gets_a_typed_error_and_writes_nothing(served: TestClient, stores: Stores) -> None:
    before = _movie_count(stores)
    empty = _gql(served, ADD, input={**NEW, "title": "   "})["addMovie"]
    assert empty["__typename"] == "InvalidMovie" and empty["field"] == "title"
    unknown = _gql(served, ADD, input={**NEW, "genres": ["Comedy", "Telenovela"]})["addMovie"]
    assert unknown["__typename"] == "UnknownGenre" and unknown["genres"] == ["Telenovela"]
    duplicate = _gql(served, ADD, input={"title": "toy story", "year": 1995, "genres": ["Comedy"]})["addMovie"]
    assert duplicate["__typename"] == "DuplicateMovie" and duplicate["movie"]["movieId"] == 1, duplicate
    person = _gql(served, ADD, input={**NEW, "people": [{"freebaseId": "Tom Hanks", "role": "ACTOR"}]})["addMovie"]
    assert person["__typename"] == "InvalidMovie" and person["field"] == "people"
    assert _movie_count(stores) == before


def test_a_new_title_is_similar_recommended_and_has_an_audience_at_once(
    served: TestClient, stores: Stores, feature_store: FeatureStore
) -> None:
    client_id = f"add-{uuid.uuid4()}"
    added = _gql(served, ADD, input=NEW, c=client_id)["addMovie"]
    assert added["__typename"] == "MovieAdded", added
    assert (added["replayed"], added["complete"], added["recommendable"]) == (False, True, True)
    movie = added["movie"]
    assert movie["genres"] == NEW["genres"] and movie["people"]["actors"] == [{"freebaseId": "m.0i17new"}]
    movie_id = movie["movieId"]
    # idempotent per clientMutationId; the same id for other input is refused
    again = _gql(served, ADD, input=NEW, c=client_id)["addMovie"]
    assert again["__typename"] == "MovieAdded" and again["replayed"] is True and again["movie"]["movieId"] == movie_id
    other = _gql(served, ADD, input={**NEW, "year": 1999}, c=client_id)["addMovie"]
    assert other["__typename"] == "InvalidClientMutationId"
    # the online store has its content
    online = feature_store.get_online_features(
        features=["movie_profile:year", "movie_embedding:title_embedding"], entity_rows=[{"movie_id": movie_id}]
    ).to_dict()
    assert online["year"] == [1998] and len(online["title_embedding"][0]) == 384
    # similar: the new title is near Toy Story (1995), a movie of the same genres
    similar = _gql(served, "{ movie(id: 1) { similar(first: 10) { movie { movieId } } } }")["movie"]["similar"]
    assert movie_id in [s["movie"]["movieId"] for s in similar]
    # its predicted audience, and some of those users find it in their recommendations
    query = "query($m: Int!) { movie(id: $m) { predictedAudience(first: 5) { score user { userId } } } }"
    audience = _gql(served, query, m=movie_id)["movie"]["predictedAudience"]
    assert len(audience) == 5 and audience == sorted(audience, key=lambda a: -a["score"])
    recommend = "query($u: Int!) { recommendations(userId: $u, first: 100) { items { movie { movieId } } } }"
    found = [
        a["user"]["userId"]
        for a in audience
        if movie_id
        in [i["movie"]["movieId"] for i in _gql(served, recommend, u=a["user"]["userId"])["recommendations"]["items"]]
    ]
    assert found, f"movie {movie_id} is in no top-100 of its predicted audience {audience}"
