"""Session fixtures: real embedded stores under a temporary data dir, ML-100K loaded once.

Nothing here mocks a store: PostgreSQL+pgvector, the Mongo wire server and FalkorDB run
for real (see sources/stores/embedded.py) and are stopped when the session ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sources import migrate as migrations
from sources.datasets import movielens as datasets
from sources.ingest import IngestReport, ingest
from sources.stores.embedded import EmbeddedStores

if TYPE_CHECKING:
    from feast import FeatureStore
from sources.settings import Settings
from sources.stores.clients import Stores


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh data dir per session (per worker process); MARQUEE_TEST_DATA_DIR reuses kept ones
    (their servers keep running and a loaded dataset is not loaded again), which makes local
    re-runs fast."""
    kept = os.environ.get("MARQUEE_TEST_DATA_DIR")
    if kept:  # one folder per worker process (pytest-xdist), each with its own servers
        yield (Path(kept) / os.environ.get("PYTEST_XDIST_WORKER", "main")).resolve()
        return
    path = tmp_path_factory.mktemp("marquee")
    yield path
    EmbeddedStores(path).stop_all()


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    for name in ("MARQUEE_PG_DSN", "MARQUEE_MONGO_URI", "MARQUEE_GRAPH_URI"):
        os.environ.pop(name, None)
    os.environ["MARQUEE_DATA_DIR"] = str(data_dir)  # for subprocesses (the CLI, alembic)
    # Mutations answer after their group's push here, so tests read their effects at once; the
    # default ("durable": answer once logged) is what test_crash.py and test_write_pusher.py drive.
    return Settings(data_dir=data_dir, write_ack="pushed")


@pytest.fixture(scope="session")
def stores(settings: Settings) -> Iterator[Stores]:
    with Stores.open(settings) as opened:
        migrations.upgrade(opened.pg)
        yield opened


@pytest.fixture(scope="session")
def ml100k() -> datasets.Dataset:
    return datasets.movielens_100k()


@pytest.fixture(scope="session")
def loaded(stores: Stores, ml100k: datasets.Dataset, settings: Settings) -> IngestReport:
    """ML-100K in all three stores (loaded once per test session)."""
    return ingest(stores, ml100k, seed=settings.seed, quiet=True)


@pytest.fixture(scope="session")
def feature_store(stores: Stores, loaded: IngestReport) -> FeatureStore:
    """Features exported, the Feast repo applied and materialized (each step idempotent)."""
    from sources.export.run import export
    from sources.feature_store.env import open_feature_store
    from sources.feature_store.materialize import apply_repo, materialize

    export(stores, quiet=True)
    opened = open_feature_store(stores.endpoints)
    apply_repo(opened)
    materialize(opened)
    return opened


@pytest.fixture(scope="session")
def served_settings(tmp_path_factory: pytest.TempPathFactory, settings: Settings, stores: Stores,
                    feature_store: FeatureStore) -> Settings:  # fmt: skip
    """Settings whose models folder holds checkpoints trained on the feature service served."""
    from model.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
    from model.data.point_in_time import label_events, training_frame
    from model.train.options import TrainOptions
    from model.train.pipeline import train_models
    from sources.feature_store.names import TRAINING_SERVICE

    data_dir = tmp_path_factory.mktemp("served")
    labels = label_events(stores).sample(4000, random_state=0).sort_values("event_timestamp", ignore_index=True)
    frame = training_frame(feature_store, labels, TRAINING_SERVICE)
    options = TrainOptions(epochs=1, quiet=True, device="cpu", max_batches=5)
    folder = data_dir / "models"
    train_models(stores, folder, kinds=["engagement"], options=options,
                 engagement_input=(frame, TRAINING_SERVICE))  # fmt: skip
    # Enough batches for the content path to place a new title in some user's top 100
    # (tests/api/recommendations/test_new_titles.py).
    two_tower = TrainOptions(epochs=1, quiet=True, device="cpu", max_batches=60)
    train_models(stores, folder, kinds=["two_tower"], options=two_tower)
    # The re-rank weight is chosen by ``marquee evaluate``; any weight > 0 makes serving read features.
    path = checkpoint_path(folder / "time", "engagement")
    engagement = load_checkpoint(path)
    engagement.metrics["rerank_beta"] = 1.0
    save_checkpoint(engagement, path)
    return settings.model_copy(update={"data_dir": Path(data_dir)})
