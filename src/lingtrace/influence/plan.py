"""How the work is cut and where finished work goes: ``Plan``, ``Part`` and the ``Sink`` protocol.

The engine produces parts and hands them to a sink; the on-disk store is one sink, ``MemorySink``
another. Both depend on this module, not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: name of the (normalised) score matrix of a part and of an epoch file
SCORES = "scores"
#: prefix of the breakdown matrices: "group.<parameter group>"
GROUP_PREFIX = "group."


@dataclass
class Plan:
    """How the work is cut: test chunks (rows) and training shards (columns); each (checkpoint,
    chunk, shard) is one unit of work, written as one part and resumable on its own."""

    chunks: list[tuple[int, int]]
    shards: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"chunks": [list(c) for c in self.chunks], "shards": [list(s) for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls([tuple(c) for c in d["chunks"]], [tuple(s) for s in d["shards"]])

    @staticmethod
    def cut(n: int, size: int) -> list[tuple[int, int]]:
        size = max(1, int(size))
        return [(a, min(n, a + size)) for a in range(0, n, size)] or [(0, 0)]

    def units(self, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """The (chunk, shard) units rank ``rank`` of ``world`` owns: the shards s with s % world == rank."""
        return [(c, s) for c in range(len(self.chunks)) for s in range(len(self.shards)) if s % world == rank]


@dataclass
class Part:
    """The scores of one unit: matrices [chunk rows x shard columns] and the feature norms."""

    epoch: int
    chunk: int
    shard: int
    matrices: dict[str, np.ndarray]
    test_norm: np.ndarray
    train_norm: np.ndarray


class Sink(Protocol):
    """Where the engine puts finished parts.

    ``plan`` is a saved plan to follow (None: the engine plans and calls ``begin``); ``is_done`` says
    whether a unit is already held (resumption); ``epoch_done`` is called after a checkpoint's units of
    this rank are finished.
    """

    plan: Plan | None

    def begin(self, plan: Plan) -> None: ...

    def is_done(self, epoch: int, chunk: int, shard: int) -> bool: ...

    def put(self, part: Part) -> None: ...

    def epoch_done(self, epoch: int) -> None: ...


class MemorySink:
    """Collects parts into in-memory matrices (the API without a store directory)."""

    def __init__(self, n_test: int, n_train: int):
        self.n_test, self.n_train = n_test, n_train
        self.plan: Plan | None = None
        self.mats: dict[int, dict[str, np.ndarray]] = {}
        self.test_norm: dict[int, np.ndarray] = {}
        self.train_norm: dict[int, np.ndarray] = {}

    def begin(self, plan: Plan) -> None:
        self.plan = plan

    def is_done(self, epoch: int, chunk: int, shard: int) -> bool:
        return False

    def put(self, part: Part) -> None:
        assert self.plan is not None
        (r0, r1), (c0, c1) = self.plan.chunks[part.chunk], self.plan.shards[part.shard]
        mats = self.mats.setdefault(part.epoch, {})
        for name, m in part.matrices.items():
            if name not in mats:
                mats[name] = np.zeros((self.n_test, self.n_train), dtype=m.dtype)
            mats[name][r0:r1, c0:c1] = m
        self.test_norm.setdefault(part.epoch, np.zeros(self.n_test))[r0:r1] = part.test_norm
        self.train_norm.setdefault(part.epoch, np.zeros(self.n_train))[c0:c1] = part.train_norm

    def epoch_done(self, epoch: int) -> None:
        pass
