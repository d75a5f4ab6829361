"""A generated MovieLens-shaped dataset of any size, deterministic and streaming.

``synthetic(users=..., movies=..., ratings=..., seed=...)`` returns a ``Dataset`` whose users
and movies are held (small) while ratings are generated one user at a time inside
``rating_blocks()``, so a 25M-rating set needs memory for one user's block only. Every call
of ``rating_blocks()`` (and ``credits()``) starts fresh and reproduces the same output: each
user's ratings come from their own stream ``default_rng([seed, 23, user_id])`` and each
movie's credits from ``default_rng([seed, 31, movie_id])``, never from one shared stream.

Shape, chosen to resemble MovieLens:

- popularity: Zipf–Mandelbrot over a popularity rank, weight ∝ 1 / (rank + 10); the rank is a
  seeded shuffle of the movie ids, so id order says nothing about popularity;
- activity: ratings per user = minimum + lognormal share (σ 1.45, about ML-25M's
  median/mean ratio), the minimum being 20 (as MovieLens keeps users with ≥ 20) when
  ``ratings ≥ 20 × users``, else 1 (or 0 when there are fewer ratings than users); capped at
  the number of movies, with the cap's excess spread over the others and the last rounding
  unit going to the most active users so the total is exact;
- which movies: weighted sampling without replacement (see ``_Sampler``);
- stars 1–5 from user bias + movie quality (popular movies somewhat better) + noise, cut at
  thresholds that give MovieLens' mix (mean ≈ 3.5, mode 4);
- time: ratings fall between 1996-01-01 and 2019-12-31 inside each user's active window
  (uniform start, lognormal length growing with activity), in sessions; a movie is never
  rated before its release, so a movie's year ≤ the year of its earliest rating;
- catalogue: 1–3 genres with ML-25M's genre frequencies, word-list titles, years 1920–2019;
- credits: ~20 ACTED_IN, 1 DIRECTED, 1–2 WROTE, 1–2 PRODUCED per movie, people ``p:<n>``
  drawn from role pools with power-law reuse.

Users carry no demographics; ``sources.datasets.enrich.demographics`` fills them at ingest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from sources.datasets.movielens import GENRES, Credit, Dataset, MovieRecord, Rating, UserRecord
from sources.errors import DatasetError

#: Bump when the output for the same parameters changes: it is part of the fingerprint.
GENERATOR_VERSION = "synth-1"

SPAN_START = int(datetime(1996, 1, 1, tzinfo=UTC).timestamp())
SPAN_END = int(datetime(2019, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
DAY = 86_400
FIRST_YEAR, LAST_YEAR = 1920, 2019
MIN_RATINGS = 20  # MovieLens keeps users with at least 20 ratings

POPULARITY_OFFSET = 10.0  # Zipf–Mandelbrot q: softens the head so the top movie is not rated by everyone
ACTIVITY_SIGMA = 1.45
# Continuous score → stars: cut points put ~6/11/26/35/22 % on 1..5 stars, as ML-1M.
STAR_CUTS = np.array([-1.87, -1.24, -0.41, 0.58])
USER_BIAS_SD, QUALITY_SD, POPULARITY_LIFT, NOISE_SD = 0.45, 0.45, 0.25, 0.75
# Above this share of the available movies, rejection sampling would need too many draws.
DENSE_FRACTION = 0.25

# Relative genre frequencies in ML-25M (movies per genre); IMAX is rare on purpose.
GENRE_WEIGHTS = {
    "Action": 7348,
    "Adventure": 4145,
    "Animation": 2929,
    "Children's": 2935,
    "Comedy": 16870,
    "Crime": 5319,
    "Documentary": 5605,
    "Drama": 25606,
    "Fantasy": 2731,
    "Film-Noir": 353,
    "Horror": 5989,
    "Musical": 1054,
    "Mystery": 2925,
    "Romance": 7719,
    "Sci-Fi": 3595,
    "Thriller": 8654,
    "War": 1874,
    "Western": 1399,
    "IMAX": 60,
}

_ADJECTIVES = (
    "Silent", "Crimson", "Broken", "Hidden", "Last", "Lost", "Golden", "Dark", "Endless", "Secret",
    "Wild", "Frozen", "Savage", "Quiet", "Burning", "Electric", "Fading", "Hollow", "Iron", "Little",
    "Midnight", "Perfect", "Restless", "Shattered", "Sweet", "Twisted", "Velvet", "Wicked", "Brave",
    "Distant", "Eternal", "Forgotten", "Invisible", "Lonely", "Northern", "Scarlet", "Stolen", "Final",
    "Blue", "Cold", "Deadly", "Fallen", "Big", "Strange", "Young", "Black", "White", "Long", "Red",
)  # fmt: skip
_NOUNS = (
    "River", "Protocol", "Heart", "Storm", "Garden", "Kingdom", "Shadow", "Promise", "Road", "Witness",
    "Summer", "Empire", "Harbor", "Mirror", "Horizon", "Letter", "Machine", "Night", "Ocean", "Planet",
    "Prophecy", "Rebellion", "Stranger", "Symphony", "Train", "Valley", "Voyage", "Winter", "Wolf",
    "Affair", "Alibi", "Bridge", "City", "Code", "Dream", "Edge", "Frontier", "Game", "Hunt", "Island",
    "Journey", "Legacy", "Mission", "Orchard", "Paradise", "Ransom", "Silence", "Tide", "Vendetta",
    "Spy", "Heist", "Detective", "Angel", "Ghost", "House", "Family", "Wedding", "Season", "Star",
)  # fmt: skip
_NAMES = (
    "Annie", "Charlie", "Harry", "Jack", "Lucy", "Max", "Rosie", "Sam", "Billy", "Grace", "Eddie",
    "Molly", "Frank", "Vera", "Johnny", "Nora", "Oscar", "Daisy", "Leo", "Ruby",
)  # fmt: skip
_PLACES = (
    "Paris", "Brooklyn", "Tokyo", "Chicago", "Vegas", "Berlin", "Havana", "Texas", "Manhattan",
    "Casablanca", "Alaska", "Mars", "Rome", "Memphis", "Shanghai", "Venice", "Dublin", "Bombay",
)  # fmt: skip


#: ML-1M's and ML-25M's shapes (users, movies) by ratings
MOVIELENS_SHAPES = {1_000_000: (6_040, 3_706), 25_000_095: (162_541, 62_423)}


def movielens_shape(ratings: int) -> tuple[int, int]:
    """(users, movies) for ``ratings``: ML-1M's and ML-25M's shapes, interpolated geometrically
    in between (and extended the same way past them); the 1M shape when ``ratings`` is 0."""
    if ratings in MOVIELENS_SHAPES or ratings <= 0:
        return MOVIELENS_SHAPES.get(ratings, MOVIELENS_SHAPES[1_000_000])
    (r1, (u1, m1)), (r2, (u2, m2)) = sorted(MOVIELENS_SHAPES.items())
    share = math.log(ratings / r1) / math.log(r2 / r1)
    users = max(1, round(u1 * (u2 / u1) ** share))
    # far below 1M the curve leaves fewer cells than ratings: widen the catalogue to twice them
    return users, max(round(m1 * (m2 / m1) ** share), math.ceil(2 * ratings / users))


def synthetic(*, users: int, movies: int, ratings: int, seed: int = 42) -> Dataset:
    """A MovieLens-shaped dataset with exactly ``ratings`` ratings (see the module docstring)."""
    _validate(users, movies, ratings, seed)
    catalogue = _Catalogue(movies, seed)
    counts = _activity(users, movies, ratings, seed)

    def rating_blocks() -> Iterator[tuple[int, list[Rating]]]:
        sampler = _Sampler(catalogue)
        for user_id in range(1, users + 1):
            yield user_id, _user_ratings(catalogue, sampler, user_id, int(counts[user_id - 1]), seed)

    name = f"synthetic-u{users}-m{movies}-r{ratings}-s{seed}"
    params = f"{GENERATOR_VERSION}:users={users}:movies={movies}:ratings={ratings}:seed={seed}"
    return Dataset(
        name=name,
        fingerprint=hashlib.sha256(params.encode()).hexdigest(),
        users=[UserRecord(u, None, None, None, None) for u in range(1, users + 1)],
        movies=catalogue.records,
        credits=lambda: _credits(movies, seed),
        rating_blocks=rating_blocks,
        n_ratings=ratings,
        extra={"generator": GENERATOR_VERSION, "seed": seed},
    )


def _validate(users: int, movies: int, ratings: int, seed: int) -> None:
    for label, value, low in (("users", users, 1), ("movies", movies, 1), ("ratings", ratings, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise DatasetError(f"synthetic dataset: {label} must be an integer ≥ {low}, got {value!r}")
    if ratings > users * movies:
        raise DatasetError(
            f"synthetic dataset: {ratings} ratings is impossible with {users} users × {movies} movies "
            f"(each user rates a movie at most once, so at most {users * movies})"
        )


# catalogue -----------------------------------------------------------------------------------


class _Catalogue:
    """Movies and the per-movie arrays the rating generator needs (all O(movies))."""

    def __init__(self, n: int, seed: int) -> None:
        r = np.random.default_rng([seed, 19])
        self.n = n
        # Popularity: rank 0 is the most popular; by_rank[rank] is that movie's id.
        self.by_rank = r.permutation(n).astype(np.int64) + 1
        weight = 1.0 / (np.arange(n) + 1.0 + POPULARITY_OFFSET)
        self.cdf = np.cumsum(weight)
        self.cdf /= self.cdf[-1]
        self.log_weight = np.empty(n)  # by id - 1, for the dense (Gumbel) path
        self.log_weight[self.by_rank - 1] = np.log(weight)
        pop = np.empty(n)
        pop[self.by_rank - 1] = -np.log(np.arange(n) + 1.0 + POPULARITY_OFFSET)
        pop = (pop - pop.mean()) / (pop.std() or 1.0)
        # Quality: popular films are rated a little higher, as in MovieLens.
        self.quality = r.normal(0.0, QUALITY_SD, n) + POPULARITY_LIFT * pop
        # Centred on what gets rated (popularity-weighted), so the star mix drifts little with the shape.
        self.quality -= float(np.exp(self.log_weight) @ self.quality) / float(np.exp(self.log_weight).sum())
        # Release: years skewed recent (Beta(3,1): ~45 % before 1996); a day inside the year.
        years = FIRST_YEAR + np.minimum((r.beta(3.0, 1.0, n) * (LAST_YEAR - FIRST_YEAR + 1)).astype(np.int64), 99)
        year_start = np.array([_year_start(y) for y in range(FIRST_YEAR, LAST_YEAR + 2)], dtype=np.int64)
        days_in_year = (year_start[years - FIRST_YEAR + 1] - year_start[years - FIRST_YEAR]) // DAY
        self.release = year_start[years - FIRST_YEAR] + (r.random(n) * days_in_year).astype(np.int64) * DAY
        self.release_sorted = np.sort(self.release)
        # Popularity mass already released by time t: searchsorted(release_sorted, t) → mass.
        by_release = np.argsort(self.release, kind="stable")
        self.mass_released = np.concatenate(([0.0], np.cumsum(np.exp(self.log_weight[by_release]))))
        self.mass_released /= self.mass_released[-1]
        self.records = [
            MovieRecord(i + 1, title, int(years[i]), genres)
            for i, (title, genres) in enumerate(zip(_titles(r, n), _genres(r, n), strict=True))
        ]


def _year_start(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp())


def _genres(r: np.random.Generator, n: int) -> list[tuple[str, ...]]:
    """1–3 distinct genres per movie, weighted; Gumbel top-3 samples them all at once."""
    log_w = np.log(np.array([GENRE_WEIGHTS[g] for g in GENRES], dtype=float))
    top3 = np.argsort(-(log_w + r.gumbel(size=(n, len(GENRES)))), axis=1)[:, :3]
    how_many = r.choice(3, size=n, p=[0.45, 0.35, 0.20]) + 1
    return [tuple(GENRES[g] for g in sorted(row[:k])) for row, k in zip(top3.tolist(), how_many.tolist(), strict=True)]


def _titles(r: np.random.Generator, n: int) -> list[str]:
    picks = r.integers(0, 1 << 30, size=(n, 4)).tolist()
    pattern = r.choice(8, size=n, p=[0.25, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05]).tolist()
    sequel = r.random(n).tolist()
    out = []
    for (a, b, c, d), p, s in zip(picks, pattern, sequel, strict=True):
        adj, noun = _ADJECTIVES[a % len(_ADJECTIVES)], _NOUNS[b % len(_NOUNS)]
        name, place, noun2 = _NAMES[c % len(_NAMES)], _PLACES[c % len(_PLACES)], _NOUNS[d % len(_NOUNS)]
        title = (
            f"The {adj} {noun}",
            f"{adj} {noun}",
            f"The {noun}",
            f"{name}'s {noun}",
            f"{noun} in {place}",
            f"{place} {noun}",
            f"The {noun} of the {adj} {noun2}" if noun2 != noun else f"The {noun} of {place}",
            f"{'An' if noun[0] in 'AEIOU' else 'A'} {noun} for {name}",
        )[p]
        if s < 0.06:  # a few sequels, as catalogues have
            title += (" 2", " 2", " 3", " II")[int(s * 1000) % 4]
        out.append(title)
    return out


# users -----------------------------------------------------------------------------------------


def _activity(users: int, movies: int, ratings: int, seed: int) -> np.ndarray:
    """Ratings per user: minimum + lognormal share, capped at ``movies``, summing to ``ratings``."""
    floor = MIN_RATINGS if ratings >= MIN_RATINGS * users else (1 if ratings >= users else 0)
    extra_total, cap = ratings - floor * users, movies - floor  # cap ≥ 0: validated total ≤ users × movies
    weight = np.random.default_rng([seed, 21]).lognormal(0.0, ACTIVITY_SIGMA, users)
    share = np.zeros(users)
    if extra_total > 0:
        # Water-filling: users whose share passes the cap get exactly the cap, the rest is
        # re-spread over the others in proportion to their weight. Terminates: ≥ 1 user capped per round.
        capped = np.zeros(users, dtype=bool)
        while True:
            budget = extra_total - cap * int(capped.sum())
            free = ~capped
            if not free.any():  # everyone at the cap: ratings == users × movies
                share = np.full(users, float(cap))
                break
            share = np.where(capped, float(cap), budget * weight / weight[free].sum())
            over = free & (share > cap)
            if not over.any():
                break
            capped |= over
    counts = np.minimum(np.floor(share).astype(np.int64), cap)
    short = extra_total - int(counts.sum())
    order = np.argsort(-weight, kind="stable")  # most active first
    while short > 0:  # floor() left < users units; they go to the most active users with room
        room = order[counts[order] < cap][:short]
        assert len(room), "no user has room left although the total was validated"
        counts[room] += 1
        short -= len(room)
    counts += floor
    assert int(counts.sum()) == ratings and int(counts.max(initial=0)) <= movies
    return counts


# ratings ---------------------------------------------------------------------------------------


class _Sampler:
    """Weighted sampling of k distinct movies, all released by a given time.

    Sparse path, O(k log k) rather than O(movies): draw with replacement from the popularity
    CDF (``searchsorted``), drop unreleased movies, keep each movie's first occurrence in draw
    order, and draw again for what is missing (sized from the yield so far). The first k
    distinct movies of an i.i.d. weighted stream are exactly a sequential weighted draw
    without replacement. When k is a large share of what is available (heavy users, small
    catalogues) repeats make that slow, so the dense path uses Gumbel top-k over all movies,
    the same distribution in O(movies); it also finishes a sparse draw that is slow to fill.
    """

    def __init__(self, catalogue: _Catalogue) -> None:
        self.c = catalogue

    def sample(self, r: np.random.Generator, k: int, released_by: int) -> np.ndarray:
        c = self.c
        available = int(np.searchsorted(c.release_sorted, released_by, side="right"))
        mass = float(c.mass_released[available])
        if k > DENSE_FRACTION * available:
            return self._dense(r, k, released_by, np.empty(0, dtype=np.int64))
        chosen = np.empty(0, dtype=np.int64)
        draws, ratio = 0, 1.25
        for _ in range(6):
            need = k - len(chosen)
            n = int(need * ratio / mass) + 16
            ranks = np.minimum(np.searchsorted(c.cdf, r.random(n), side="right"), c.n - 1)
            ids = c.by_rank[ranks]
            ids = ids[c.release[ids - 1] <= released_by]
            _, first = np.unique(ids, return_index=True)
            fresh = ids[np.sort(first)]
            if len(chosen):
                fresh = fresh[~np.isin(fresh, chosen, assume_unique=True)]
            chosen = np.concatenate((chosen, fresh[:need]))
            if len(chosen) == k:
                return chosen
            draws += n
            ratio = 1.25 * draws * mass / max(len(chosen), 1)  # draws per new movie so far, with margin
        return np.concatenate((chosen, self._dense(r, k - len(chosen), released_by, chosen)))

    def _dense(self, r: np.random.Generator, k: int, released_by: int, exclude: np.ndarray) -> np.ndarray:
        c = self.c
        keys = c.log_weight + r.gumbel(size=c.n)
        keys[c.release > released_by] = -np.inf
        keys[exclude - 1] = -np.inf
        top = np.argpartition(-keys, k - 1)[:k] if k < c.n else np.arange(c.n)
        top = top[np.argsort(-keys[top], kind="stable")]  # draw order, like the sparse path
        return top.astype(np.int64) + 1


def _user_ratings(c: _Catalogue, sampler: _Sampler, user_id: int, k: int, seed: int) -> list[Rating]:
    if k == 0:
        return []
    r = np.random.default_rng([seed, 23, user_id])
    bias = r.normal(0.0, USER_BIAS_SD)
    # Active window: heavier raters stay longer (median 3 days at 20 ratings, ~9 months at 5000).
    span = SPAN_END - SPAN_START
    length = min(float(span), DAY * 3.0 * (k / MIN_RATINGS) ** 0.8 * math.exp(r.normal(0.0, 1.5)))
    start = SPAN_START + r.random() * (span - length)
    end = start + length
    # The window must reach a time by which enough movies are out (1.5k keeps sampling cheap).
    ready = int(c.release_sorted[min(c.n, k + k // 2) - 1])
    if end < ready:
        start, end = start + (ready - end), float(ready)
    start_s, end_s = int(start), int(end)
    ids = sampler.sample(r, k, end_s)
    # Sessions: a few dozen ratings each, a few seconds to two hours after the session starts.
    n_sessions = 1 + int(r.poisson(k / 25))
    session_at = start_s + (r.random(n_sessions) * (end_s - start_s)).astype(np.int64)
    ts = session_at[r.integers(0, n_sessions, size=k)] + r.integers(0, 7200, size=k)
    ts = np.minimum(ts, end_s)
    release = c.release[ids - 1]
    early = ts < release  # not before release: move into [release, window end]
    if early.any():
        ts[early] = release[early] + (r.random(int(early.sum())) * (end_s - release[early])).astype(np.int64)
    score = bias + c.quality[ids - 1] + r.normal(0.0, NOISE_SD, k)
    stars = (np.searchsorted(STAR_CUTS, score) + 1).astype(float)
    order = np.lexsort((ids, ts))
    return list(map(Rating, ids[order].tolist(), stars[order].tolist(), ts[order].tolist()))


# credits ---------------------------------------------------------------------------------------


def _credits(movies: int, seed: int) -> Iterator[Credit]:
    """Per movie: ~20 actors, 1 director, 1–2 writers (often the director), 1–2 producers.

    Person ids are ``p:<n>`` from one id space split into role pools (actors, directors,
    writers, producers); within a pool people are reused with power-law frequency,
    weight ∝ 1 / (rank + pool/100): most appear once or twice, the busiest in ~50–90 films
    whatever the catalogue size (the offset scales with the pool to keep that head stable).
    """
    pools = {"ACTED_IN": 5 * movies + 50, "DIRECTED": movies // 2 + 10, "WROTE": movies + 10, "PRODUCED": movies + 10}
    offset, cdfs = {}, {}
    base = 0
    for role, size in pools.items():
        offset[role] = base
        w = np.cumsum(1.0 / (np.arange(size) + max(5.0, size / 100)))
        cdfs[role] = w / w[-1]
        base += size

    def people(r: np.random.Generator, role: str, n: int) -> list[str]:
        cdf = cdfs[role]
        picks = np.minimum(np.searchsorted(cdf, r.random(n), side="right"), len(cdf) - 1)
        return [f"p:{offset[role] + int(p) + 1}" for p in dict.fromkeys(picks.tolist())]

    for movie_id in range(1, movies + 1):
        r = np.random.default_rng([seed, 31, movie_id])
        director = people(r, "DIRECTED", 1)
        writers = people(r, "WROTE", int(r.integers(1, 3)))
        if r.random() < 0.3:  # writer-directors
            writers[0] = director[0]
        for role, who in (
            ("ACTED_IN", people(r, "ACTED_IN", 10 + int(r.poisson(10)))),
            ("DIRECTED", director),
            ("WROTE", list(dict.fromkeys(writers))),
            ("PRODUCED", people(r, "PRODUCED", int(r.integers(1, 3)))),
        ):
            for person in who:
                yield Credit(person, role, movie_id)
