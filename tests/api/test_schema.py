"""A representative frontend query per capability, checked against facts in ML-100K.

Expected values come from the dataset files (the ``ml100k`` fixture), computed here
independently of the stores and the API.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from sources.datasets import embeddings
from sources.datasets import movielens as datasets
from sources.stores.clients import Stores

Query = Callable[..., dict[str, Any]]


@dataclass
class Facts:
    ratings_by_movie: dict[int, list[float]]
    ratings_by_user: dict[int, dict[int, float]]
    credits: dict[int, dict[str, set[str]]]
    movies: dict[int, datasets.MovieRecord]


@pytest.fixture(scope="module")
def facts(ml100k: datasets.Dataset) -> Facts:
    by_movie: dict[int, list[float]] = defaultdict(list)
    by_user: dict[int, dict[int, float]] = defaultdict(dict)
    for user_id, ratings in ml100k.rating_blocks():
        for r in ratings:
            by_movie[r.movie_id].append(r.rating)
            by_user[user_id][r.movie_id] = r.rating
    credits: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for c in ml100k.credits():
        credits[c.movie_id][c.role].add(c.person_id)
    return Facts(by_movie, by_user, credits, {m.id: m for m in ml100k.movies})


def gid(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def test_user_profile_subscription_and_payments(gql: Query) -> None:
    body = gql(
        "{ user(id: 1) { id userId age gender occupation city zipCode "
        "subscription { tier monthlyPrice } payments(first: 3) { amount method paidAt } } }"
    )
    assert "errors" not in body
    user = body["data"]["user"]
    assert user["id"] == gid("User", 1)
    assert (user["userId"], user["age"], user["gender"], user["occupation"]) == (1, 24, "M", "technician")
    assert user["zipCode"] == "85711" and user["city"] == "Phoenix"  # generated from the 8xxxx zip
    assert user["subscription"]["tier"] in {"Basic", "Standard", "Premium"}
    assert user["subscription"]["monthlyPrice"] in {"7.99", "13.99", "19.99"}
    paid = [p["paidAt"] for p in user["payments"]]
    assert len(paid) == 3 and paid == sorted(paid, reverse=True)
    assert all(p["amount"] == user["subscription"]["monthlyPrice"] for p in user["payments"])


def test_user_reviews_and_sessions_from_mongo(gql: Query, facts: Facts) -> None:
    body = gql(
        "{ user(id: 1) { reviews(first: 100) { movieId rating ratedAt movie { title } } "
        "recentSessions(first: 5) { movieId durationSeconds device startedAt } } }"
    )
    assert "errors" not in body
    user = body["data"]["user"]
    reviews = user["reviews"]
    assert len(reviews) == 100
    assert [r["ratedAt"] for r in reviews] == sorted((r["ratedAt"] for r in reviews), reverse=True)
    for r in reviews:
        assert facts.ratings_by_user[1][r["movieId"]] == r["rating"]
        assert r["movie"]["title"] == facts.movies[r["movieId"]].title
    sessions = user["recentSessions"]
    assert len(sessions) == 5
    assert all(s["device"] in {"tv", "mobile", "desktop", "tablet"} and s["durationSeconds"] >= 60 for s in sessions)
    assert {s["movieId"] for s in sessions} <= set(facts.ratings_by_user[1])


def test_user_graph_fields(gql: Query, stores: Stores, facts: Facts) -> None:
    body = gql(
        "{ user(id: 1) { following(first: 100) { userId } followers(first: 100) { userId } "
        "watched(first: 100) { movieId watchedAt movie { title } } } }"
    )
    assert "errors" not in body
    user = body["data"]["user"]
    follows = stores.graph.read("MATCH (:User {id: 1})-[:FOLLOWS]->(v:User) RETURN v.id AS id")
    followers = stores.graph.read("MATCH (v:User)-[:FOLLOWS]->(:User {id: 1}) RETURN v.id AS id")
    assert [u["userId"] for u in user["following"]] == sorted(r["id"] for r in follows)
    assert [u["userId"] for u in user["followers"]] == sorted(r["id"] for r in followers)
    assert len(user["following"]) > 0
    watched = user["watched"]
    assert len(watched) == 100  # user 1 rated 272 movies, one session each
    assert {w["movieId"] for w in watched} <= set(facts.ratings_by_user[1])


def test_online_features_without_a_feature_store_is_null_with_a_code(gql: Query) -> None:
    body = gql("{ user(id: 1) { age onlineFeatures } }")
    assert body["data"]["user"] == {"age": 24, "onlineFeatures": None}
    (error,) = body["errors"]
    assert error["path"] == ["user", "onlineFeatures"]
    assert error["extensions"]["code"] == "STORE_UNAVAILABLE"
    assert "feature store" in error["message"]


def test_movie_with_genres_people_and_rating_stats(gql: Query, facts: Facts) -> None:
    body = gql(
        "{ movie(id: 1) { id movieId title year genres freebaseId "
        "people { namesKnown actors { freebaseId name } directors { freebaseId } writers { freebaseId } "
        "producers { freebaseId } } ratingStats { count average histogram } } }"
    )
    assert "errors" not in body
    movie = body["data"]["movie"]
    assert movie["id"] == gid("Movie", 1)
    assert (movie["title"], movie["year"]) == ("Toy Story", 1995)
    assert movie["genres"] == ["Animation", "Children's", "Comedy"]
    people = movie["people"]
    assert people["namesKnown"] is False
    assert all(a["name"] is None for a in people["actors"])
    for field, role in (("actors", "ACTED_IN"), ("directors", "DIRECTED"), ("writers", "WROTE")):
        assert {p["freebaseId"] for p in people[field]} == facts.credits[1][role]
    expected = facts.ratings_by_movie[1]
    stats = movie["ratingStats"]
    assert stats["count"] == len(expected) == 452
    assert stats["average"] == pytest.approx(float(np.mean(expected)))
    counts = Counter(int(r) for r in expected)
    assert stats["histogram"] == [counts[s] for s in range(1, 6)]


def test_movies_filters_and_cursor_paging(gql: Query, facts: Facts) -> None:
    query = """query($after: String) {
      movies(genre: "Animation", yearFrom: 1994, yearTo: 1996, first: 4, after: $after) {
        totalCount edges { cursor node { movieId title year genres } } pageInfo { hasNextPage endCursor }
      } }"""
    expected = sorted(
        m.id for m in facts.movies.values() if "Animation" in m.genres and m.year and 1994 <= m.year <= 1996
    )
    seen: list[int] = []
    after = None
    for _ in range(10):
        body = gql(query, {"after": after})
        assert "errors" not in body
        page = body["data"]["movies"]
        assert page["totalCount"] == len(expected)
        for edge in page["edges"]:
            node = edge["node"]
            assert "Animation" in node["genres"] and 1994 <= node["year"] <= 1996
            seen.append(node["movieId"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected and len(expected) > 4  # really took several pages


def test_movies_title_search_is_a_literal_substring(gql: Query, facts: Facts) -> None:
    body = gql('{ movies(search: "star wars", first: 10) { totalCount edges { node { title } } } }')
    titles = [e["node"]["title"] for e in body["data"]["movies"]["edges"]]
    assert titles == [
        m.title for m in sorted(facts.movies.values(), key=lambda m: m.id) if "star wars" in m.title.lower()
    ]
    assert "Star Wars" in titles
    none = gql('{ movies(search: "%", first: 5) { totalCount } }')["data"]["movies"]["totalCount"]
    assert none == sum("%" in m.title for m in facts.movies.values())


def test_users_connection(gql: Query) -> None:
    first = gql("{ users(first: 3) { totalCount edges { node { userId } } pageInfo { hasNextPage endCursor } } }")
    page = first["data"]["users"]
    assert page["totalCount"] == 943
    assert [e["node"]["userId"] for e in page["edges"]] == [1, 2, 3]
    after = page["pageInfo"]["endCursor"]
    second = gql("query($a: String) { users(first: 2, after: $a) { edges { node { userId } } } }", {"a": after})
    assert [e["node"]["userId"] for e in second["data"]["users"]["edges"]] == [4, 5]


def test_node_and_nodes_by_global_id(gql: Query) -> None:
    body = gql(
        "query($u: ID!, $ids: [ID!]!) { node(id: $u) { id ... on User { age } } "
        "nodes(ids: $ids) { id ... on Movie { title } ... on User { occupation } } }",
        {"u": gid("User", 1), "ids": [gid("Movie", 1), gid("User", 1)]},
    )
    assert "errors" not in body
    assert body["data"]["node"] == {"id": gid("User", 1), "age": 24}
    assert body["data"]["nodes"] == [
        {"id": gid("Movie", 1), "title": "Toy Story"},
        {"id": gid("User", 1), "occupation": "technician"},
    ]


def test_similar_movies_by_title_embedding(gql: Query, stores: Stores) -> None:
    body = gql("{ movie(id: 1) { similar(first: 5) { similarity movie { movieId title } } } }")
    assert "errors" not in body
    similar = body["data"]["movie"]["similar"]
    assert len(similar) == 5
    scores = [s["similarity"] for s in similar]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert 1 not in {s["movie"]["movieId"] for s in similar}
    # Exact cosine over all stored vectors: HNSW's top-5 should agree on ML-100K's 1,682 titles.
    from sqlalchemy import text

    with stores.pg.connect() as conn:
        exact = conn.execute(
            text(
                "SELECT e.movie_id FROM movie_embeddings e, movie_embeddings q WHERE q.movie_id = 1 "
                "AND e.movie_id <> 1 ORDER BY (e.embedding <=> q.embedding) + 0 LIMIT 5"
            )
        ).scalars()
        assert [s["movie"]["movieId"] for s in similar] == list(exact)


def test_neighbours_carry_the_linking_path(gql: Query, facts: Facts) -> None:
    body = gql(
        "{ movie(id: 1) { neighbours(relation: ACTOR, first: 5) { depth shared description "
        "path { kind key relationship title } movie { movieId title } } } }"
    )
    assert "errors" not in body
    rows = body["data"]["movie"]["neighbours"]
    assert len(rows) == 5
    actors = facts.credits[1]["ACTED_IN"]
    for row in rows:
        origin, person, target = row["path"]
        assert (origin["kind"], origin["key"], origin["title"]) == ("Movie", "1", "Toy Story")
        assert person["kind"] == "Person" and person["key"] in actors and person["relationship"] == "ACTED_IN"
        assert target == {
            "kind": "Movie",
            "key": str(row["movie"]["movieId"]),
            "relationship": "ACTED_IN",
            "title": row["movie"]["title"],
        }
        assert person["key"] in facts.credits[row["movie"]["movieId"]]["ACTED_IN"]
        shared = len(actors & facts.credits[row["movie"]["movieId"]]["ACTED_IN"])
        assert row["shared"] == shared and row["depth"] == 1
    assert rows[0]["movie"]["title"] == "Toy Story 2" or rows[0]["shared"] >= rows[-1]["shared"]


def test_neighbours_at_depth_two_go_through_an_intermediate_movie(gql: Query, facts: Facts) -> None:
    by_director: dict[str, set[int]] = defaultdict(set)
    for movie_id, roles in facts.credits.items():
        for person in roles["DIRECTED"]:
            by_director[person].add(movie_id)
    # A movie whose director made other movies in the data, so depth 1 and depth 2 both exist.
    candidates = [m for m, roles in facts.credits.items() if any(len(by_director[p]) > 1 for p in roles["DIRECTED"])]
    movie_id = min(candidates)
    body = gql(
        "query($id: Int!) { movie(id: $id) { neighbours(relation: DIRECTOR, depth: 2, first: 100) "
        "{ depth path { kind key relationship } movie { movieId } } } }",
        {"id": movie_id},
    )
    assert "errors" not in body
    rows = body["data"]["movie"]["neighbours"]
    depth1 = {m for p in facts.credits[movie_id]["DIRECTED"] for m in by_director[p]} - {movie_id}
    assert {r["movie"]["movieId"] for r in rows if r["depth"] == 1} == depth1
    depth2 = [r for r in rows if r["depth"] == 2]
    for row in depth2:
        assert len(row["path"]) == 5 and row["path"][2]["kind"] == "Movie"
        assert int(row["path"][2]["key"]) in depth1
        assert row["movie"]["movieId"] not in depth1 | {movie_id}


def test_search_movies_embeds_the_text_with_minilm(gql: Query, stores: Stores, facts: Facts) -> None:
    text = "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War"
    body = gql(
        "query($t: String!) { searchMovies(text: $t, first: 3) { similarity movie { movieId title } } }", {"t": text}
    )
    assert "errors" not in body
    hits = body["data"]["searchMovies"]
    assert hits[0]["movie"]["movieId"] == 50  # the exact text a title was embedded from
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    # Independent check: the query encoded here, exact cosine over every stored title vector in numpy.
    from sqlalchemy import text as sql

    with stores.pg.connect() as conn:
        rows = conn.execute(sql("SELECT movie_id, embedding FROM movie_embeddings ORDER BY movie_id")).all()
    ids = [row[0] for row in rows]
    vectors = np.array([json.loads(row[1]) for row in rows], dtype=np.float32)  # vector text: "[x,y,...]"
    query = embeddings.encode([text])[0]
    best = [ids[i] for i in np.argsort(-(vectors @ query))[:3]]
    assert [h["movie"]["movieId"] for h in hits] == best


def test_recommendations_explain_and_exclude_seen(gql: Query, facts: Facts) -> None:
    body = gql(
        "{ recommendations(userId: 1, first: 10) { modelVersion degraded "
        "items { rank score explanation movie { movieId title } } } }"
    )
    assert "errors" not in body
    result = body["data"]["recommendations"]
    assert result["degraded"] is False and result["modelVersion"]
    items = result["items"]
    assert [i["rank"] for i in items] == list(range(1, 11))
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    seen = set(facts.ratings_by_user[1])
    assert not {i["movie"]["movieId"] for i in items} & seen
    liked_titles = {facts.movies[m].title for m, r in facts.ratings_by_user[1].items() if r >= 4}
    linked = [i for i in items if i["explanation"].startswith("shares ")]
    assert linked, "expected at least one graph-explained recommendation"
    for item in linked:
        assert any(f"with {title}, which you rated" in item["explanation"] for title in liked_titles)


def test_user_recommendations_field_matches_the_root_field(gql: Query) -> None:
    body = gql(
        "{ user(id: 2) { recommendations(first: 5) { items { movie { movieId } } } } "
        "recommendations(userId: 2, first: 5) { items { movie { movieId } } } }"
    )
    assert "errors" not in body
    assert body["data"]["user"]["recommendations"] == body["data"]["recommendations"]


def test_recommendations_can_include_seen(gql: Query, facts: Facts) -> None:
    body = gql("{ recommendations(userId: 1, first: 20, excludeSeen: false) { items { movie { movieId } } } }")
    ids = {i["movie"]["movieId"] for i in body["data"]["recommendations"]["items"]}
    assert ids & set(facts.ratings_by_user[1])  # user 1 rated most of the popular ones
