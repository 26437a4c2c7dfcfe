"""Score distributions of the top-k per training language, for each test language (paper Figs. 9-11).

Summary statistics of the scores of the top-k entries (positive and negative separately) grouped by
test language and training language; the report draws the full distributions from the ``topk`` table.
Columns: ``lingtrace.analysis.tables.SCORE_DISTRIBUTIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lingtrace.analysis.common import SUMMED, describe, language_order, sort_table

COLUMNS = ["direction", "test_lang", "train_lang", "n", "mean", "std", "min", "q25", "median", "q75", "max"]


def score_distributions(
    topk: pd.DataFrame, languages: Sequence[str] | None = None, epoch: int = SUMMED
) -> pd.DataFrame:
    """Per (direction, test_lang, train_lang): n, mean, std (population), min, quartiles, max of the scores."""
    rows = []
    sel = topk[topk["epoch"] == epoch]
    for (direction, test_lang, train_lang), g in sel.groupby(["direction", "test_lang", "train_lang"], sort=False):
        v = g["score"].to_numpy(dtype=np.float64)
        rows.append({"direction": direction, "test_lang": str(test_lang), "train_lang": str(train_lang), "n": int(v.size), **describe(v)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    return sort_table(out, language_order(languages, sel["test_lang"]), language_order(languages, sel["train_lang"]))
