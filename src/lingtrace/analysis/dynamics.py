"""Fine-tuning dynamics (paper Fig. 3, 12, 13): does the model rely on other data at other epochs?

The per-epoch shares themselves are in ``language_shares`` / ``in_language_share`` (epoch >= 1). This
module adds the significance test between checkpoints.

What the Wilcoxon test compares. The paper compares "the rankings" of the influential training samples
of different epochs with a Wilcoxon signed-rank test. A signed-rank test needs paired observations; we
pair *test examples* (independent units), and test two per-test-example quantities between every pair
of checkpoints (a, b), two-sided, with ``scipy.stats.wilcoxon`` (default method and zero handling):

* ``in_language_share``: the % of the test example's top-k (computed on checkpoint a's scores alone)
  in its own language, vs the same at checkpoint b. Tests the paper's claim that reliance on other
  languages changes as fine-tuning progresses.
* ``mean_rank_of_top_k``: take the test example's top-k under the summed score (a set fixed before
  looking at a or b, so the test is symmetric in a and b); its mean rank in checkpoint a's ranking of
  all training examples (1 = most positive for ``positive``, most negative for ``negative``; ties get
  their average rank), vs the same in checkpoint b's ranking. Tests whether the rankings of the
  training examples differ between checkpoints: whether the examples that matter overall matter more
  at one point of fine-tuning than at another.

Pairing ranks of *training* examples per test example would be the other reading; it gives one
p-value per test example (a multiple-testing problem) and, over all training examples, the rank
differences sum to zero by construction, so we do not use it. Columns:
``lingtrace.analysis.tables.DYNAMICS_WILCOXON``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lingtrace.analysis.common import (
    ALL,
    NEGATIVE,
    SUMMED,
    MatrixLike,
    NotApplicable,
    language_order,
    row_blocks,
    sort_table,
)

IN_LANGUAGE_SHARE = "in_language_share"
MEAN_RANK_OF_TOP_K = "mean_rank_of_top_k"
MEASURES = (IN_LANGUAGE_SHARE, MEAN_RANK_OF_TOP_K)
COLUMNS = ["measure", "direction", "test_lang", "epoch_a", "epoch_b", "n", "mean_a", "mean_b", "statistic", "p_value"]


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired Wilcoxon signed-rank test: ``scipy.stats.wilcoxon(a, b)`` -> (statistic, p_value).

    When every difference is zero the samples are identical: (0.0, 1.0), as scipy gives (without its
    warning). No pairs: (nan, nan).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples of different lengths {a.shape} and {b.shape}")
    if a.size == 0:
        return float("nan"), float("nan")
    if np.all(a == b):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.wilcoxon(a, b)
    return float(res.statistic), float(res.pvalue)


def average_ranks(row: np.ndarray, values: np.ndarray, largest: bool) -> np.ndarray:
    """The rank of each of ``values`` within ``row`` (1 = largest if ``largest`` else smallest; ties averaged)."""
    s = np.sort(row)
    left = np.searchsorted(s, values, side="left")
    right = np.searchsorted(s, values, side="right")
    before = (len(s) - right) if largest else left
    return before + (right - left + 1) / 2.0


def top_k_mean_ranks(
    per_epoch: Mapping[int, MatrixLike],
    topk: pd.DataFrame,
    test_uids: Sequence[str],
    train_uids: Sequence[str],
    reference_epoch: int = SUMMED,
    block_rows: int | None = None,
) -> pd.DataFrame:
    """(epoch, direction, test_uid, test_lang, value): mean rank at each checkpoint of the reference top-k.

    ``topk`` is the ``topk`` frame; its ``reference_epoch`` rows (default: the summed score) fix each
    test example's set of k training examples.
    """
    col = {str(u): i for i, u in enumerate(train_uids)}
    ref = topk[topk["epoch"] == reference_epoch]
    rows = []
    for direction, grp in ref.groupby("direction", sort=False):
        sets: dict[str, np.ndarray] = {}
        langs: dict[str, str] = {}
        for uid, g in grp.groupby("test_uid", sort=False):
            sets[str(uid)] = np.array([col[str(t)] for t in g["train_uid"]], dtype=np.int64)
            langs[str(uid)] = str(g["test_lang"].iloc[0])
        for epoch, matrix in per_epoch.items():
            for start, block in row_blocks(matrix, block_rows):
                for r in range(block.shape[0]):
                    uid = str(test_uids[start + r])
                    if uid not in sets:
                        continue
                    ranks = average_ranks(block[r], block[r, sets[uid]], largest=direction != NEGATIVE)
                    rows.append(
                        {
                            "epoch": int(epoch),
                            "direction": direction,
                            "test_uid": uid,
                            "test_lang": langs[uid],
                            "value": float(ranks.mean()),
                        }
                    )
    return pd.DataFrame(rows, columns=["epoch", "direction", "test_uid", "test_lang", "value"])


def epoch_wilcoxon(
    per_example: pd.DataFrame, measure: str, languages: Sequence[str] | None = None
) -> pd.DataFrame:
    """Wilcoxon signed-rank tests of ``per_example['value']`` between every pair of epochs.

    ``per_example``: (epoch, direction, test_uid, test_lang, value), one row per test example and epoch
    (the summed score, epoch 0, is left out). Paired by test_uid; per test language and over all
    test examples (test_lang = all).
    """
    frame = per_example[per_example["epoch"] != SUMMED]
    epochs = sorted(int(e) for e in frame["epoch"].unique())
    if len(epochs) < 2:
        raise NotApplicable(
            f"the influence scores have {len(epochs)} checkpoint(s): comparing epochs needs at least two"
        )
    test_order = language_order(languages, frame["test_lang"])
    wide = frame.pivot_table(index=["direction", "test_uid", "test_lang"], columns="epoch", values="value", aggfunc="first")
    rows = []
    for direction, grp in wide.groupby(level="direction", sort=False):
        langs = grp.index.get_level_values("test_lang")
        for lang in [*test_order, ALL]:
            sub = grp if lang == ALL else grp[langs == lang]
            if sub.empty:
                continue
            for ea, eb in itertools.combinations(epochs, 2):
                pair = sub[[ea, eb]].dropna()
                stat, p = wilcoxon(pair[ea].to_numpy(), pair[eb].to_numpy())
                rows.append(
                    {
                        "measure": measure,
                        "direction": direction,
                        "test_lang": lang,
                        "epoch_a": ea,
                        "epoch_b": eb,
                        "n": int(len(pair)),
                        "mean_a": float(pair[ea].mean()) if len(pair) else float("nan"),
                        "mean_b": float(pair[eb].mean()) if len(pair) else float("nan"),
                        "statistic": stat,
                        "p_value": p,
                    }
                )
    out = pd.DataFrame(rows, columns=COLUMNS)
    return sort_table(out, [*test_order, ALL])
