"""Optional memory-light random projection of gradients: a CountSketch (sparse Johnson-Lindenstrauss).

Coordinate i of the full gradient (all selected parameters in order, the word-embedding matrix
included as V x H coordinates) goes to bucket ``h(i)`` of a ``dim``-dimensional sketch with sign
``s(i)``, where h and s are hash functions of (i, seed). The sketch of g is ``S g`` with
``(S g)_j = sum_{i: h(i)=j} s(i) g_i``; ``E[<S a, S b>] = <a, b>`` and the variance of that estimate
is at most ``2 |a|^2 |b|^2 / dim``. Nothing of size D x dim ever exists: buckets and signs are computed
from the coordinate index (and cached per parameter while small), so the cost is O(D) per example,
and sparse word-embedding rows are sketched from their token ids directly.

Used when test gradients cannot stay resident (very large models or test sets); the error against
exact scores is measured in ``benchmarks/bench_projection.py`` and documented in BENCHMARKS.md.
"""

from __future__ import annotations

import torch

from lingtrace.influence.sparse import SparseRows

_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # splitmix64 constants as signed int64
_M2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_CACHE_LIMIT = 1 << 27


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors (wrapping arithmetic; logical shifts emulated)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _M1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _M2
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    return x


class CountSketch:
    """Sketch gradients laid out as ``offsets[name] + flat index`` (dense parameters) and
    ``word_offset + token * H + column`` (word-embedding rows) into ``dim`` dimensions."""

    def __init__(self, dim: int, seed: int, numel: dict[str, int], word_offset: int | None = None, hidden: int | None = None):
        if dim < 1:
            raise ValueError("projection dimension must be >= 1")
        self.dim = int(dim)
        self.seed = int(seed)
        self.offsets: dict[str, int] = {}
        off = 0
        for name, n in numel.items():
            self.offsets[name] = off
            off += int(n)
        self.word_offset = off if word_offset is None else word_offset
        self.hidden = hidden
        salt = (self.seed * 0x632BE59BD9B4E019 + 0x2545F4914F6CDD1D) & ((1 << 64) - 1)
        self._salt = salt - (1 << 64) if salt >= 1 << 63 else salt
        self._cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached = 0

    def _hash(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _mix(coords * _GOLDEN + self._salt)
        bucket = torch.remainder(x, self.dim)
        sign = ((x >> 40) & 1).to(torch.float32) * 2 - 1
        return bucket, sign

    def _dense_hash(self, name: str, numel: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, str(device))
        if key in self._cache:
            return self._cache[key]
        coords = torch.arange(numel, device=device, dtype=torch.int64) + self.offsets[name]
        out = self._hash(coords)
        if self._cached + numel <= _CACHE_LIMIT:
            self._cache[key] = out
            self._cached += numel
        return out

    def sketch_dense(self, grads: dict[str, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """Sketch [B, dim] (float32 or the grads' dtype if wider) of per-example dense gradients."""
        first = next(iter(grads.values()))
        b = first.shape[0]
        dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
        if out is None:
            out = torch.zeros((b, self.dim), dtype=dtype, device=first.device)
        for name, g in grads.items():
            bucket, sign = self._dense_hash(name, g.shape[1], g.device)
            out.index_add_(1, bucket, g.to(dtype) * sign.to(dtype))
        return out

    def sketch_sparse(self, emb: SparseRows, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sketch [n, dim] of sparse word-embedding rows (added into ``out`` when given)."""
        h = emb.rows.shape[1]
        dtype = torch.float64 if emb.rows.dtype == torch.float64 else torch.float32
        if out is None:
            out = torch.zeros((emb.n, self.dim), dtype=dtype, device=emb.rows.device)
        cols = torch.arange(h, device=emb.rows.device, dtype=torch.int64)
        coords = self.word_offset + emb.token[:, None] * h + cols[None, :]
        bucket, sign = self._hash(coords)
        # each (row, column) adds into (owner, bucket)
        flat_index = emb.owner[:, None] * self.dim + bucket
        vals = emb.rows.to(dtype) * sign.to(dtype)
        out.view(-1).index_add_(0, flat_index.reshape(-1), vals.reshape(-1))
        return out
