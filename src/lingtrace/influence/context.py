"""What the engine hands a method: the checkpoints it sums over and, at each, the loaded model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lingtrace.influence.params import TrackedParams
from lingtrace.objectives import Batch, Examples, Objective


@dataclass
class Checkpoint:
    """One checkpoint: ``source`` is what the model factory takes (a directory, a state dict),
    ``epoch`` its label in the store, ``lr`` its learning rate (``dot`` weighting), ``final`` whether it
    is the final model (the one used downstream)."""

    source: Any
    epoch: int
    lr: float | None = None
    final: bool = False


@dataclass
class CheckpointContext:
    """A loaded checkpoint: the model in eval mode on ``device`` in ``dtype``, its tracked parameters
    (None for methods that take no gradients), the objective, and the sizes planning needs."""

    checkpoint: Checkpoint
    model: torch.nn.Module
    tracked: TrackedParams | None
    objective: Objective
    device: torch.device
    dtype: torch.dtype  # parameters and accumulation (float32 or float64)
    autocast: torch.dtype | None  # bf16/fp16 autocast of the passes (CUDA), else None
    hidden: int  # width of the input word embeddings
    batch_size: int
    #: the training examples, for methods fitted on them at each checkpoint (None when only planning)
    train: Examples | None = None
    #: stream(examples, desc) -> (positions, batch) on the device, batched and counted as the engine does
    stream: Callable[[Examples, str], Iterator[tuple[torch.Tensor, Batch]]] | None = None
    #: mean tokens per example over the training and test examples (None when not known)
    avg_tokens: float | None = None
    #: test examples being scored (None when not known)
    n_test: int | None = None

    @property
    def epoch(self) -> int:
        return self.checkpoint.epoch

    @property
    def itemsize(self) -> int:
        return torch.finfo(self.dtype).bits // 8
