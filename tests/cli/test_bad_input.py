"""Bad input gets a clear one-line error and leaves nothing half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sources.datasets import movielens as datasets
from sources.datasets.movielens import Dataset, Rating, movielens_100k, recbole_ml100k_dir
from sources.errors import DatasetError, IngestError
from sources.ingest import IngestReport, ingest, store_counts
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores


@pytest.fixture
def ml_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    shutil.copytree(recbole_ml100k_dir(), folder)
    return folder


def test_missing_dataset_file_is_named(ml_copy: Path) -> None:
    (ml_copy / "ml-100k.kg").unlink()
    with pytest.raises(DatasetError, match=r"dataset file missing: .*ml-100k\.kg"):
        movielens_100k(ml_copy)


def test_corrupt_dataset_file_is_named(ml_copy: Path) -> None:
    path = ml_copy / "ml-100k.inter"
    data = bytearray(path.read_bytes())
    data[1000] = ord("9") if data[1000] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"corrupt \(checksum mismatch\): .*ml-100k\.inter"):
        movielens_100k(ml_copy)


def _marquee(args: list[str], settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MARQUEE_DATA_DIR": str(settings.data_dir), "MARQUEE_CONNECT_TIMEOUT_S": "2", **env}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "uri", "store"),
    [
        ("MARQUEE_PG_DSN", "postgresql://marquee:s3cret-pw@127.0.0.1:1/marquee", "PostgreSQL"),
        ("MARQUEE_MONGO_URI", "mongodb://marquee:s3cret-pw@127.0.0.1:1/", "MongoDB"),
        ("MARQUEE_GRAPH_URI", "bolt://neo4j:s3cret-pw@127.0.0.1:1", "Neo4j"),
    ],
)
def test_unreachable_store_is_one_clear_line(
    loaded: IngestReport, settings: Settings, variable: str, uri: str, store: str
) -> None:
    result = _marquee(["ingest", "--quiet"], settings, **{variable: uri})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and store in lines[0] and "does not answer" in lines[0]
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_missing_movielens_dir_is_one_clear_line(tmp_path: Path, loaded: IngestReport, settings: Settings) -> None:
    result = _marquee(["ingest", "--movielens-dir", str(tmp_path), "--quiet"], settings)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: dataset file missing: {tmp_path / 'ratings.csv'}"


class _Exploding(Dataset):
    """ML-100K whose rating stream fails part-way, as a crash or a bad file would."""

    @classmethod
    def wrap(cls, inner: Dataset, after_users: int) -> Dataset:
        def blocks() -> Iterator[tuple[int, list[Rating]]]:
            for i, block in enumerate(inner.rating_blocks()):
                if i == after_users:
                    raise ValueError("simulated failure half-way through the ratings")
                yield block

        return Dataset(inner.name, inner.fingerprint + "-x", inner.users, inner.movies, inner.credits, blocks,
                       inner.n_ratings)  # fmt: skip


def _leftovers(stores: Stores) -> list[str]:
    live = set(mongo.live_names(stores.mongo).values())
    ours = tuple(f"{name}__" for name in mongo.LOGICAL)
    return [n for n in stores.mongo.list_collection_names() if n.startswith(ours) and n not in live]


def test_failed_ingest_leaves_every_store_as_it_was(loaded: IngestReport, stores: Stores, ml100k: Dataset) -> None:
    before = store_counts(stores)
    with pytest.raises(IngestError, match="stores unchanged: simulated failure"):
        ingest(stores, _Exploding.wrap(ml100k, after_users=400), quiet=True)
    assert store_counts(stores) == before
    assert _leftovers(stores) == []
    assert stores.graph.discard_staging() is False  # no staging graph was left
    with stores.pg.connect() as conn:
        status = conn.execute(text("SELECT status FROM ingest_runs ORDER BY id DESC LIMIT 1")).scalar_one()
    assert status == "failed"


def test_half_finished_earlier_run_is_cleaned_up(
    loaded: IngestReport, stores: Stores, ml100k: Dataset, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store_counts(stores)
    # What a process killed mid-load leaves: a 'running' row, a staged collection, a staging graph.
    with stores.pg.begin() as conn:
        conn.execute(text("INSERT INTO ingest_runs (dataset, fingerprint, status) VALUES ('x', 'x', 'running')"))
    stores.mongo["reviews__999999"].insert_one({"user_id": 1})
    from sources.stores.graph import open_graph

    staging = open_graph(stores.endpoints.graph_uri, f"{settings.graph_name}__staging")
    staging.write("CREATE (:User {id: -1})")
    staging.close()

    report = ingest(stores, ml100k, seed=settings.seed, quiet=True)
    assert report.skipped  # the real data was complete; only the leftovers go
    assert "did not finish" in capsys.readouterr().err
    assert _leftovers(stores) == []
    assert stores.graph.discard_staging() is False
    assert store_counts(stores) == before
    with stores.pg.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ingest_runs WHERE status = 'running'")).scalar_one() == 0


def test_movielens_csv_layout(tmp_path: Path) -> None:
    """--movielens-dir: the ml-25m CSV layout loads through the same path (own stores)."""
    folder = tmp_path / "ml-mini"
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n3,Unknown Year,(no genres listed)\n'
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,1147880044\n1,2,3.5,1147868817\n2,1,5.0,1141415820\n"
        "2,3,2.5,1141415900\n3,2,4.5,1439472215\n"
    )
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,pixar,1147880044\n")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2,0112346,9087\n3,0000001,\n")
    dataset = datasets.movielens_csv(folder)
    blocks = list(dataset.rating_blocks())
    assert [u for u, _ in blocks] == [1, 2, 3]
    assert [r.movie_id for r in blocks[0][1]] == [2, 1]  # time order within a user
    assert dataset.movies[1].title == "American President, The" and dataset.movies[1].year == 1995
    assert dataset.movies[0].imdb_id == "tt0114709"

    from sources import migrate as migrations
    from sources.stores.embedded import EmbeddedStores

    settings = Settings(data_dir=tmp_path / "data")
    try:
        with Stores.open(settings) as own:
            migrations.upgrade(own.pg)
            report = ingest(own, dataset, quiet=True)
            assert report.counts["pg.users"] == 3 and report.counts["pg.movies"] == 3
            assert report.counts["mongo.reviews"] == 5 and report.counts["graph.edge.RATED"] == 5
            with own.pg.connect() as conn:
                ages = conn.execute(text("SELECT age FROM users ORDER BY id")).scalars().all()
            assert all(a is not None for a in ages)  # generated demographics
    finally:
        EmbeddedStores(settings.data_dir).stop_all()

    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n2,1,4.0,1\n1,1,4.0,1\n")
    with pytest.raises(DatasetError, match="not sorted by userId"):
        list(datasets.movielens_csv(folder).rating_blocks())
