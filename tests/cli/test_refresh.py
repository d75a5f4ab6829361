"""``marquee refresh`` (cli/refresh.py): a second run in a row does nothing, a run never overlaps
another (the advisory lock), and a title whose addMovie stopped after PostgreSQL is finished."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import typer
from sqlalchemy import text

from api.queries import catalog
from cli.refresh import parse_every, refresh, refresh_lock
from sources.datasets import embeddings
from sources.settings import Settings
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore


@pytest.fixture
def no_retrain(served_settings: Settings) -> Settings:
    """The served checkpoints, with a policy that never asks for training (that is not the point here)."""
    return served_settings.model_copy(update={"refresh_min_new_events": 10**9, "refresh_max_age_h": 1e6})


def test_a_second_refresh_in_a_row_does_nothing(
    no_retrain: Settings, stores: Stores, feature_store: FeatureStore
) -> None:
    first = refresh(no_retrain, stores)
    assert first.skipped is None and first.retrained is None
    second = refresh(no_retrain, stores)
    assert second.skipped is None and not second.did_something, second
    assert set(second.seconds) == {"additions", "export", "materialize", "retrain"}
    assert (no_retrain.data_dir / "refresh" / "last.json").is_file()


def test_a_refresh_never_overlaps_another(no_retrain: Settings, stores: Stores, feature_store: FeatureStore) -> None:
    with refresh_lock(stores) as held:
        assert held
        report = refresh(no_retrain, stores)
    assert report.skipped == "another refresh holds the lock" and not report.did_something
    with refresh_lock(stores) as held:  # released by both
        assert held


def test_a_refresh_finishes_an_addition_that_stopped_after_postgres(
    no_retrain: Settings, stores: Stores, feature_store: FeatureStore
) -> None:
    movie = catalog.NewMovie("Refresh Test Title", 1998, ("Drama",), (("m.0i17ref", "director"),))
    vector = embeddings.encode([movie.embedding_text()])[0]
    added = catalog.add_movie(stores.pg, movie=movie, embedding=vector, client_id="refresh-test-addition")
    try:
        assert added.status == "pending"  # as if the process died before the graph write
        assert stores.graph.read("MATCH (m:Movie {id: $id}) RETURN m.id", {"id": added.movie_id}) == []
        # Only the step under test: exporting and materializing the test title would change
        # the session's shared feature tables and online store that later tests compare.
        report = refresh(no_retrain, stores, steps=("additions",))
        assert report.additions_finished == 1
        credits = "MATCH (p:Person)-[:DIRECTED]->(m:Movie {id: $id}) RETURN p.id AS person"
        assert stores.graph.read(credits, {"id": added.movie_id}) == [{"person": "m.0i17ref"}]
        assert catalog.pending(stores.pg) == []
        assert refresh(no_retrain, stores, steps=("additions",)).additions_finished == 0
    finally:
        with stores.pg.begin() as conn:
            conn.execute(text("DELETE FROM movies WHERE id = :i"), {"i": added.movie_id})
        stores.graph.write("MATCH (m:Movie {id: $id}) DETACH DELETE m", {"id": added.movie_id})
        stores.graph.write("MATCH (p:Person {id: 'm.0i17ref'}) DETACH DELETE p")


def test_every_takes_an_interval_with_a_unit() -> None:
    assert parse_every("15m") == 900.0 and parse_every("1h") == 3600.0 and parse_every(None) is None
    for bad in ("15", "0m", "soon"):
        with pytest.raises(typer.BadParameter):
            parse_every(bad)
