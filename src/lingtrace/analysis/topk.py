"""Top-k most positively / negatively influential training examples per test example."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TopK(NamedTuple):
    """Row i: the k training-example columns with the largest (or smallest) scores for test row i.

    ``indices`` [test x k] int64 and ``scores`` [test x k] float64, ordered from the most to the least
    extreme; ties are broken by the lower column index, so the result is deterministic.
    """

    indices: np.ndarray
    scores: np.ndarray


def top_k(scores: np.ndarray, k: int, largest: bool = True, block_rows: int = 256) -> TopK:
    """Top-k per row of a [test x train] matrix (works block by block on memory-mapped matrices)."""
    n_rows, n_cols = scores.shape
    k = min(int(k), n_cols)
    idx = np.empty((n_rows, k), dtype=np.int64)
    val = np.empty((n_rows, k), dtype=np.float64)
    for start in range(0, n_rows, block_rows):
        block = np.asarray(scores[start : start + block_rows], dtype=np.float64)
        key = -block if largest else block
        if k < n_cols:
            part = np.argpartition(key, k - 1, axis=1)[:, :k]
            # the k-th value may be tied with columns outside the partition: take every column tied with it
            kth = np.take_along_axis(key, part, 1).max(1, keepdims=True)
        for r in range(block.shape[0]):
            if k < n_cols:
                cand = np.flatnonzero(key[r] <= kth[r])
            else:
                cand = np.arange(n_cols)
            order = np.lexsort((cand, key[r, cand]))[:k]
            idx[start + r] = cand[order]
            val[start + r] = block[r, cand[order]]
    return TopK(idx, val)
