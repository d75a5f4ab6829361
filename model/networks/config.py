"""What the networks share: checkpointable dataclass configs and the catalogue-ranker protocol.

Catalogue rankers (``TwoTowerRetriever``, ``MostPopular``, ``BPRMF``) share
``score_all(user_ids) -> (batch, n_items)`` so evaluation treats them alike.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, Self

from torch import Tensor


class FullRanker(Protocol):
    """Anything that scores every catalogue item for a batch of users."""

    def score_all(self, user_ids: Tensor) -> Tensor: ...


class DictConfig:
    """``to_dict``/``from_dict`` for checkpointing dataclass configs."""

    # Subclasses are dataclasses; declaring the attribute tells the type checker so.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:  # a typo or a newer checkpoint: fail loudly, never drop silently
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**copy.deepcopy(dict(data)))
