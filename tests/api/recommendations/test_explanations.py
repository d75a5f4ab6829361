"""Explanations from the in-memory credit index, checked against the graph itself."""

from __future__ import annotations

import re

from api.recommendations.explanations import CreditIndex
from api.recommendations.history import RatingHistory
from sources.ingest import IngestReport
from sources.stores.clients import Stores
from sources.vocabulary import CREDITS

EXPLANATION = re.compile(r"shares (actor|director|writer|producer) (\S+) with (.+), which you rated (\d(?:\.\d)?)$")


def test_each_explanation_names_a_real_shared_person_and_the_best_rated_source(
    stores: Stores, loaded: IngestReport
) -> None:
    ratings, _ = RatingHistory(stores).user_ratings(1)
    liked = [m for m, r in ratings.items() if r >= 4]
    candidates = list(range(1, 301))
    explained = CreditIndex(stores).explain(ratings, candidates)
    assert len(explained) > 50, "user 1 likes many movies; most early ids share someone with one"
    rows = stores.graph.read(
        f"MATCH (c:Movie)<-[r:{CREDITS}]-(p:Person)-[:{CREDITS}]->(m:Movie) "
        "WHERE c.id IN $candidates AND m.id IN $liked AND c.id <> m.id "
        "RETURN c.id AS candidate, m.title AS title, p.id AS person, m.id AS source",
        {"candidates": candidates, "liked": liked},
    )
    links: dict[int, set[tuple[str, str, float]]] = {}
    for row in rows:
        links.setdefault(row["candidate"], set()).add((row["person"], row["title"], ratings[row["source"]]))
    assert set(explained) == set(links)  # explained exactly when the graph has a link
    for candidate, why in explained.items():
        match = EXPLANATION.match(why)
        assert match, why
        _, person, title, rating = match.groups()
        assert (person, title, float(rating)) in links[candidate]
        assert float(rating) == max(r for _, _, r in links[candidate])
    assert CreditIndex(stores).explain({1: 3.0}, candidates) == {}  # nothing liked: nothing to say
