"""Checkpoint hot reload (api/recommendations/reload.py): a checkpoint rewritten while the served
app answers recommendations from several clients is swapped in with no failed request, and
``modelVersion`` says which checkpoint answered."""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from api.app import create_app
from api.serving import plug_serving, watched_checkpoints
from model.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from model.serve.ranker import RETRIEVERS
from sources.settings import Settings
from sources.stores.clients import Stores
from tests.api.conftest import ServeInThread

if TYPE_CHECKING:
    from feast import FeatureStore

RECOMMEND = "query($u: Int!) { recommendations(userId: $u, first: 10) { modelVersion items { rank } } }"
CLIENTS = 4


def test_a_new_checkpoint_is_swapped_in_under_load_with_no_failed_request(
    served_settings: Settings, stores: Stores, feature_store: FeatureStore, serve_in_thread: ServeInThread,
    tmp_path: Path,
) -> None:  # fmt: skip
    shutil.copytree(served_settings.models_dir, tmp_path / "models")
    settings = served_settings.model_copy(
        update={"data_dir": tmp_path, "model_reload_s": 0.2, "recommendation_warm_users": 0}
    )
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(url: str, seed: int) -> None:
        pick = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/graphql", json={"query": RECOMMEND, "variables": {"u": pick.randint(1, 943)}})
                body = response.json() if response.status_code == 200 else {}
                answer = (body.get("data") or {}).get("recommendations")
                if "errors" in body or not answer or len(answer["items"]) != 10:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    versions.append(answer["modelVersion"])

    with serve_in_thread(create_app(settings, stores=stores, configure=plug_serving), lifespan="on") as url:
        threads = [threading.Thread(target=client, args=(url, seed)) for seed in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 60
            while not versions:
                assert time.monotonic() < deadline and not failures, failures[:3]
                time.sleep(0.05)
            old = versions[0]
            path = checkpoint_path(tmp_path / "models" / "time", "two_tower")
            retrained = load_checkpoint(path)
            retrained.created_at = "2099-01-01T00:00:00+00:00"  # a new version, written atomically
            save_checkpoint(retrained, path)
            while not any("2099-01-01" in v for v in versions):
                assert time.monotonic() < deadline, f"no swap within 60 s: {set(versions)}"
                time.sleep(0.05)
            swapped = len(versions)
            while len(versions) < swapped + 2 * CLIENTS:  # a few answers after the swap
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    new = retrained.version + "".join(old.partition("+engagement")[1:])
    assert not failures, failures[:3]
    assert set(versions) == {old, new}, set(versions)
    assert versions[-CLIENTS:] == [new] * CLIENTS


def test_every_retriever_the_ranker_may_choose_is_watched(tmp_path: Path) -> None:
    """A VAE or fusion trained after start can win validation: its checkpoint must be watched too."""
    watched = {path.name for path in watched_checkpoints(tmp_path)}
    assert watched == {f"{kind}.pt" for kind in RETRIEVERS} | {"engagement.pt"}
    assert {"vae.pt", "fusion.pt", "sequential.pt"} <= watched
