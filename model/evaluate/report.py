"""`marquee evaluate`: every model on one held-out test part, in one table (markdown, JSON, PNG).

Protocols (``model.data.interactions``): ``time`` (the last 10% of events in time are the test
period), ``recbole`` (per-user chronological 80/10/10, RecBole's), ``random`` (80/20, for RMSE
beside Surprise's). Models come from ``<models_dir>/<protocol>/*.pt``; a missing or stale one
(other data, other split) is trained first.

Ranking is full ranking: every movie is scored for every test user, the movies the user met
in train and valid are excluded, the test movies are the relevant ones (``model.evaluate.metrics``).
The served ranking is the best retriever's top ``candidates`` (``model.serve.ranker.best_retriever``:
the retriever or fusion that recorded the best valid NDCG@10) re-ranked by
``retriever score + beta * engagement logit``; beta is picked on the valid part (0 allowed,
so the re-ranker is only used where it helps) and the choice is reported.

With ``peers`` (a ``scripts/recbole_peer.py --json`` file, recbole protocol only) RecBole's
models join the table, scored by the same code from their top-10 lists, and a paired bootstrap
over users gives the 95% interval of the NDCG@10 difference between the served ranking and
the best peer (``model.evaluate.peers``).

Rating error (RMSE, MAE) is reported for the engagement net (its predicted rating) and for
Bayesian PMF (``model.networks.bpmf``, a rating predictor only: it ranks nothing and is not
served), on the test part's rows and its cold slices.

Cold-start slices: users with fewer than 5 training interactions (their test rows), and test
movies with fewer than 5 (only those movies count as relevant in that slice).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from model.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from model.data.engagement_frame import FrameEncoder, check_frame_size, feature_columns, load_side_info, pair_frame
from model.data.interactions import (
    SPLITS,
    Interactions,
    Split,
    from_stores,
    make_split,
    sample_test_users,
    window_start,
)
from model.evaluate.cost import request_cost
from model.evaluate.metrics import mae, rmse
from model.evaluate.peers import check_protocol, load_peers, paired_bootstrap, peer_scores, per_user_ndcg, self_reported
from model.evaluate.prior import choose_prior, prior_scores
from model.evaluate.ranking import (
    EaseScorer,
    MatrixScorer,
    Scorer,
    SequentialScorer,
    TwoTowerScorer,
    VaeScorer,
    full_ranking,
    masks,
)
from model.evaluate.scope import Scope
from model.networks.bpmf import BayesianPMF
from model.networks.engagement import MultimodalEngagementNet, predict_ratings, rating_to_logit
from model.networks.fusion import fuse
from model.serve.ranker import best_retriever, fusion_parts
from model.train.engagement import split_frame
from model.train.loop import OnCpu
from model.train.options import MODELS, TrainOptions
from model.train.pipeline import engagement_frame, frame_engine, snapshot, train_models
from sources.feature_store.names import TRAINING_SERVICE
from sources.progress import console
from sources.stores.clients import Stores

BETAS = (0.0, 0.01, 0.03, 0.1, 0.25, 0.5, 1.0, 2.0)  # EASE scores are ~10x smaller than two-tower logits
RANK_COLUMNS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "coverage")
COUNTS = ("users", "rows")  # metrics that are counts (carried as floats; printed as integers)
PAIR_CHUNK = 200_000  # candidate pairs whose point-in-time frame is built at once (EngagementScorer)


@dataclass
class Report:
    protocol: str
    split: dict[str, Any]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> metrics
    cold: dict[str, dict[str, Any]] = field(default_factory=dict)  # "model / slice" -> metrics
    notes: list[str] = field(default_factory=list)
    complete: bool = True  # every model evaluated (False: a --models subset)
    models: list[str] = field(default_factory=list)  # the models asked for (names the files of a subset)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # paired bootstraps (served vs best peer)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)  # retriever -> ms per request (cost.py)
    served: str = ""  # the served retriever's kind

    def to_dict(self) -> dict[str, Any]:
        def counted(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {name: {k: _count(v) if k in COUNTS else v for k, v in row.items()} for name, row in table.items()}

        return {"protocol": self.protocol, "split": self.split, "models": counted(self.rows),
                "cold_start": counted(self.cold), "comparisons": self.comparisons,
                "cost_per_request": self.costs, "served": self.served, "notes": self.notes}  # fmt: skip

    def markdown(self) -> str:
        cols = [*RANK_COLUMNS, "rmse", "mae", "epochs", "s/epoch", "samples/s"]
        lines = [f"# Marquee evaluation ({self.protocol} protocol)", "",
                 f"split: {json.dumps(self.split)}", "", "| model | " + " | ".join(cols) + " |",
                 "| --- " * (len(cols) + 1) + "|"]  # fmt: skip
        for name, row in self.rows.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
        lines += ["", "## Cold start (< 5 training interactions)", "",
                  "| model / slice | users | " + " | ".join([*RANK_COLUMNS, "rmse", "rows"]) + " |",
                  "| --- " * (len(RANK_COLUMNS) + 4) + "|"]  # fmt: skip
        for name, row in self.cold.items():
            cells = [
                _count(row.get(c)) if c in COUNTS else row.get(c) for c in ("users", *RANK_COLUMNS, "rmse", "rows")
            ]
            lines.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
        if self.comparisons:
            lines += ["", "## Paired bootstrap over users (NDCG@10 difference, 95% interval)", "",
                      "| model | against | difference | 95% interval | users |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for c in self.comparisons:
                interval, users = f"[{c['low']:+.4f}, {c['high']:+.4f}]", _count(c["users"])
                lines.append(f"| {c['model']} | {c['against']} | {c['diff']:+.4f} | {interval} | {users} |")
        if self.costs:
            cheapest = min(c["median_ms"] for c in self.costs.values())
            lines += ["", "## Cost per request (retrieval of one user, top 100, no features; this machine, now)", "",
                      "| retriever | median ms | p90 ms | median vs the cheapest | users |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for kind, c in self.costs.items():
                name = f"{kind} (served)" if kind == self.served else kind
                ratio = c["median_ms"] / cheapest if cheapest > 0 else float("nan")
                lines.append(f"| {name} | {c['median_ms']:.2f} | {c['p90_ms']:.2f} | {ratio:.1f}x | {c['users']:.0f} |")
        lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _count(value: Any) -> Any:
    """A whole float (a count the metrics carry as 98.0) becomes the integer it is (98)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _current(checkpoint: Checkpoint, data: Interactions, split: Split) -> bool:
    return checkpoint.data_snapshot == snapshot(data) and checkpoint.split == split.describe()


def _load_or_train(
    stores: Stores, models_dir: Path, kinds: list[str], data: Interactions, split: Split, options: TrainOptions,
    feature_source: str, retrain: bool = False, explicit: set[str] = frozenset(),  # type: ignore[assignment]
    engagement_input: tuple[pd.DataFrame, str] | None = None,
) -> dict[str, Checkpoint]:  # fmt: skip
    loaded: dict[str, Checkpoint] = {}
    missing = list(kinds) if retrain else []
    engagement_features = feature_columns(engagement_input[0]) if engagement_input is not None else None
    for kind in [] if retrain else kinds:
        expected = engagement_features if kind == "engagement" else None
        path = checkpoint_path(models_dir / split.name, kind)
        if not path.is_file():  # not trained yet: trained below, nothing to warn about
            missing.append(kind)
            continue
        try:
            ckpt = load_checkpoint(path, expected)
        except CheckpointError as exc:  # unreadable or trained on other features: retrain
            console.print(f"{kind}: {exc}")
            missing.append(kind)
            continue
        engine = frame_engine(stores, engagement_input[1]) if kind == "engagement" and engagement_input else ""
        if ckpt.feature_engine and engine and ckpt.feature_engine != engine:  # same features, other engine
            console.print(f"{kind}: trained on {ckpt.feature_engine} frames, the frame is now {engine}'s")
            missing.append(kind)
        elif kind == "fusion" and not _fusion_fits(ckpt, loaded, missing):
            missing.append(kind)  # a fused retriever is (re)trained now: new weights
        elif _current(ckpt, data, split):
            loaded[kind] = ckpt
        else:
            missing.append(kind)
    if missing:
        console.print(f"training {', '.join(missing)} on the {split.name} split (no current checkpoint)")
        trained = train_models(stores, models_dir, kinds=missing, split_name=split.name, options=options,
                               feature_source=feature_source, data=data, explicit=explicit,
                               engagement_input=engagement_input)  # fmt: skip
        loaded.update({k: v[1] for k, v in trained.items()})
    return loaded


def _fusion_fits(fusion: Checkpoint, loaded: dict[str, Checkpoint], missing: list[str]) -> bool:
    """Whether the fusion's weights were chosen for the retriever checkpoints loaded here."""
    try:
        parts = fusion_parts(fusion, loaded)
    except CheckpointError:
        return False
    return not set(parts) & set(missing)


def _training_figures(ckpt: Checkpoint) -> dict[str, Any]:
    t = ckpt.metrics.get("training", {})
    return {"epochs": t.get("epochs_run"), "s/epoch": t.get("seconds_per_epoch"), "samples/s": t.get("samples_per_s")}


def _rank_all(name: str, scores: Tensor | Scorer, scope: Scope, report: Report, extra: dict[str, Any]) -> None:
    """``scores`` (one row per view user, or a scorer asked by view row) ranked on the test
    part, all users and the cold slices. A scorer is ranked a block of users at a time."""
    split = scope.view
    seen = [split.train, split.valid]
    scorer = MatrixScorer(scores) if isinstance(scores, Tensor) else scores
    report.rows[name] = {**full_ranking(scorer, split.test, seen), **extra}
    if len(scope.cold_users):
        report.cold[f"{name} / cold users"] = full_ranking(scorer, split.test, seen, users=scope.cold_users)
    cold_item_rows = np.isin(split.test.items, scope.cold_movies)
    if cold_item_rows.any():
        report.cold[f"{name} / cold movies"] = full_ranking(scorer, split.test.take(cold_item_rows), seen)


class EngagementScorer:
    """Engagement logits for candidate pairs as of each user's last known event (a user with
    none: as of ``end_ts``, the history's last event when None)."""

    def __init__(self, net: MultimodalEngagementNet, encoder: FrameEncoder, stores: Stores, source: str,
                 end_ts: int | None = None) -> None:  # fmt: skip
        self.net, self.encoder, self.stores, self.source, self.end_ts = net, encoder, stores, source, end_ts
        self._side = load_side_info(stores) if source != TRAINING_SERVICE else None

    def logits(self, history: Interactions, users: np.ndarray, movies: np.ndarray) -> Tensor:
        """``users``/``movies`` dense ids of candidate pairs -> ``(pairs,)`` logits."""
        last = np.zeros(history.n_users, dtype=np.int64)
        np.maximum.at(last, history.users, history.ts)
        last = np.where(last > 0, last, self.end_ts or history.max_ts)  # no history: the store as of its end
        at_ts = last[users] + 1
        ext_u, ext_m = history.user_ids[users], history.movie_ids[movies]
        if self._side is not None:
            frame = pair_frame(self._side, history, ext_u, ext_m, at_ts)
            return rating_to_logit(predict_ratings(self.net, self.encoder.encode_rows(frame)))
        from model.data.point_in_time import training_frame
        from sources.feature_store.env import open_feature_store

        store = open_feature_store(self.stores.endpoints)
        out = []
        for s in range(0, len(users), PAIR_CHUNK):  # one chunk's frame at a time: 162K users x 100 is 16M pairs
            rows = slice(s, s + PAIR_CHUNK)
            labels = pd.DataFrame({"user_id": ext_u[rows].astype(np.int64), "movie_id": ext_m[rows].astype(np.int64),
                                   "event_timestamp": pd.to_datetime(at_ts[rows], unit="s", utc=True)})  # fmt: skip
            frame = training_frame(store, labels, TRAINING_SERVICE)
            out.append(rating_to_logit(predict_ratings(self.net, self.encoder.encode_rows(frame))))
        return torch.cat(out) if out else torch.zeros(0)


@dataclass
class Candidates:
    """Each user's top unseen movies by the retriever, and their engagement logits (if scored)."""

    indices: Tensor  # (users, n) dense movie ids
    retriever: Tensor  # (users, n) logits
    engagement: Tensor | None = None  # (users, n) logits


def candidates_for(retriever_scores: Tensor, exclude: Tensor, n: int) -> Candidates:
    top = retriever_scores.masked_fill(exclude, float("-inf")).topk(min(n, retriever_scores.shape[1]), dim=1)
    return Candidates(top.indices, top.values)


def rerank_scores(candidates: Candidates, n_movies: int, beta: float) -> Tensor:
    """``(users, n_movies)`` scores: candidates get ``retriever + beta * engagement``, the rest -inf."""
    combined = candidates.retriever.clone()
    if candidates.engagement is not None and beta:
        combined += beta * candidates.engagement
    out = torch.full((combined.shape[0], n_movies), float("-inf"))
    out.scatter_(1, candidates.indices, combined)
    return out


def with_engagement(candidates: Candidates, history: Interactions, scorer: EngagementScorer) -> Candidates:
    users = np.repeat(np.arange(candidates.indices.shape[0]), candidates.indices.shape[1])
    logits = scorer.logits(history, users, candidates.indices.reshape(-1).numpy())
    return Candidates(candidates.indices, candidates.retriever, logits.reshape(candidates.indices.shape))


def evaluate(
    stores: Stores,
    models_dir: Path,
    reports_dir: Path,
    *,
    protocol: str = "time",
    options: TrainOptions | None = None,
    feature_source: str = "auto",
    candidates: int = 100,
    retrain: bool = False,
    models: list[str] | None = None,
    explicit: set[str] = frozenset(),  # type: ignore[assignment]
    peers: Path | None = None,
    new_title_boost: float = 0.0,
    sample_users: int | None = None,
) -> tuple[Report, dict[str, Path]]:
    """Evaluate ``models`` (default: all) on the protocol's test part; write the report files.

    ``sample_users``: the figures are computed on a seeded sample of that many held-out users
    (``sample_test_users``, seed ``options.seed``; ``model/evaluate/scope.py``), and the report
    says so: every score matrix has one row per sampled user, which is what makes an evaluation
    at the ML-25M shape fit in memory. Models are trained exactly as without it; the choices
    made on the valid part (the trend prior, the re-rank weight) are made on the sample's
    valid events.

    On the time protocol the served retriever gets its trend prior (``_trend``), new titles
    lifted by ``new_title_boost`` (``MARQUEE_NEW_TITLE_BOOST``, passed by the CLI)."""
    if protocol not in SPLITS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(SPLITS)}")
    if peers is not None and protocol != "recbole":
        raise ValueError("peers are RecBole's runs: use them with --protocol recbole")
    if peers is not None and sample_users is not None:
        raise ValueError("peers were ranked on every held-out user: evaluate them without a sample of users")
    peer_runs = load_peers(peers) if peers is not None else {}
    options = options or TrainOptions()
    since = window_start(stores, options.window_days)
    data = from_stores(stores, since=since)
    split = make_split(data, protocol, seed=options.seed)
    kinds = list(models or MODELS)
    if "engagement" in kinds:
        check_frame_size(data, options.engagement_max_labels)
    frame, service = (
        engagement_frame(stores, data, source=feature_source, since=since) if "engagement" in kinds else (None, "")
    )
    ckpts = _load_or_train(stores, models_dir, kinds, data, split, options, feature_source, retrain, explicit,
                           (frame, service) if frame is not None else None)  # fmt: skip
    scope = Scope.of(split)
    report = Report(protocol, split.describe(), complete=set(kinds) >= set(MODELS), models=kinds)
    if sample_users is not None:  # after the checkpoints: they record the whole split
        chosen, held_out = sample_test_users(split, sample_users, options.seed)
        scope = Scope.of(split, chosen)
        report.notes.append(
            f"figures on a seeded sample of {len(chosen):,} of the {held_out:,} held-out users (seed "
            f"{options.seed}; the trend prior and the re-rank weight chosen on their valid events), not on every "
            "held-out user"
        )
    nets = {k: from_checkpoint(c) for k, c in ckpts.items()}
    if "pop" in nets:
        _rank_all("pop", scope.scorer(nets["pop"]), scope, report, _training_figures(ckpts["pop"]))
    if "bpr" in nets:
        _rank_all("bpr", scope.scorer(OnCpu(nets["bpr"])), scope, report, _training_figures(ckpts["bpr"]))
    retrievers: dict[str, Tensor] = {}  # test-time scores of each retriever (training part as history)
    if "ease" in nets:
        retrievers["ease"] = scope.scores(EaseScorer(nets["ease"], scope.history([split.train])))
        _rank_all("ease", retrievers["ease"], scope, report, _training_figures(ckpts["ease"]))
        ease_view = EaseScorer(nets["ease"], scope.history([split.train, split.valid]))
        _rank_all("ease, history incl. valid", scope.scorer(ease_view), scope, report, {})
        config = nets["ease"].config
        report.notes.append(f"ease: l2 {config.l2:g}, recency {config.recency:g} events (chosen on valid NDCG@10)")
    tt_scores = None
    if "two_tower" in nets:
        # every model reads only the training part at test time (RecBole's convention): no valid events
        vectors = ckpts["two_tower"].extras["movie_vectors"]
        tt_scores = scope.scores(TwoTowerScorer(nets["two_tower"], scope.history([split.train]), vectors))
        _rank_all("two_tower", tt_scores, scope, report, _training_figures(ckpts["two_tower"]))
        # what serving does: the user tower reads every known event, valid ones included (they
        # precede the test events); an extra row, not the like-for-like comparison above
        served_view = TwoTowerScorer(nets["two_tower"], scope.history([split.train, split.valid]), vectors)
        _rank_all("two_tower, history incl. valid", scope.scorer(served_view), scope, report, {})
        retrievers["two_tower"] = tt_scores
    if "sequential" in nets:
        sequential = SequentialScorer(nets["sequential"], scope.history([split.train]))
        retrievers["sequential"] = scope.scores(sequential)
        _rank_all("sequential", retrievers["sequential"], scope, report, _training_figures(ckpts["sequential"]))
    if "vae" in nets:
        retrievers["vae"] = scope.scores(VaeScorer(nets["vae"], scope.history([split.train])))
        _rank_all("vae", retrievers["vae"], scope, report, _training_figures(ckpts["vae"]))
        config = nets["vae"].config
        report.notes.append(f"vae: hidden {config.hidden}, latent {config.latent}, beta {config.beta:g}, "
                            f"recency {config.recency:g} events")  # fmt: skip
    if "fusion" in nets and all(k in retrievers for k in nets["fusion"].used):
        # the fused retrievers' test scores above (history = training part), weights chosen on valid
        weights = nets["fusion"].weights
        retrievers["fusion"] = fuse(retrievers, weights)
        _rank_all("fusion", retrievers["fusion"], scope, report, {})
        shown = ", ".join(f"{k} {w:g}" for k, w in weights.items())
        report.notes.append(f"fusion of z-scored retriever scores, weights chosen on valid NDCG@10: {shown}")
    served_kind = best_retriever({k: ckpts[k] for k in retrievers}) if retrievers else None
    served: tuple[str, Tensor] | None = (served_kind, retrievers[served_kind]) if served_kind else None
    retrieved: Retrieved | None = None
    if served_kind:
        report.notes.append(f"served retriever: {served_kind} (best valid NDCG@10 of {', '.join(retrievers)})")
        report.served = served_kind
        report.costs = request_cost(list(retrievers), {k: ckpts[k] for k in retrievers}, split)
        retrieved = Retrieved(served_kind, retrievers[served_kind], retrievers[served_kind])
        if protocol == "time":
            retrieved = _trend(models_dir, data, scope, report, ckpts[served_kind], retrieved, new_title_boost)
            served = (f"{served_kind} + trend", retrieved.test)
    if "bpmf" in nets:
        bpmf_rows(scope, report, nets["bpmf"], ckpts["bpmf"])
    if "engagement" in nets and frame is not None:
        served = _engagement(stores, models_dir, data, scope, report, nets["engagement"], ckpts["engagement"],
                             frame, service, retrieved, candidates) or served  # fmt: skip
    if peer_runs:
        _peers(peer_runs, data, scope, report, served)
    return report, write_report(report, reports_dir)


def _peers(
    runs: dict[str, dict[str, Any]], data: Interactions, scope: Scope, report: Report, served: tuple[str, Tensor] | None
) -> None:
    """RecBole's models as rows (scored from their top-10 lists) and the bootstrap of served vs the
    best (every held-out user: ``scope`` has no sample here)."""
    split = scope.whole
    seen = [split.train, split.valid]
    per_user: dict[str, Tensor] = {}
    for name, run in runs.items():
        scores = peer_scores(run["top10"], data)
        clashes = check_protocol(scores, seen, f"RecBole {name}")
        if clashes:
            report.notes.append(f"RecBole {name}: {clashes} listed movies are in train/valid here (tied timestamps "
                                "at the split boundary), masked out")  # fmt: skip
        figures = {"epochs": run.get("epochs"), "s/epoch": run.get("seconds_per_epoch"),
                   "samples/s": run.get("samples_per_s")}  # fmt: skip
        _rank_all(f"RecBole {name}", scores, scope, report, figures)
        per_user[name] = per_user_ndcg(scores, split.test, seen)
        ours, theirs = report.rows[f"RecBole {name}"]["ndcg@10"], self_reported(run)
        if abs(ours - theirs) > 5e-4:  # the same lists scored by two codes: they must agree
            report.notes.append(f"RecBole {name}: NDCG@10 {ours:.4f} here vs {theirs:.4f} in RecBole's evaluator")
    if served is None or not per_user:
        return
    name, scores = served
    best = max(per_user, key=lambda n: float(per_user[n].mean()))
    ours = per_user_ndcg(scores, split.test, seen)
    label = next((r for r in report.rows if r.startswith("served (")), name)
    report.comparisons.append({"model": label, "against": f"RecBole {best}", **paired_bootstrap(ours, per_user[best])})
    report.notes.append(f"peers: {', '.join(runs)} from scripts/recbole_peer.py, scored here from their top-10 lists")


@dataclass(frozen=True)
class Retrieved:
    """The served retriever's scores: what candidates come from on the valid part (history: train)
    and on the test part, and whether the trend prior shaped them."""

    kind: str
    valid: Tensor
    test: Tensor
    trend: bool = False


def _trend(
    models_dir: Path, data: Interactions, scope: Scope, report: Report, ckpt: Checkpoint, retrieved: Retrieved,
    new_boost: float,
) -> Retrieved:  # fmt: skip
    """Choose the trend prior on valid, report the served retriever with it (all movies and the
    cold slices) and store it in the retriever's checkpoint, which serving reads."""
    started = time.perf_counter()
    split = scope.whole  # the prior counts every user's events; the scores are the view's rows
    prior, tried = choose_prior(retrieved.valid, split, data.movie_ids, new_boost, view=scope.view)
    valid = prior_scores(retrieved.valid, [split.train], prior, data.movie_ids)
    test = prior_scores(retrieved.test, [split.train, split.valid], prior, data.movie_ids)
    _rank_all(f"{retrieved.kind} + trend", test, scope, report, {})
    best = {d: max(v for (dd, _), v in tried.items() if dd == d) for d in {d for d, _ in tried}}
    report.notes.append(
        f"trend prior chosen on valid NDCG@10: window {prior.days:g} days, weight {prior.weight:g} (best per window "
        f"{ {d: round(v, 4) for d, v in sorted(best.items())} }, {time.perf_counter() - started:.1f}s); "
        f"new-title boost {new_boost:g} (a policy: MARQUEE_NEW_TITLE_BOOST), {len(prior.new_movies)} titles new "
        "to the retriever"
    )
    ckpt.metrics["trend_prior"] = prior.to_dict()
    save_checkpoint(ckpt, checkpoint_path(models_dir / split.name, retrieved.kind))
    return Retrieved(retrieved.kind, valid, test, trend=True)


def bpmf_rows(scope: Scope, report: Report, model: BayesianPMF, ckpt: Checkpoint) -> None:
    """Bayesian PMF's rating error on the test rows, all of them and the cold slices."""
    test = scope.view.test
    pred = model.predict(torch.as_tensor(scope.dense_users(test.users)), torch.as_tensor(test.items))
    target = torch.as_tensor(test.ratings)
    report.rows["bpmf (rating)"] = {"rmse": rmse(pred, target), "mae": mae(pred, target), **_training_figures(ckpt)}
    for label, rows in (
        ("cold users", np.isin(test.users, scope.cold_users)),
        ("cold movies", np.isin(test.items, scope.cold_movies)),
    ):
        if rows.any():
            picked = torch.as_tensor(rows)
            report.cold[f"bpmf / {label}"] = {"rmse": rmse(pred[picked], target[picked]), "rows": int(rows.sum())}
    c = model.config
    report.notes.append(f"bpmf: {c.dim} factors (chosen on valid RMSE), {c.kept} posterior draws of {c.sweeps} "
                        f"Gibbs sweeps, sampled on {ckpt.extras.get('fitted_on', 'train')}")  # fmt: skip


def _engagement(
    stores: Stores, models_dir: Path, data: Interactions, scope: Scope, report: Report, net: Any,
    eng: Checkpoint, frame: pd.DataFrame, service: str, retriever: Retrieved | None, candidates: int,
) -> tuple[str, Tensor] | None:  # fmt: skip
    """Rating error on the test rows, then (with a retriever) the served re-ranking and its scores."""
    encoder = FrameEncoder.from_dict(eng.extras["encoder"])
    split = scope.view  # the figures' users; their external ids and events as in the whole split
    parts = split_frame(frame, split)
    pred = predict_ratings(net, encoder.encode_rows(parts["test"]))
    target = torch.tensor(parts["test"]["rating"].to_numpy(np.float32))
    report.rows["engagement (rating)"] = {"rmse": rmse(pred, target), "mae": mae(pred, target),
                                          **_training_figures(eng)}  # fmt: skip
    for label, ids, column in (("cold users", split.train.user_ids[scope.cold_users], "user_id"),
                               ("cold movies", data.movie_ids[scope.cold_movies], "movie_id")):  # fmt: skip
        rows = parts["test"][column].isin(ids).to_numpy()
        if rows.any():
            report.cold[f"engagement / {label}"] = {"rmse": rmse(pred[rows], target[rows]), "rows": int(rows.sum())}
    report.notes.append(f"engagement features: {service}, frame from {eng.feature_engine or 'an unrecorded engine'}")
    if retriever is None:
        return None
    kind = retriever.kind
    scorer = EngagementScorer(net, encoder, stores, service, end_ts=scope.whole.train.max_ts)
    # pick beta on valid: retriever scores from the same model (it never saw valid), seen = train
    started = time.perf_counter()
    _, exclude_valid = masks(split.valid, [split.train])
    valid_candidates = with_engagement(candidates_for(retriever.valid, exclude_valid, candidates), split.train,
                                       scorer)  # fmt: skip
    tried = {}
    for beta in BETAS:
        scores = rerank_scores(valid_candidates, data.n_movies, beta)
        tried[beta] = full_ranking(None, split.valid, [split.train], scores=scores)["ndcg@10"]
    best_beta = max(BETAS, key=lambda b: (tried[b], -b))  # ties: the smaller weight
    _, exclude_test = masks(split.test, [split.train, split.valid])
    test_candidates = candidates_for(retriever.test, exclude_test, candidates)
    if best_beta:
        test_candidates = with_engagement(test_candidates, split.train, scorer)
    served = rerank_scores(test_candidates, data.n_movies, best_beta)
    label = f"served ({kind}{' + trend' if retriever.trend else ''} → engagement)"
    _rank_all(label, served, scope, report, {"beta": best_beta})
    shown = {b: round(v, 4) for b, v in tried.items()}
    report.notes.append(f"re-rank weight beta chosen on valid NDCG@10 {shown} -> {best_beta} "
                        f"({time.perf_counter() - started:.1f}s); candidates per user: {candidates}")  # fmt: skip
    eng.metrics["rerank_beta"] = best_beta  # serving (model.serve.ranker.Ranker) reads it
    eng.metrics["rerank_retriever"] = kind  # the weight fits this retriever's score scale only
    eng.metrics["rerank_trend"] = retriever.trend  # ... with the trend prior's standardized scores, or raw
    save_checkpoint(eng, checkpoint_path(models_dir / scope.whole.name, "engagement"))
    return label, served


def report_stem(report: Report) -> str:
    """File name without suffix: letters, digits, ``_`` and ``-`` only."""
    names = [m for m in MODELS if m in report.models] or list(report.models)
    subset = "" if report.complete else "_" + "-".join(names)
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"evaluation_{report.protocol}{subset}")


def write_report(report: Report, reports_dir: Path) -> dict[str, Path]:
    """``evaluation_<protocol>.md``, ``.json`` and ``.png`` (NDCG/Recall/MRR@10 per model).

    A subset of the models is written beside the full table, never over it:
    ``evaluation_<protocol>_<model>-<model>.*`` (e.g. ``evaluation_time_two_tower-engagement.md``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = reports_dir / report_stem(report)
    paths = {"markdown": stem.with_suffix(".md"), "json": stem.with_suffix(".json"), "png": stem.with_suffix(".png")}
    paths["markdown"].write_text(report.markdown())
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, default=float))
    ranked = {k: v for k, v in report.rows.items() if "ndcg@10" in v}
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.25
    for i, metric in enumerate(("ndcg@10", "recall@10", "mrr@10")):
        ax.bar(np.arange(len(ranked)) + i * width, [r[metric] for r in ranked.values()], width, label=metric)
    ax.set_xticks(np.arange(len(ranked)) + width, list(ranked), rotation=15, fontsize=8)
    ax.set_title(f"full-ranking top-10, {report.protocol} protocol")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return paths
