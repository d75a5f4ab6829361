"""The trend prior in the served app (api/recommendations/ranked.py, api/serving.py): a checkpoint
that carries one gets the recent counts of its window at start, reports them under ``/readyz``,
and answers recommendations shaped by them; a checkpoint without one is served as before."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.testclient import TestClient

from api.app import create_app
from api.queries.reads import recent_movie_counts
from api.serving import plug_serving
from model.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from model.serve.trend import TrendPrior
from sources.settings import Settings
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

RECOMMEND = "{ recommendations(userId: 7, first: 10) { degraded items { movie { movieId } } } }"


def _top(client: TestClient) -> list[int]:
    body = client.post("/graphql", json={"query": RECOMMEND}).json()
    assert "errors" not in body and body["data"]["recommendations"]["degraded"] is False, body
    return [i["movie"]["movieId"] for i in body["data"]["recommendations"]["items"]]


def test_a_checkpoint_with_a_trend_prior_is_served_with_the_recent_counts(
    served_settings: Settings, stores: Stores, feature_store: FeatureStore, tmp_path: Path
) -> None:
    shutil.copytree(served_settings.models_dir, tmp_path / "models")
    settings = served_settings.model_copy(
        update={"data_dir": tmp_path, "recommendation_warm_users": 0, "recommendation_cache_s": 0.0,
                "recommendation_lists_s": 0.0}
    )  # fmt: skip
    with TestClient(create_app(settings, stores=stores, configure=plug_serving)) as client:
        before = _top(client)
        assert client.get("/readyz").json()["serving"]["trend_prior"] == {"ok": True, "error": None}
    folder = tmp_path / "models" / "time"
    for kind, change in (("two_tower", {"trend_prior": TrendPrior(3.0, 3.0, 4.0).to_dict()}),
                         ("engagement", {"rerank_trend": True})):  # fmt: skip
        ckpt = load_checkpoint(checkpoint_path(folder, kind))
        ckpt.metrics.update(change)
        save_checkpoint(ckpt, checkpoint_path(folder, kind))
    with TestClient(create_app(settings, stores=stores, configure=plug_serving)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        ranker = services.ranked.ranker
        assert ranker.prior == TrendPrior(3.0, 3.0, 4.0) and ranker.beta == 1.0  # the weight was chosen with it
        recent = recent_movie_counts(pg=stores.pg, days=3.0)
        assert ranker.recent_counts == recent and recent  # what the prior reads, as the store has it
        after = _top(client)
        assert len(after) == 10 and after != before
        assert client.get("/readyz").json()["serving"]["trend_prior"]["ok"] is True
