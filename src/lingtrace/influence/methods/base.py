"""The protocol every influence method implements, and what the engine gets back from it.

The engine (``influence/engine.py``) owns the loop: checkpoints outermost (each loaded once), test
examples in chunks whose features stay resident, training examples streamed in batches; planning,
timing, resumption, sharding across ranks and the sink are its. A method answers:

* which checkpoints it sums over (``select_checkpoints``; default all) and whether it can run on them
  at all (``check``, before any work);
* what to prepare at a checkpoint (``prepare``: e.g. read the optimizer's second moments);
* how much memory one test example's resident features and one training example's transient
  features take (``memory``, for planning);
* the per-example features of a batch (``featurise``: gradients, preconditioned gradients, hidden
  states), the resident form of a test chunk's features (``resident``) and the normalised scores of a
  training batch against them (``score``);
* optionally, how many training examples it scores in one call (``size_block`` with the memory left
  once the test chunk is resident, then ``product_rows``): the engine then hands it several batches'
  features at once (``featurise_train`` per batch, ``score_many`` per block), so that a method can
  make one large product of them instead of one per batch;
* what to release at the end of a checkpoint (``finish``).

Per checkpoint the engine stores the matrices ``outputs()`` names ([test x train] each, ``scores``
first) and the feature norms; the summed score is the sum over checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence.context import Checkpoint, CheckpointContext
from lingtrace.influence.plan import SCORES
from lingtrace.objectives import Batch, Examples


@dataclass
class Memory:
    """Bytes one test example's resident features take, and one training example's transient ones."""

    per_test: float
    per_train: float


@dataclass
class Resident:
    """A test chunk's features kept on the device; ``test_norm`` [m] (float64) is stored with each part."""

    test_norm: torch.Tensor


@dataclass
class BlockScores:
    """Normalised scores of a training batch against the resident chunk: [B x m] per output, and the
    training examples' feature norms [B] (float64)."""

    matrices: dict[str, torch.Tensor]
    train_norm: torch.Tensor


def inverse(x: torch.Tensor) -> torch.Tensor:
    """1 / x where x > 0, else 0 (a zero feature scores 0 against everything)."""
    return torch.where(x > 0, 1.0 / x, torch.zeros_like(x))


def cosine_(matrix: torch.Tensor, train_norm: torch.Tensor, test_norm: torch.Tensor) -> torch.Tensor:
    """Divide [B x m] inner products in place by the training (rows) and test (columns) norms."""
    return matrix.mul_(inverse(train_norm).to(matrix.dtype)[:, None]).mul_(inverse(test_norm).to(matrix.dtype)[None, :])


class Estimator(ABC):
    """One influence method (see the module docstring). Subclasses set ``name`` and register in
    ``methods/__init__.py``."""

    name: ClassVar[str]
    #: InfluenceOptions keys that do not change this method's scores: left out of its store's fingerprint
    ignores: ClassVar[frozenset[str]] = frozenset()
    #: whether the engine selects parameters (``ctx.tracked``) for it
    needs_parameters: ClassVar[bool] = True
    #: stats names: seconds ``test_<feature>`` / ``train_<feature>``, count ``<pass_kind>_passes``
    feature: ClassVar[str] = "gradients"
    pass_kind: ClassVar[str] = "gradient"

    def __init__(self, options: InfluenceOptions, tuning: Tuning | None = None):
        self.options = options
        self.tuning = tuning or Tuning()

    # -- what the store records ---------------------------------------------------
    @property
    def mode(self) -> str:
        """The normalisation the scores carry (meta.json ``mode``)."""
        return "cosine"

    @property
    def lr_weighted(self) -> bool:
        """Whether each checkpoint's scores are weighted by its learning rate (meta.json ``lr_weighted``)."""
        return False

    @property
    def breakdown(self) -> bool:
        return False

    def projection(self) -> dict[str, Any] | None:
        return None

    def describe(self) -> dict[str, Any]:
        """Method-specific facts for meta.json (``method_info``)."""
        return {}

    def identity(self) -> dict[str, Any]:
        """What the scores depend on beyond the config keys, for the store's fingerprint: a default that
        changed between lingtrace versions (a store made under the old one is then recomputed under
        ``--overwrite``, not taken for the new one). Default: nothing."""
        return {}

    def bind_store(self, directory: Path, fingerprint: str) -> None:
        """The store this estimator fills and its fingerprint (the stage calls this before the run): a
        method may keep resumable work files under ``directory`` (ekfac: its factors). Default: unused."""

    # -- the protocol -----------------------------------------------------------
    def select_checkpoints(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        """The checkpoints this method sums over (default: all it is given)."""
        return checkpoints

    def check(self, checkpoints: list[Checkpoint]) -> None:
        """Raise an ``InfluenceError`` now if the method cannot run on these checkpoints."""

    @abstractmethod
    def prepare(self, ctx: CheckpointContext) -> None:
        """Set up for a checkpoint (the model is loaded)."""

    @abstractmethod
    def memory(self, avg_tokens: float) -> Memory:
        """Memory per test and per training example at the prepared checkpoint."""

    def outputs(self) -> list[str]:
        """Names of the matrices per part, ``scores`` first."""
        return [SCORES]

    @abstractmethod
    def featurise(self, batch: Batch) -> Any:
        """Per-example features of a batch (on the device)."""

    @abstractmethod
    def resident(self, chunk: Examples, features: Iterator[tuple[torch.Tensor, Any]]) -> Resident:
        """The resident form of a test chunk's features; ``features`` yields (positions in the chunk, features)."""

    @abstractmethod
    def score(self, resident: Resident, features: Any) -> BlockScores:
        """Normalised scores of a training batch's features against the resident chunk."""

    # -- optional: scoring several training batches at once ------------------------
    #: training examples scored in one ``score_many`` call (None: one batch at a time)
    product_rows: int | None = None

    def size_block(self, free_bytes: float) -> None:
        """Memory ``free_bytes`` is left at this checkpoint once the test chunk is resident: a method may
        set ``product_rows`` from it (default: one batch at a time)."""

    def featurise_train(self, batch: Batch) -> Any:
        """The features of a training batch (default: ``featurise``); a blocking method may gather them."""
        return self.featurise(batch)

    def score_many(self, resident: Resident, features: list[Any]) -> BlockScores:
        """Scores of several training batches, rows in their order (default: ``score`` each)."""
        if len(features) == 1:
            return self.score(resident, features[0])
        blocks = [self.score(resident, f) for f in features]
        mats = {k: torch.cat([b.matrices[k] for b in blocks]) for k in blocks[0].matrices}
        return BlockScores(mats, torch.cat([b.train_norm for b in blocks]))

    def finish(self) -> None:
        """Release what ``prepare`` set up."""
