"""The pieces of a gradient inner product whose test side stays resident.

``<g_test, g_train>`` over the selected parameters is a sum of terms, each over some of the
coordinates and each keeping a test chunk's gradients in its own form:

* ``DenseTerm``: the dense parameters, [m, numel] per parameter, one matrix product per parameter
  and a sum per breakdown group;
* ``PairsTerm``: the word-embedding matrix by matching tokens (``sparse_dots``; memory-lean);
* ``VocabTerm``: the word-embedding matrix dense over the test chunk's vocabulary (one more matrix
  product, no host synchronisation: the GPU choice);
* ``FactoredTerm``: ``nn.Linear`` weights kept as their positions' factors (``grads.LinearFactors``),
  the inner product as a sum over position pairs (two matrix products per layer, no materialised
  gradient);
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


def sum_groups(groups: dict[str, list[str]], dot) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per breakdown group the sum of ``dot(name)`` ([B x m]) over its parameters, and the total."""
    out: dict[str, torch.Tensor] = {}
    total = None
    for group, names in groups.items():
        acc = None
        for name in names:
            d = dot(name)
            acc = d if acc is None else acc.add_(d)
        out[group] = acc
        total = acc.clone() if total is None else total.add_(acc)
    return out, total


def restrict_groups(groups: dict[str, list[str]], names) -> dict[str, list[str]]:
    """The breakdown groups with only the parameters in ``names``, empty groups left out."""
    keep = set(names)
    out = {g: [n for n in ns if n in keep] for g, ns in groups.items()}
    return {g: ns for g, ns in out.items() if ns}


def dense_rows(g: BatchGrads, name: str) -> torch.Tensor:
    """[B, numel] per-example gradients of a dense parameter: as the pass gave them, or materialised
    from its factors (a probed Linear weight)."""
    return g.dense[name] if name in g.dense else g.factors[name].materialise()


class DenseTerm(Term):
    """Dense parameters, one [m, numel] matrix each; a training batch's products are one matrix product
    per parameter (``dots``), or per parameter over a ``DenseBlock`` of several batches (``block_dots``)."""

    def __init__(self, m: int, numel: dict[str, int], groups: dict[str, list[str]], dtype: torch.dtype, device: torch.device):
        self.groups = restrict_groups(groups, numel)
        self.mats = {name: torch.empty((m, n), dtype=dtype, device=device) for name, n in numel.items()}

    def add(self, idx, g):
        for name, mat in self.mats.items():
            mat[idx] = dense_rows(g, name)

    def dots(self, g):
        return sum_groups(self.groups, lambda name: dense_rows(g, name) @ self.mats[name].T)

    def block_dots(self, block: DenseBlock):
        # test @ block^T ([m, n], returned transposed): on this CPU 99 GFLOP/s at n = 128, against 89
        # for block @ test^T (benchmarks in BENCHMARKS.md, issue 11)
        n = block.rows
        return sum_groups(self.groups, lambda name: (self.mats[name] @ block.bufs[name][:n].T).T)


class DenseBlock:
    """Several training batches' dense per-example gradients, gathered into one [rows, numel] buffer
    per parameter so that their products with the resident test gradients are one large matrix product
    per parameter instead of one per batch. A product of B training rows with m resident test rows
    reads the test matrix once for B rows: with B of the batch size (16) it is memory-bound; the block
    makes B large. Probed Linear weights are materialised straight into the buffer (no per-batch
    allocation); the buffers are allocated once and reused."""

    def __init__(self, capacity: int, numel: dict[str, int], dtype: torch.dtype, device: torch.device):
        self.capacity = int(capacity)
        self.bufs = {name: torch.empty((self.capacity, n), dtype=dtype, device=device) for name, n in numel.items()}
        self.rows = 0

    def serves(self, numel: dict[str, int], dtype: torch.dtype, device: torch.device) -> bool:
        """Whether these buffers hold those parameters in that dtype and device (reused across checkpoints)."""
        return {n: b.shape[1] for n, b in self.bufs.items()} == numel and all(b.dtype == dtype and b.device == device for b in self.bufs.values())

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.bufs.values())

    def write(self, g: BatchGrads) -> None:
        """Append a batch's rows (its dense gradients copied, its probed Linear weights materialised)."""
        b = int(g.loss.shape[0])
        r0, r1 = self.rows, self.rows + b
        for name, buf in self.bufs.items():
            if name in g.dense:
                buf[r0:r1].copy_(g.dense[name])
            else:
                g.factors[name].materialise(out=buf[r0:r1])
        self.rows = r1

    def clear(self) -> None:
        self.rows = 0


class FactoredTerm(Term):
    """The factored Linear weights ``names``: per layer the test chunk's inputs [P, d_in] and output
    gradients [P, d_out] of all its positions P, with the test example each belongs to."""

    def __init__(self, m: int, names: list[str], groups: dict[str, list[str]]):
        self.m = m
        self.groups = restrict_groups(groups, names)
        self.parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
        self.owners: list[torch.Tensor] = []  # the chunk positions of each added batch
        self.inputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}

    def add(self, idx, g):
        for name in self.parts:
            f = g.factors[name]
            self.parts[name].append((f.inputs.reshape(-1, f.inputs.shape[-1]), f.grads.reshape(-1, f.grads.shape[-1])))
        self.owners.append(idx)

    def seal(self):
        # the test example of every kept position, per layer (a head layer has one position per example)
        self.owner_of: dict[str, torch.Tensor] = {}
        for name, parts in self.parts.items():
            self.inputs[name] = torch.cat([a for a, _ in parts])
            self.grads[name] = torch.cat([b for _, b in parts])
            per = [a.shape[0] // len(idx) for (a, _), idx in zip(parts, self.owners)]
            self.owner_of[name] = torch.cat([idx.repeat_interleave(p) for idx, p in zip(self.owners, per)])
        self.parts = {n: [] for n in self.parts}
        self.owners = []

    def _dots(self, name: str, g: BatchGrads) -> torch.Tensor:
        f = g.factors[name]
        b, t = f.inputs.shape[0], f.inputs.shape[1]
        ka = f.inputs.reshape(b * t, -1) @ self.inputs[name].T
        kb = f.grads.reshape(b * t, -1) @ self.grads[name].T
        per_position = ka.mul_(kb).view(b, t, -1).sum(1)  # [B, P]
        out = torch.zeros((b, self.m), dtype=per_position.dtype, device=per_position.device)
        return out.index_add_(1, self.owner_of[name], per_position)

    def dots(self, g):
        return sum_groups(self.groups, lambda name: self._dots(name, g))


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
