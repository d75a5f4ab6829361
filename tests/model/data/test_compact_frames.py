"""Compact training frames: repeated values kept once (``SharedValues``), embeddings stored as
a table and an index (``EncodedRows``), frame rows routed to the split's parts by key.

These are what keep the engagement frame's memory near a pointer per row for the title
embedding instead of 384 floats (docs/scale.md, item 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.data.engagement_frame import EncodedRows, shared_rows
from model.data.interactions import Interactions, Split
from model.data.point_in_time import SharedValues
from model.train.engagement import split_frame
from model.train.loop import GatheredRows


def test_repeated_vectors_and_strings_are_kept_once_read_only_float32() -> None:
    shared = SharedValues()
    out = shared.column([[1.0, 2.0], None, [1.0, 2.0], "Paris", "Paris", np.array([1.0, 2.0])])
    assert out[0] is out[2] is out[5]
    assert out[0].dtype == np.float32 and not out[0].flags.writeable
    assert out[1] is None
    assert out[3] is out[4]
    later = shared.column([[1.0, 2.0]])  # across chunks too
    assert later[0] is out[0]


def test_a_column_of_distinct_values_stops_pooling_and_keeps_its_values() -> None:
    shared = SharedValues()
    out = shared.column([[float(i), 1.0] for i in range(10)])
    assert not shared.pooling and not shared.pool
    assert [float(v[0]) for v in out] == [float(i) for i in range(10)]
    assert all(v.dtype == np.float32 and not v.flags.writeable for v in out)
    again = shared.column([[0.0, 1.0], [0.0, 1.0]])
    assert again[0] is not again[1] and np.array_equal(again[0], again[1])


def test_each_distinct_embedding_object_is_one_table_row() -> None:
    a, b = np.array([1.0, 2.0], dtype=np.float32), np.array([3.0, 4.0], dtype=np.float32)
    table, index = shared_rows([a, None, a, b, float("nan")], dim=2)
    assert table.shape == (3, 2) and np.array_equal(table[0], [0.0, 0.0])
    assert index.tolist() == [1, 0, 1, 2, 0]
    rows = EncodedRows({"numeric": torch.arange(5.0).unsqueeze(1)}, torch.from_numpy(table), torch.from_numpy(index))
    batch = rows.take(torch.tensor([3, 0]))
    assert batch["embedding"].tolist() == [[3.0, 4.0], [1.0, 2.0]]
    assert batch["numeric"].tolist() == [[3.0], [0.0]]
    assert len(rows) == 5 and rows.take(slice(None))["embedding"].shape == (5, 2)
    gathered = GatheredRows(rows, ["embedding", "numeric"], [torch.arange(5) * 10])[[4, 2]]
    assert [t.tolist() for t in gathered] == [[[0.0, 0.0], [1.0, 2.0]], [[4.0], [2.0]], [40, 20]]


def _part(users: list[int], movies: list[int], ts: list[int]) -> Interactions:
    return Interactions(np.array(users), np.array(movies), np.full(len(users), 4.0, dtype=np.float32),
                        np.array(ts, dtype=np.int64), np.array([10, 20, 30]), np.array([100, 200]))  # fmt: skip


def test_frame_rows_go_to_their_part_in_order_and_rows_outside_the_split_are_dropped() -> None:
    split = Split("time", _part([0, 1], [0, 0], [5, 6]), _part([2], [1], [7]), _part([0], [1], [9]))
    frame = pd.DataFrame(
        {
            "user_id": [30, 10, 10, 20, 10],
            "movie_id": [200, 200, 100, 100, 100],
            "event_timestamp": pd.to_datetime([7, 9, 5, 6, 3], unit="s", utc=True),  # 10/100 at 3: outside
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    parts = split_frame(frame, split)
    assert parts["train"]["rating"].tolist() == [3.0, 4.0]
    assert parts["valid"]["rating"].tolist() == [1.0]
    assert parts["test"]["rating"].tolist() == [2.0]


def test_a_kept_value_owns_its_memory_not_a_view_of_the_chunk() -> None:
    chunk = np.arange(12, dtype=np.float32).reshape(3, 4)  # as Feast's rows: views into one buffer
    out = SharedValues().column([chunk[0], chunk[1], chunk[0].copy()])
    assert all(v.base is None for v in out)
    assert out[0] is out[2]
