"""Top-k most positively / negatively influential training examples per test example.

``top_k`` works on one [test x train] matrix (block by block, so memory-mapped stores larger than
memory are fine); ``topk_frame`` turns the top-k of every checkpoint (and of the summed score) into
the long ``topk`` table (columns in ``lingtrace.analysis.tables.TOPK``) that the other analyses read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from lingtrace.analysis.common import DIRECTIONS, POSITIVE, MatrixLike, as_lang_array, block_rows_for
from lingtrace.analysis.tables import TOPK
from lingtrace.data import schema


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


def topk_frame(
    matrices: Mapping[int, MatrixLike],
    test: pd.DataFrame,
    train: pd.DataFrame,
    k: int,
    directions: Sequence[str] = DIRECTIONS,
    block_rows: int | None = None,
) -> pd.DataFrame:
    """The ``topk`` table: for every matrix (``{epoch: [test x train]}``, 0 = summed) and direction,
    the top-k training examples of every test example, one row per (epoch, direction, test, rank).

    ``test`` and ``train`` are the example frames aligned with the matrix rows and columns
    (``align_examples``). ``negative`` takes the k smallest scores, whatever their sign.
    """
    test_uid = test[schema.UID].astype(str).to_numpy()
    test_lang = as_lang_array(test[schema.LANG])
    train_uid = train[schema.UID].astype(str).to_numpy()
    train_lang = as_lang_array(train[schema.LANG])
    train_tid = train[schema.TRANSLATION_ID].astype(str).to_numpy()
    parts = []
    for epoch, matrix in matrices.items():
        if tuple(matrix.shape) != (len(test), len(train)):
            raise ValueError(f"matrix of epoch {epoch} has shape {matrix.shape}, expected {(len(test), len(train))}")
        for direction in directions:
            res = top_k(matrix, k, largest=direction == POSITIVE, block_rows=block_rows or block_rows_for(len(train)))
            n, kk = res.indices.shape
            cols = res.indices.ravel()
            parts.append(
                pd.DataFrame(
                    {
                        "epoch": np.full(n * kk, int(epoch), dtype=np.int64),
                        "direction": np.full(n * kk, direction, dtype=object),
                        "test_uid": np.repeat(test_uid, kk),
                        "test_lang": np.repeat(test_lang, kk),
                        "rank": np.tile(np.arange(1, kk + 1, dtype=np.int64), n),
                        "train_uid": train_uid[cols],
                        "train_lang": train_lang[cols],
                        "train_translation_id": train_tid[cols],
                        "score": res.scores.ravel(),
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=list(TOPK.columns))
    return pd.concat(parts, ignore_index=True)
