"""The graph's vocabulary, written once: who made a movie, and how the Cypher names it.

``(:Person)-[ROLE]->(:Movie)`` edges come from the Freebase film relations of the ML-100K
knowledge graph (``FREEBASE_CREDITS``); ``CREDITS`` is their alternation for a Cypher
pattern (``-[:ACTED_IN|DIRECTED|WROTE|PRODUCED]-``), ``ROLE_NAMES`` the word an explanation
uses for each.
"""

from __future__ import annotations

ACTED_IN, DIRECTED, WROTE, PRODUCED = "ACTED_IN", "DIRECTED", "WROTE", "PRODUCED"
#: every credit relationship type, in a fixed order
CREDIT_ROLES = (ACTED_IN, DIRECTED, WROTE, PRODUCED)
#: Cypher's alternation of ``CREDIT_ROLES``
CREDITS = "|".join(CREDIT_ROLES)
#: a role as a word in an explanation ("shares director … with …")
ROLE_NAMES = {ACTED_IN: "actor", DIRECTED: "director", WROTE: "writer", PRODUCED: "producer"}
#: Freebase relation (film → person) → the edge it becomes
FREEBASE_CREDITS = {
    "film.film.actor": ACTED_IN,
    "film.film.directed_by": DIRECTED,
    "film.film.written_by": WROTE,
    "film.film.produced_by": PRODUCED,
}
