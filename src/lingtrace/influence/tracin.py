"""The TracIn Python API: a facade over the engine (``engine.py``) and the ``tracin`` method.

Public API::

    tracin = TracIn(load_model, ["ckpt/epoch-1", "ckpt/epoch-2"], mode="cosine")
    result = tracin.scores(train_examples, test_examples)   # Examples, or DataFrames + tokenizer
    result.total            # [test x train] summed over checkpoints
    result.per_epoch[1]     # [test x train] of the first checkpoint

    tracin.run(train_examples, test_examples, sink)          # into a sink, e.g. a resumable StoreWriter

Engine errors come out as ``LingtraceError`` (problem and fix), as from the CLI. The other methods
(``adam-cosine``, ``representation``) run through ``Engine`` with their estimator; see
``influence.methods``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lingtrace.config.influence import MODES, InfluenceOptions, Tuning
from lingtrace.influence.advice import user_error
from lingtrace.influence.context import Checkpoint
from lingtrace.influence.engine import Engine
from lingtrace.influence.errors import ENGINE_ERRORS
from lingtrace.influence.memory import available_memory
from lingtrace.influence.methods.tracin import TracInEstimator
from lingtrace.influence.plan import GROUP_PREFIX, SCORES, MemorySink, Part, Plan
from lingtrace.objectives import Examples

__all__ = [
    "MODES",
    "Examples",
    "MemorySink",
    "Part",
    "Plan",
    "TracIn",
    "TracInResult",
    "available_memory",
    "checkpoint_factory",
    "default_pad_id",
]

log = logging.getLogger(__name__)


@dataclass
class TracInResult:
    """Scores of every test example (rows) for every training example (columns)."""

    per_epoch: dict[int, np.ndarray]
    groups: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    test_norm: dict[int, np.ndarray] = field(default_factory=dict)
    train_norm: dict[int, np.ndarray] = field(default_factory=dict)
    train_uids: list[str] = field(default_factory=list)
    test_uids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> np.ndarray:
        return sum(np.asarray(m, dtype=np.float64) for m in self.per_epoch.values())

    @classmethod
    def from_sink(cls, sink: MemorySink, epochs: list[int], train: Examples, test: Examples, stats: dict[str, Any]) -> TracInResult:
        return cls(
            per_epoch={e: sink.mats[e][SCORES] for e in epochs},
            groups={e: {k[len(GROUP_PREFIX) :]: v for k, v in sink.mats[e].items() if k.startswith(GROUP_PREFIX)} for e in epochs},
            test_norm=dict(sink.test_norm),
            train_norm=dict(sink.train_norm),
            train_uids=list(train.uids),
            test_uids=list(test.uids),
            stats=dict(stats),
        )


class TracIn:
    """TracIn influence of training examples on test examples over a list of checkpoints.

    ``model_factory(checkpoint)`` returns the model of a checkpoint (any Hugging Face sequence
    classifier; parameters with ``requires_grad=False`` are treated as frozen during training and
    left out unless ``trainable_only=False``). ``checkpoints`` are whatever the factory takes (paths,
    state dicts); ``epochs`` labels them (default 1..E). ``lr`` gives one learning rate per checkpoint
    for ``dot`` mode weighting. The keyword options are ``InfluenceOptions`` fields (``mode``,
    ``params``, ``breakdown``, ``batch_size``, ``test_chunk``, ``device``, ``dtype``,
    ``projection_dim``, ``projection_seed``) and ``Tuning`` fields (``trainable_only``, ``shard_size``,
    ``sort_by_length``, ``embedding_method``, ``profile``, ``memory_fraction``, ``show_progress``);
    ``objective`` the loss (default: sequence classification).
    """

    def __init__(
        self,
        model_factory: Callable[[Any], torch.nn.Module],
        checkpoints: Sequence[Any],
        *,
        epochs: Sequence[int] | None = None,
        lr: Sequence[float] | None = None,
        device: str | torch.device = "auto",
        breakdown: bool = False,
        objective=None,
        **options: Any,
    ):
        tuning_keys = set(Tuning.__dataclass_fields__)
        tuning = Tuning(**{k: options.pop(k) for k in list(options) if k in tuning_keys})
        options["params"] = list(options.get("params") or [])
        opts = InfluenceOptions(breakdown=breakdown, lr_weighted=lr is not None, **options)
        try:
            opts.validate()
            epochs = list(epochs) if epochs is not None else list(range(1, len(checkpoints) + 1))
            if len(epochs) != len(checkpoints):
                raise ValueError("epochs and checkpoints differ in length")
            if lr is not None and len(lr) != len(checkpoints):
                raise ValueError("lr needs one learning rate per checkpoint")
            points = [Checkpoint(source, e, None if lr is None else float(lr[i])) for i, (source, e) in enumerate(zip(checkpoints, epochs))]
            if breakdown and opts.projection_dim is not None:
                log.warning("the per-group breakdown is not available with a random projection; storing totals only")
            self.engine = Engine(TracInEstimator(opts, tuning), model_factory, points, opts, tuning, objective=objective, device=device)
        except ENGINE_ERRORS as e:
            raise user_error(e) from e
        self.options, self.tuning = opts, tuning

    @property
    def stats(self) -> dict[str, Any]:
        return self.engine.stats

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def epochs(self) -> list[int]:
        return self.engine.epochs

    @property
    def tracked(self):
        return self.engine.tracked

    def make_plan(self, train: Examples, test: Examples, world: int = 1) -> Plan:
        """The plan for these examples (loads the first checkpoint to size the gradients)."""
        try:
            return self.engine.make_plan(train, test, world)
        except ENGINE_ERRORS as e:
            raise user_error(e) from e

    def run(self, train: Examples, test: Examples, sink, pad_id: int | None = None, rank: int = 0, world: int = 1) -> Plan:
        """Compute every unit that ``sink`` (a ``MemorySink``, a ``StoreWriter``) does not hold yet;
        ``pad_id`` defaults to the model's. See ``Engine.run``."""
        try:
            return self.engine.run(train, test, sink, pad_id, rank=rank, world=world)
        except ENGINE_ERRORS as e:
            raise user_error(e) from e

    def scores(self, train, test, tokenizer=None, max_length: int = 128, prefix: str = "", pad_id: int | None = None) -> TracInResult:
        """Scores in memory. ``train``/``test``: ``Examples``, or DataFrames tokenised with ``tokenizer``."""
        try:
            train_ex = train if isinstance(train, Examples) else Examples.from_frame(train, tokenizer, max_length, prefix)
            test_ex = test if isinstance(test, Examples) else Examples.from_frame(test, tokenizer, max_length, prefix)
        except ENGINE_ERRORS as e:
            raise user_error(e) from e
        if pad_id is None and tokenizer is not None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
        sink = MemorySink(len(test_ex), len(train_ex))
        self.run(train_ex, test_ex, sink, pad_id)
        return TracInResult.from_sink(sink, self.epochs, train_ex, test_ex, self.stats)


def default_pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def checkpoint_factory(freeze_embeddings: bool = False) -> Callable[[Any], torch.nn.Module]:
    """A model factory for checkpoint directories written by ``save_pretrained``."""

    def load(path):
        from lingtrace.models.loading import freeze_word_embeddings, load_checkpoint

        model, _ = load_checkpoint(Path(path), with_tokenizer=False)
        if freeze_embeddings:
            freeze_word_embeddings(model)
        return model

    return load
