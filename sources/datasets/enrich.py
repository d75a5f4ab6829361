"""Deterministic generated data where MovieLens has none (documented in docs/data.md).

Every value derives from the real data plus a fixed seed, one random stream per user
(``rng(seed, user_id)``), so results do not depend on load order or batch size:

- city: from the user's real zip code (US zip prefix → a city of that region);
- subscription tier and monthly price: heavier raters lean to higher tiers;
- payments: one per month from sign-up to the user's last activity, one method per user;
- playback sessions: one per rating, ending just before the rating; completion (and so
  duration) grows with the rating; device, buffer rate and errors vary per user;
- FOLLOWS: taste neighbours found from shared high ratings (``FollowBuilder``);
- demographics for datasets without them (ml-25m CSVs, synthetic sets).
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from sources.datasets.movielens import Rating, UserRecord

TIERS = ((1, "Basic", 7.99), (2, "Standard", 13.99), (3, "Premium", 19.99))
METHODS = ("Card", "PayPal", "UPI")
DEVICES = ("tv", "mobile", "desktop", "tablet")
OCCUPATIONS = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
)
# First digit of a US zip code → cities of that region; other (e.g. Canadian) codes → Toronto.
CITIES_BY_ZIP = {
    "0": ("Boston", "Hartford"),
    "1": ("New York", "Philadelphia"),
    "2": ("Washington", "Baltimore"),
    "3": ("Atlanta", "Miami"),
    "4": ("Detroit", "Columbus"),
    "5": ("Minneapolis", "Milwaukee"),
    "6": ("Chicago", "St. Louis"),
    "7": ("Dallas", "Houston"),
    "8": ("Denver", "Phoenix"),
    "9": ("San Francisco", "Los Angeles", "Seattle"),
}
SESSION_NAMESPACE = uuid.UUID("6f1c2a3e-8d9b-4f5a-9c7e-2b1d0e4f6a8c")


def rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def city_for(zip_code: str | None, user_id: int) -> str:
    if not zip_code or not zip_code[0].isdigit():
        return "Toronto"
    cities = CITIES_BY_ZIP[zip_code[0]]
    return cities[int(zip_code[-1]) % len(cities)] if zip_code[-1].isdigit() else cities[0]


def demographics(user: UserRecord, seed: int) -> UserRecord:
    """Fill age, gender, occupation and zip where the dataset has none."""
    if user.age is not None:
        return user
    r = rng(seed, 11, user.id)
    age = int(np.clip(r.normal(33, 11), 13, 73))
    gender = "M" if r.random() < 0.71 else "F"  # ML-100K's share
    zip_code = f"{int(r.integers(1000, 99999)):05d}"
    return UserRecord(user.id, age, gender, OCCUPATIONS[int(r.integers(len(OCCUPATIONS)))], zip_code)


@dataclass(frozen=True, slots=True)
class Activity:
    first_ts: int
    last_ts: int
    n_ratings: int


@dataclass(frozen=True, slots=True)
class Billing:
    tier_id: int
    signed_up_at: datetime
    payments: list[tuple[float, str, datetime]]  # amount, method, paid_at


def billing(user_id: int, activity: Activity, seed: int) -> Billing:
    r = rng(seed, 13, user_id)
    heavy = min(activity.n_ratings / 300.0, 1.0)  # 0 (light) .. 1 (heavy rater)
    probs = np.array([0.5 - 0.3 * heavy, 0.35, 0.15 + 0.3 * heavy])
    tier_id, _, price = TIERS[int(r.choice(3, p=probs / probs.sum()))]
    signed_up = _utc(activity.first_ts) - timedelta(days=float(r.uniform(1, 60)))
    method = METHODS[int(r.choice(3, p=[0.6, 0.25, 0.15]))]
    end = _utc(activity.last_ts)
    payments, paid_at = [], signed_up
    while paid_at <= end:
        payments.append((price, method, paid_at))
        paid_at += timedelta(days=30)
    return Billing(tier_id, signed_up, payments)


def runtime_minutes(movie_id: int) -> int:
    return 80 + (movie_id * 2654435761) % 61  # a stable 80-140 min per movie


def sessions(user_id: int, ratings: list[Rating], seed: int) -> list[dict[str, object]]:
    """One playback session per rating, ending just before the rating was given."""
    if not ratings:
        return []
    r = rng(seed, 17, user_id)
    n = len(ratings)
    stars = np.array([x.rating for x in ratings])
    completion = np.clip(0.15 + 0.17 * stars + r.normal(0, 0.08, n), 0.05, 1.0)
    runtime = np.array([runtime_minutes(x.movie_id) * 60 for x in ratings])
    duration = np.maximum((runtime * completion).astype(int), 60)
    preferred = int(r.integers(len(DEVICES)))
    devices = np.where(r.random(n) < 0.8, preferred, r.integers(len(DEVICES), size=n))
    quality = r.uniform(0.005, 0.04)  # this user's connection
    buffer_rate = np.round(r.beta(2, 2 / quality, n), 4)
    errors = r.poisson(buffer_rate * 20)
    out: list[dict[str, object]] = []
    for i, x in enumerate(ratings):
        start = x.ts - int(duration[i]) - 60
        out.append(
            {
                "session_id": str(uuid.uuid5(SESSION_NAMESPACE, f"{user_id}:{x.movie_id}:{x.ts}")),
                "movie_id": x.movie_id,
                "timestamp": _utc(start),
                "duration_seconds": int(duration[i]),
                "device": DEVICES[int(devices[i])],
                "buffer_rate": float(buffer_rate[i]),
                "errors": int(errors[i]),
            }
        )
    return out


class FollowBuilder:
    """Derives (:User)-[:FOLLOWS]->(:User) from the ratings, streaming, in bounded memory.

    A user follows the (up to) ``k`` users who most often liked (rated ≥ 4) the same movies,
    counted over the user's ``recent`` most recent likes and, for each of those movies, the
    last ``per_movie`` other users to like it. Memory: ``recent`` ints per user plus
    ``per_movie`` ints per movie, whatever the number of ratings.
    """

    def __init__(self, k: int = 5, recent: int = 20, per_movie: int = 10) -> None:
        self.k, self.recent, self.per_movie = k, recent, per_movie
        self._likes: dict[int, np.ndarray] = {}
        self._likers: dict[int, deque[int]] = {}

    def add(self, user_id: int, ratings: list[Rating]) -> None:
        liked = [x.movie_id for x in ratings if x.rating >= 4][-self.recent :]
        self._likes[user_id] = np.array(liked, dtype=np.int32)
        for movie_id in liked:
            self._likers.setdefault(movie_id, deque(maxlen=self.per_movie + 1)).append(user_id)

    def edges(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for user_id, liked in self._likes.items():
            counts: Counter[int] = Counter()
            for movie_id in liked.tolist():
                counts.update(v for v in self._likers[movie_id] if v != user_id)
            # Most shared likes first; ties to the lower id so the result is deterministic.
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.k]
            out.extend((user_id, other) for other, _ in ranked)
        return out


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
