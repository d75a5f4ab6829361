"""Graph neighbours of a movie, with the relationship path that links each one.

Depth 1: movies that share a person (in the chosen roles) or a genre with the movie,
ranked by how many they share. Depth 2: the same step taken again from the best
``DEPTH2_FANOUT`` depth-1 neighbours, reaching movies the first step did not. Both steps
are one portable Cypher statement each (Neo4j 5 and FalkorDB: no APOC), aggregated in the
database so only ``first`` rows per source come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from sources.stores.graph import GraphStore
from sources.vocabulary import ACTED_IN, CREDITS, DIRECTED, PRODUCED, WROTE

DEPTH2_FANOUT = 20


class Relation(Enum):
    PERSON = "PERSON"  # any credited person
    ACTOR = "ACTOR"
    DIRECTOR = "DIRECTOR"
    WRITER = "WRITER"
    PRODUCER = "PRODUCER"
    GENRE = "GENRE"


_PERSON_TYPES = {
    Relation.PERSON: CREDITS,
    Relation.ACTOR: ACTED_IN,
    Relation.DIRECTOR: DIRECTED,
    Relation.WRITER: WROTE,
    Relation.PRODUCER: PRODUCED,
}


@dataclass(frozen=True)
class Step:
    """One node on a path; ``relationship`` is the edge type that leads to it from the previous node."""

    kind: str  # "Movie", "Person" or "Genre"
    key: str  # movie id, Freebase id or genre name
    relationship: str | None
    title: str | None = None  # movies only


@dataclass(frozen=True)
class NeighbourRow:
    movie_id: int
    depth: int
    shared: int  # people/genres the last step shares
    path: tuple[Step, ...]

    def describe(self) -> str:
        parts: list[str] = []
        for step in self.path:
            label = step.title if step.title else f"{step.kind.lower()} {step.key}"
            parts.append(label if step.relationship is None else f"-[{step.relationship}]- {label}")
        return " ".join(parts)


def _step_query(relation: Relation) -> str:
    if relation is Relation.GENRE:
        pattern = "(m:Movie)-[r1:HAS_GENRE]->(x:Genre)<-[r2:HAS_GENRE]-(n:Movie)"
        key = "x.name"
    else:
        types = _PERSON_TYPES[relation]
        pattern = f"(m:Movie)<-[r1:{types}]-(x:Person)-[r2:{types}]->(n:Movie)"
        key = "x.id"
    return (
        f"MATCH {pattern} WHERE m.id IN $ids AND n.id <> m.id AND NOT n.id IN $exclude "
        f"WITH m.id AS src, n.id AS dst, n.title AS title, count(x) AS shared, "
        f"collect([{key}, type(r1), type(r2)])[0] AS via "
        "ORDER BY src, shared DESC, dst "
        "WITH src, collect([dst, title, shared, via])[0..$k] AS top RETURN src, top"
    )


def _step(graph: GraphStore, relation: Relation, ids: list[int], exclude: list[int], k: int) -> dict[int, list[Any]]:
    rows = graph.read(_step_query(relation), {"ids": ids, "exclude": exclude, "k": k})
    return {int(row["src"]): list(row["top"]) for row in rows}


def _link(relation: Relation, via: list[Any], dst: int, title: str | None) -> tuple[Step, Step]:
    kind = "Genre" if relation is Relation.GENRE else "Person"
    key, rel_in, rel_out = str(via[0]), str(via[1]), str(via[2])
    return Step(kind, key, rel_in), Step("Movie", str(dst), rel_out, title)


def neighbours(
    *, graph: GraphStore, movie_id: int, title: str, relation: Relation, depth: int, first: int
) -> list[NeighbourRow]:
    """Up to ``first`` neighbours of ``movie_id``: depth-1 ones first (most shared first), then depth 2."""
    origin = Step("Movie", str(movie_id), None, title)
    # Fetch enough depth-1 rows to know them all whenever depth 2 could be reached.
    k1 = first if depth == 1 else max(first, DEPTH2_FANOUT)
    hop1 = _step(graph, relation, [movie_id], [], k1).get(movie_id, [])
    out = [
        NeighbourRow(int(dst), 1, int(shared), (origin, *_link(relation, via, int(dst), dst_title)))
        for dst, dst_title, shared, via in hop1
    ]
    if depth == 1 or len(out) >= first:
        return out[:first]
    mids = {row.movie_id: row for row in out[:DEPTH2_FANOUT]}
    hop2 = _step(graph, relation, list(mids), [movie_id, *(row.movie_id for row in out)], first)
    reached: dict[int, NeighbourRow] = {}
    for mid, via_row in mids.items():  # best intermediate first, so each movie keeps its strongest path
        for dst, dst_title, shared, via in hop2.get(mid, []):
            if int(dst) not in reached:
                path = (*via_row.path, *_link(relation, via, int(dst), dst_title))
                reached[int(dst)] = NeighbourRow(int(dst), 2, int(shared), path)
    ranked = sorted(reached.values(), key=lambda r: (-r.shared, r.movie_id))
    return (out + ranked)[:first]
