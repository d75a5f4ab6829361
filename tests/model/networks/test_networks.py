"""Shapes, ranges, checkpoint round-trips and training sanity for model.networks.all."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F

from model.device import autocast_context, loader_kwargs, pick_device
from model.networks.baselines import BPRMF, MostPopular, bpr_loss
from model.networks.engagement import EngagementNetConfig, MultimodalEngagementNet
from model.networks.two_tower import TwoTowerConfig, TwoTowerRetriever, sampled_softmax_loss

B = 6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_batch(config: EngagementNetConfig, b: int = B) -> dict[str, torch.Tensor]:
    cards = list(config.categorical_features.values())
    return {
        "numeric": torch.randn(b, len(config.numeric_features)) * 10 + 30,
        "categorical": torch.stack([torch.randint(0, c, (b,)) for c in cards], dim=1)
        if cards
        else torch.zeros(b, 0, dtype=torch.long),
        "sequence": torch.rand(b, config.sequence_length) * 7200,  # seconds
        "embedding": torch.randn(b, config.embedding_dim),
        "graph": torch.randint(0, 50, (b, len(config.graph_features))).float(),
    }


# --------------------------------------------------------------------------- engagement net


def test_prototype_defaults_give_fusion_width_144() -> None:
    config = EngagementNetConfig()
    net = MultimodalEngagementNet(config)
    assert config.fusion_in == 32 + 32 + 64 + 16 == 144
    assert net.head[0].in_features == 144
    assert net.fusion_input(make_batch(config)).shape == (B, 144)


def test_branch_shapes() -> None:
    config = EngagementNetConfig()
    out = MultimodalEngagementNet(config).branch_outputs(make_batch(config))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "tabular": (B, 32),
        "sequence": (B, 32),
        "embedding": (B, 64),
        "graph": (B, 16),
    }


def test_forward_is_a_probability_per_pair() -> None:
    config = EngagementNetConfig()
    net = MultimodalEngagementNet(config).eval()
    batch = make_batch(config)
    batch["sequence"][0] = 1e6  # absurd durations must not blow up (log1p inside)
    p = net(batch)
    assert p.shape == (B,)
    assert torch.isfinite(p).all() and (p > 0).all() and (p < 1).all()
    assert torch.allclose(p, torch.sigmoid(net.logits(batch)))


def test_serving_runs_the_lstm_once_per_run_of_equal_sequences() -> None:
    config = EngagementNetConfig()
    net = MultimodalEngagementNet(config).eval()
    users = torch.rand(3, config.sequence_length) * 7200
    # as serving lays rows out: each user's sequence on its candidates' rows, one after the other
    rows = torch.cat([users[0].expand(4, -1), users[1].expand(1, -1), users[2].expand(5, -1), users[0].expand(2, -1)])
    seen: list[int] = []
    net.sequence_branch.lstm.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    deduped = net.sequence_branch(rows)
    assert seen == [4]  # four runs of equal rows, not 12 rows
    assert torch.allclose(deduped, net.sequence_branch._last_hidden(rows), atol=1e-6)
    net.train()
    seen.clear()
    net.sequence_branch(rows)
    assert seen == [12]  # training keeps every row (and its gradient path) as it is


def test_schema_sizes_the_network() -> None:
    config = EngagementNetConfig.from_feature_names(
        ["age", "city", "genre_affinity", "recent_watch_seconds", "title_embedding", "degree"],
        sequence_feature="recent_watch_seconds",
        embedding_feature="title_embedding",
        graph_features=["degree", "pagerank"],
        categorical_features={"city": 7},
        sequence_length=10,
    )
    assert config.numeric_features == ["age", "genre_affinity"]
    net = MultimodalEngagementNet(config).eval()
    batch = make_batch(config)
    assert net.tabular_branch.mlp[0].in_features == 2 + 8  # numerics + one city embedding
    assert net(batch).shape == (B,)
    # the categorical column is really used
    other = dict(batch, categorical=(batch["categorical"] + 1) % 7)
    assert not torch.allclose(net(batch), net(other))


def test_config_rejects_bad_schemas() -> None:
    with pytest.raises(ValueError):
        EngagementNetConfig(numeric_features=["age", "age"])
    with pytest.raises(ValueError):
        EngagementNetConfig(graph_features=[])
    with pytest.raises(ValueError):
        EngagementNetConfig(categorical_features={"city": 0})
    with pytest.raises(ValueError):
        EngagementNetConfig.from_dict({**EngagementNetConfig().to_dict(), "typo": 1})


def test_checkpoint_round_trip_rebuilds_identical_net() -> None:
    config = EngagementNetConfig(categorical_features={"tier": 3}, numeric_features=["age"])
    net = MultimodalEngagementNet(config)
    batch = make_batch(config)
    net.fit_normalization(batch)  # the stats must travel in the state dict
    ckpt = {"config": json.loads(json.dumps(config.to_dict())), "state": net.state_dict()}

    rebuilt = MultimodalEngagementNet(EngagementNetConfig.from_dict(ckpt["config"]))
    rebuilt.load_state_dict(ckpt["state"])  # strict: same parameter names and shapes
    assert rebuilt.config == config
    assert torch.equal(rebuilt.tabular_branch.norm.mean, net.tabular_branch.norm.mean)
    assert torch.equal(rebuilt.eval()(batch), net.eval()(batch))


# --------------------------------------------------------------------------- two-tower


def make_retriever() -> TwoTowerRetriever:
    config = TwoTowerConfig(n_users=5, n_movies=7, movie_content_dim=12, n_genres=3, out_dim=8)
    model = TwoTowerRetriever(config).eval()
    model.set_catalog(torch.randn(7, 12), (torch.rand(7, 3) > 0.5).float())
    return model


def test_two_tower_vectors_are_unit_norm_and_scores_agree() -> None:
    model = make_retriever()
    users, movies = torch.tensor([0, 3, 4]), torch.tensor([6, 0, 2])
    u, m = model.user_vectors(users), model.movie_vectors(movies)
    assert u.shape == m.shape == (3, 8)
    assert torch.allclose(u.norm(dim=-1), torch.ones(3))
    assert torch.allclose(m.norm(dim=-1), torch.ones(3))
    full = model.score_all(users)
    assert full.shape == (3, 7)
    assert torch.allclose(full[torch.arange(3), movies], model.score(u, m), atol=1e-5)
    # explicit content overrides the catalogue
    content, genres = model.catalog_content[movies], model.catalog_genres[movies]
    assert torch.allclose(model.movie_vectors(movies, content, genres), m)


def test_two_tower_needs_a_catalogue() -> None:
    model = TwoTowerRetriever(TwoTowerConfig(n_users=2, n_movies=3, movie_content_dim=4))
    with pytest.raises(ValueError):
        model.movie_vectors(torch.tensor([0]))
    with pytest.raises(ValueError):
        model.set_catalog(torch.randn(2, 4))  # wrong number of movies


def test_sampled_softmax_matches_definition() -> None:
    u = F.normalize(torch.randn(4, 8), dim=-1)
    pos, neg = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    pos_q, neg_q = torch.rand(4).log(), torch.rand(3).log()
    logits = u @ torch.cat([pos, neg]).T / 0.1 - torch.cat([pos_q, neg_q])
    want = F.cross_entropy(logits, torch.arange(4))
    got = sampled_softmax_loss(u, pos, neg, 0.1, pos_log_q=pos_q, neg_log_q=neg_q)
    assert torch.allclose(got, want)


def test_sampled_softmax_masks_duplicate_positives() -> None:
    # two rows share one movie: unmasked, each row's twin is a "negative" as good as its
    # positive -> loss log 2; masked, only the row's own positive is left -> loss 0
    v = F.normalize(torch.randn(1, 8), dim=-1).expand(2, 8)
    assert sampled_softmax_loss(v, v).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert sampled_softmax_loss(v, v, pos_ids=torch.tensor([5, 5])).item() == pytest.approx(0.0)


# --------------------------------------------------------------------------- baselines


def test_most_popular_scores_counts() -> None:
    model = MostPopular(n_items=4).fit(torch.tensor([2, 2, 2, 0, 3, 3]))
    scores = model.score_all(torch.tensor([0, 1]))
    assert scores.shape == (2, 4)
    assert scores[1].tolist() == [1.0, 0.0, 3.0, 2.0]


def test_bpr_loss_decreases_and_ranks_positives_first() -> None:
    n_users, n_items = 8, 10
    liked = torch.stack([torch.arange(n_users) % n_items, (torch.arange(n_users) + 1) % n_items], 1)
    model = BPRMF(n_users, n_items, dim=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    users = torch.arange(n_users).repeat_interleave(2)
    pos = liked.flatten()
    losses = []
    for _ in range(60):
        neg = torch.randint(0, n_items, pos.shape)
        loss = bpr_loss(model(users, pos), model(users, neg))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.693, abs=0.05)  # log 2: random scores at the start
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    scores = model.score_all(torch.arange(n_users))
    assert scores.shape == (n_users, n_items)
    top2 = scores.topk(2, dim=1).indices.sort(dim=1).values
    assert torch.equal(top2, liked.sort(dim=1).values)


# --------------------------------------------------------------------------- device


def test_pick_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError):
        pick_device("cuda")
    with pytest.raises(ValueError):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("AUTO") == torch.device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda:1")


def test_cpu_autocast_is_a_no_op() -> None:
    cpu = torch.device("cpu")
    assert isinstance(autocast_context(cpu), contextlib.nullcontext)
    assert loader_kwargs(cpu) == {"pin_memory": False}
    assert loader_kwargs(torch.device("cuda")) == {"pin_memory": True}
    net = MultimodalEngagementNet(EngagementNetConfig()).eval()
    with autocast_context(cpu):
        assert net(make_batch(net.config)).dtype == torch.float32
