"""Average influence between every training language and test language (paper Tables 3 and 6).

Unlike the top-k analyses this uses every training example: the mean score over all (test example,
training example) pairs of a language pair. One block-wise pass over the matrix (memory-mapped stores
are fine). Columns: ``lingtrace.analysis.tables.AVERAGE_INFLUENCE``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lingtrace.analysis.common import (
    MatrixLike,
    as_lang_array,
    language_order,
    one_hot,
    row_blocks,
    sort_table,
)


def average_influence(
    matrix: MatrixLike,
    test_langs: Sequence[str],
    train_langs: Sequence[str],
    languages: Sequence[str] | None = None,
    block_rows: int | None = None,
) -> pd.DataFrame:
    """(test_lang, train_lang, mean_score, std_score, n_pairs) over all pairs of the two languages."""
    test_langs = as_lang_array(test_langs)
    train_langs = as_lang_array(train_langs)
    if tuple(matrix.shape) != (len(test_langs), len(train_langs)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(test_langs)} test x {len(train_langs)} train examples")
    test_order = language_order(languages, test_langs)
    train_order = language_order(languages, train_langs)
    train_hot = one_hot(train_langs, train_order)  # [train x Ltr]
    test_hot = one_hot(test_langs, test_order)  # [test x Lte]
    sums = np.zeros((len(test_order), len(train_order)))
    squares = np.zeros_like(sums)
    for start, block in row_blocks(matrix, block_rows):
        hot = test_hot[start : start + len(block)]
        sums += hot.T @ (block @ train_hot)
        squares += hot.T @ ((block * block) @ train_hot)
    n = np.outer(test_hot.sum(0), train_hot.sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / n
        std = np.sqrt(np.clip(squares / n - mean**2, 0.0, None))
    rows = [
        {
            "test_lang": te,
            "train_lang": tr,
            "mean_score": float(mean[i, j]),
            "std_score": float(std[i, j]),
            "n_pairs": int(n[i, j]),
        }
        for i, te in enumerate(test_order)
        for j, tr in enumerate(train_order)
    ]
    return sort_table(pd.DataFrame(rows, columns=["test_lang", "train_lang", "mean_score", "std_score", "n_pairs"]), test_order, train_order)
