"""Training Bayesian PMF: Gibbs sampling per latent size, the size chosen on valid RMSE, then a refit.

Each ``dim`` of the grid is one "epoch" in the history: the sampler runs on the training part
and the averaged prediction is scored on the valid part (RMSE and MAE). The best size is then
sampled again on train + valid, the whole 80% of the random split, as Surprise's published
ML-100K figures are fitted on 80%; the sampler has no early stopping, so nothing in that refit
looks at valid. The test part is never read here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from model.data.interactions import Interactions, Split, combined
from model.evaluate.metrics import mae, rmse
from model.networks.bpmf import BayesianPMF, BpmfConfig
from model.train.gibbs import normal, sample_factors, sample_hyper, sample_precision
from model.train.options import Trained, TrainOptions
from sources.progress import console

#: latent sizes tried on valid
DIM_GRID = (10, 20)
#: the noise precision's starting value when it is sampled (about 1 / the variance of a fitted rating)
START_PRECISION = 1.5
#: the chain starts from a ridge fit (alternating least squares, this many rounds, this ridge weight)
#: rather than from near-zero factors, which a Wishart draw would keep small for dozens of sweeps
START_ROUNDS, START_RIDGE = 4, 10.0


def sample_posterior(
    train: Interactions, config: BpmfConfig, *, on_sweep: Callable[[int], None] | None = None
) -> BayesianPMF:
    """Gibbs-sample BPMF on ``train`` (``config.chains`` chains, each from a ridge fit) and keep
    ``config.kept`` draws; ``on_sweep(n)`` is called after each sweep, counted over all chains."""
    if not len(train):
        raise ValueError("BPMF needs training ratings")
    users, items = torch.as_tensor(train.users), torch.as_tensor(train.items)
    ratings = torch.as_tensor(train.ratings, dtype=torch.float64)
    mean = ratings.mean()
    model = BayesianPMF(config)
    for chain in range(config.chains):
        rng = np.random.default_rng([config.seed, chain])
        draws = run_chain(users, items, ratings - mean, config, rng, on_sweep=on_sweep, done=chain * config.sweeps)
        for n, (user_f, item_f) in enumerate(draws):
            model.user_factors[chain * config.per_chain + n] = user_f
            model.item_factors[chain * config.per_chain + n] = item_f
    model.mean.fill_(float(mean))
    return model.eval()


def run_chain(
    users: Tensor, items: Tensor, centred: Tensor, config: BpmfConfig, rng: np.random.Generator, *,
    on_sweep: Callable[[int], None] | None = None, done: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:  # fmt: skip
    """One chain over the ratings ``centred (N,)`` of ``users (N,)`` and ``items (N,)``: yields the
    kept ``(user factors (n_users, dim), item factors (n_items, dim))`` draws, float32."""
    user_f = 0.1 * normal(rng, config.n_users, config.dim)
    item_f = 0.1 * normal(rng, config.n_items, config.dim)
    ridge, zero = START_RIDGE * torch.eye(config.dim, dtype=torch.float64), torch.zeros(config.dim, dtype=torch.float64)
    for _ in range(START_ROUNDS):
        user_f = sample_factors(users, items, centred, item_f, config.n_users, zero, ridge, 1.0, None)
        item_f = sample_factors(items, users, centred, user_f, config.n_items, zero, ridge, 1.0, None)
    noise = config.beta or START_PRECISION
    for sweep in range(config.sweeps):
        mu, precision = sample_hyper(user_f, rng)
        user_f = sample_factors(users, items, centred, item_f, config.n_users, mu, precision, noise, rng)
        mu, precision = sample_hyper(item_f, rng)
        item_f = sample_factors(items, users, centred, user_f, config.n_items, mu, precision, noise, rng)
        if not config.beta:
            noise = sample_precision((user_f[users] * item_f[items]).sum(1) - centred, rng)
        if sweep >= config.burn_in and (sweep - config.burn_in) % config.thin == 0:
            yield user_f.float(), item_f.float()
        if on_sweep is not None:
            on_sweep(done + sweep + 1)


def rating_errors(model: BayesianPMF, part: Interactions) -> dict[str, float]:
    """RMSE and MAE of ``model``'s ratings on ``part``'s rows."""
    pred = model.predict(torch.as_tensor(part.users), torch.as_tensor(part.items))
    target = torch.as_tensor(part.ratings)
    return {"rmse": rmse(pred, target), "mae": mae(pred, target)}


def train_bpmf(
    split: Split, options: TrainOptions, *, dim_grid: tuple[int, ...] = DIM_GRID, sweeps: int = 150,
    burn_in: int = 30, chains: int = 2, refit: bool = True,
) -> Trained:  # fmt: skip
    """Sample per ``dim_grid`` on ``split.train``, keep the size with the best valid RMSE, refit it on
    train + valid (``refit``). ``Trained.valid`` holds the chosen size's valid figures; the other
    sampler settings are ``BpmfConfig``'s."""
    if not dim_grid:
        raise ValueError("empty BPMF grid")
    train = split.train
    base = BpmfConfig(train.n_users, train.n_movies, sweeps=sweeps, burn_in=burn_in, chains=chains, seed=options.seed)
    rows: list[dict[str, float]] = []
    best: tuple[float, BpmfConfig, dict[str, float], int] | None = None
    for dim in dim_grid:
        config = dataclasses.replace(base, dim=dim)
        started = time.perf_counter()
        model = sample_posterior(train, config)
        seconds = time.perf_counter() - started
        valid = rating_errors(model, split.valid)
        rows.append({"epoch": len(rows) + 1, "loss": 0.0, "seconds": seconds, "samples": len(train) * sweeps * chains,
                     "dim": dim, **valid})  # fmt: skip
        if not options.quiet:
            console.print(f"bpmf dim={dim}: valid rmse {valid['rmse']:.4f}, mae {valid['mae']:.4f} ({seconds:.0f}s)")
        if best is None or valid["rmse"] < best[0]:
            best = (valid["rmse"], config, valid, len(rows))
    assert best is not None
    _, config, valid, epoch = best
    fitted_on = combined([train, split.valid]) if refit else train
    started = time.perf_counter()
    model = sample_posterior(fitted_on, config)
    if not options.quiet:
        console.print(f"bpmf dim={config.dim} sampled again on {len(fitted_on):,} ratings "
                      f"({time.perf_counter() - started:.0f}s)")  # fmt: skip
    extras = {"grid": {"dim": list(dim_grid)}, "fitted_on": "train+valid" if refit else "train"}
    return Trained("bpmf", model, rows, epoch, valid, extras)
