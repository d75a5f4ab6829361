"""Checkpoint files: atomic writes, safe loading, and refusal of a stale feature list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    Checkpoint,
    CheckpointError,
    FeatureMismatch,
    check_features,
    from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from model.networks.engagement import EngagementNetConfig, MultimodalEngagementNet
from sources.errors import MarqueeError

FEATURES = ["user_profile__age", "user_profile__city", "user_playback__last5_durations",
            "movie_embedding__title_embedding", "movie_graph__pagerank"]  # fmt: skip


def _checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    config = EngagementNetConfig.from_feature_names(
        FEATURES, sequence_feature=FEATURES[2], embedding_feature=FEATURES[3], graph_features=[FEATURES[4]],
        categorical_features={"user_profile__city": 4},
    )  # fmt: skip
    net = MultimodalEngagementNet(config)
    return Checkpoint("engagement", config.to_dict(), net.state_dict(), "engagement_training_v1", list(FEATURES),
                      {"max_event_ts": 893286638, "interactions": 100_000}, {"name": "time"})  # fmt: skip


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    ckpt = _checkpoint()
    back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "m" / "engagement.pt"), FEATURES)
    assert back.to_dict().keys() == ckpt.to_dict().keys()
    assert (back.config, back.features, back.data_snapshot) == (ckpt.config, ckpt.features, ckpt.data_snapshot)
    net = from_checkpoint(back)
    for name, tensor in ckpt.state.items():
        assert torch.equal(net.state_dict()[name], tensor)
        # the model holds the loaded checkpoint's tensors, not copies of them
        assert net.state_dict()[name].data_ptr() == back.state[name].data_ptr()


def test_a_checkpoint_older_than_the_engine_field_loads(tmp_path: Path) -> None:
    old = _checkpoint().to_dict()
    del old["feature_engine"]
    torch.save(old, tmp_path / "engagement.pt")
    assert load_checkpoint(tmp_path / "engagement.pt", FEATURES).feature_engine == ""


@pytest.mark.parametrize(
    ("now", "says"),
    [
        ([*FEATURES, "user_graph__followers"], "new: user_graph__followers"),
        (FEATURES[:-1], "gone: movie_graph__pagerank"),
        ([*FEATURES[1:], "movie_graph__degree"], "new: movie_graph__degree; gone: user_profile__age"),
    ],
)
def test_mismatched_features_are_refused_clearly(tmp_path: Path, now: list[str], says: str) -> None:
    path = save_checkpoint(_checkpoint(), tmp_path / "engagement.pt")
    with pytest.raises(FeatureMismatch) as info:
        load_checkpoint(path, now)
    message = str(info.value)
    assert isinstance(info.value, MarqueeError)
    assert says in message and "engagement_training_v1" in message and "marquee train" in message
    check_features(_checkpoint(), FEATURES[::-1])  # the same features (in any order) pass


def test_missing_corrupt_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*run `marquee train`"):
        load_checkpoint(tmp_path / "absent.pt")
    path = save_checkpoint(_checkpoint(), tmp_path / "engagement.pt")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    torch.save({"format": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(_checkpoint(), tmp_path / "engagement.pt")
    before = path.read_bytes()
    bad = _checkpoint()
    bad.extras = {"not serializable": lambda: None}
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises, nothing half-written stays
        save_checkpoint(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["engagement.pt"]
