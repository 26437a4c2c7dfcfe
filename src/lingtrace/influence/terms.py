"""The pieces of a gradient inner product whose test side stays resident.

``<g_test, g_train>`` over the selected parameters is a sum of terms, each over some of the
coordinates and each keeping a test chunk's gradients in its own form:

* ``DenseTerm``: the dense parameters, [m, numel] per parameter, one matrix product per parameter
  and a sum per breakdown group;
* ``PairsTerm``: the word-embedding matrix by matching tokens (``sparse_dots``; memory-lean);
* ``VocabTerm``: the word-embedding matrix dense over the test chunk's vocabulary (one more matrix
  product, no host synchronisation: the GPU choice);
* ``SketchTerm``: every coordinate through a CountSketch (``projection.py``), replacing the others.

A term is filled batch by batch (``add``), closed (``seal``) and then scores training batches
(``dots``): the breakdown groups it covers and their sum.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from lingtrace.influence.grads import BatchGrads
from lingtrace.influence.params import WORD_EMBEDDINGS
from lingtrace.influence.projection import CountSketch
from lingtrace.influence.sparse import SparseRows, sparse_dots

#: the group name of a sketched term (no breakdown: every coordinate is mixed into the sketch)
SKETCH = "sketch"


class Term(ABC):
    @abstractmethod
    def add(self, idx: torch.Tensor, g: BatchGrads) -> None:
        """Keep the test gradients of a batch (``idx``: their positions in the chunk)."""

    def seal(self) -> None:
        """Called once every test batch is added."""

    @abstractmethod
    def dots(self, g: BatchGrads) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inner products [B x m] of a training batch with the resident gradients: per group, and their sum."""


class DenseTerm(Term):
    def __init__(self, m: int, numel: dict[str, int], groups: dict[str, list[str]], dtype: torch.dtype, device: torch.device):
        self.groups = groups
        self.mats = {name: torch.empty((m, n), dtype=dtype, device=device) for name, n in numel.items()}

    def add(self, idx, g):
        for name, mat in self.mats.items():
            mat[idx] = g.dense[name]

    def dots(self, g):
        out: dict[str, torch.Tensor] = {}
        total = None
        for group, names in self.groups.items():
            acc = None
            for name in names:
                d = g.dense[name] @ self.mats[name].T
                acc = d if acc is None else acc.add_(d)
            out[group] = acc
            total = acc.clone() if total is None else total.add_(acc)
        return out, total


class PairsTerm(Term):
    def __init__(self, m: int):
        self.m = m
        self.collected: list[tuple[torch.Tensor, SparseRows]] = []
        self.rows: SparseRows | None = None

    def add(self, idx, g):
        self.collected.append((idx, g.rows()))

    def seal(self):
        parts = self.collected
        self.rows = SparseRows(
            torch.cat([idx[e.owner] for idx, e in parts]),
            torch.cat([e.token for _, e in parts]),
            torch.cat([e.rows for _, e in parts]),
            self.m,
        ).sorted_by_token()
        self.collected = []

    def dots(self, g):
        e = sparse_dots(g.rows(), self.rows)
        return {WORD_EMBEDDINGS: e}, e


def _scatter_vocab(g: BatchGrads, slot: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width, H]: each example's position gradients summed into the block of their token's slot
    (slot width - 1 collects tokens outside the vocabulary and padding)."""
    b, t, h = g.emb_pos.shape
    slots = torch.where(g.mask.bool(), slot[g.ids], width - 1)
    flat = (torch.arange(b, device=slots.device)[:, None] * width + slots).reshape(-1)
    out = torch.zeros((b * width, h), dtype=g.emb_pos.dtype, device=g.emb_pos.device)
    out.index_add_(0, flat, g.emb_pos.reshape(-1, h))
    return out.view(b, width, h)


class VocabTerm(Term):
    def __init__(self, m: int, test_ids: list[np.ndarray], vocab_size: int, hidden: int, dtype: torch.dtype, device: torch.device):
        vocab = torch.as_tensor(np.unique(np.concatenate(test_ids)), device=device)
        self.slot = torch.full((vocab_size,), int(vocab.numel()), dtype=torch.long, device=device)
        self.slot[vocab] = torch.arange(vocab.numel(), device=device)
        self.width = int(vocab.numel()) + 1
        self.mat = torch.zeros((m, self.width, hidden), dtype=dtype, device=device)

    @staticmethod
    def bytes_needed(m: int, test_ids: list[np.ndarray], hidden: int, itemsize: int) -> int:
        vocab = len(np.unique(np.concatenate(test_ids))) if test_ids else 0
        return m * (vocab + 1) * hidden * itemsize

    def add(self, idx, g):
        self.mat[idx] = _scatter_vocab(g, self.slot, self.width).to(self.mat.dtype)

    def seal(self):
        m = self.mat.shape[0]
        self.mat = self.mat[:, :-1].reshape(m, -1)  # drop the slot of tokens outside the vocabulary

    def dots(self, g):
        b = len(g.loss)
        e = _scatter_vocab(g, self.slot, self.width)[:, :-1].reshape(b, -1).to(self.mat.dtype) @ self.mat.T
        return {WORD_EMBEDDINGS: e}, e


def project(sketch: CountSketch, g: BatchGrads) -> torch.Tensor:
    """[B, dim] CountSketch of a batch's whole gradients (dense parameters and word-embedding rows)."""
    part = sketch.sketch_dense(g.dense)
    if g.has_emb:
        sketch.sketch_sparse(g.rows(), out=part)
    return part


class SketchTerm(Term):
    def __init__(self, m: int, sketch: CountSketch, dtype: torch.dtype, device: torch.device):
        self.sketch = sketch
        self.mat = torch.zeros((m, sketch.dim), dtype=dtype, device=device)

    def add(self, idx, g):
        self.mat[idx] = project(self.sketch, g).to(self.mat.dtype)

    def dots(self, g):
        s = project(self.sketch, g).to(self.mat.dtype) @ self.mat.T
        return {SKETCH: s}, s
