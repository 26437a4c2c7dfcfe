"""The statistics of the languages experiment (pure functions on arrays and frames).

* ``fit_mixture``: per test example, least squares of an outcome (margin, p_label, loss) on the kept
  fractions of the varied languages plus an intercept; coefficients and their standard errors.
* ``matrix_table``: per (test language X, training language Y) the mean effect over X's test examples,
  its bootstrap interval, the seed-noise floor of X and whether the cell is within noise.
* ``predicted_sums`` / ``topk_shares``: a method's predicted effect of removing Y (the sum of its
  scores over Y's training examples) and the paper's Fig. 2 reading (Y's share of the top-k).
* ``faithfulness``: a predictor against the measured effects: the language-level LDS (per test example,
  Spearman across Y), the correlations of the cell matrices, and whether the headline readings agree.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.topk import top_k
from lingtrace.errors import LingtraceError
from lingtrace.experiments.languages.columns import FAITHFULNESS, MATRIX, READINGS
from lingtrace.experiments.lds import lds_per_example

#: two-sided 5% quantile of the standard normal
Z_95 = 1.959964


def loss_from_margin(margin: np.ndarray) -> np.ndarray:
    """-log p(gold) from the correct-class margin m = log p - log(1 - p): log(1 + exp(-m)), without
    rounding p near 1."""
    return np.logaddexp(0.0, -np.asarray(margin, dtype=np.float64))


# ---------------------------------------------------------------- the mixture design


@dataclass
class Fit:
    """Least squares of outcomes [m x n] on fractions [m x L] plus an intercept."""

    coef: np.ndarray  # [n x L]
    se: np.ndarray  # [n x L]
    intercept: np.ndarray  # [n]
    df: int  # residual degrees of freedom, m - L - 1


def fit_mixture(fractions: np.ndarray, outcomes: np.ndarray) -> Fit:
    """Per column of ``outcomes`` [m x n]: ordinary least squares on ``fractions`` [m x L] with an intercept;
    the standard errors are sqrt(s^2 * diag((X'X)^-1)), s^2 = residual sum of squares / (m - L - 1)."""
    f = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    m, n_langs = f.shape
    design = np.column_stack([np.ones(m), f])
    p = design.shape[1]
    if m < p + 1:
        raise LingtraceError(
            f"{m} mixtures cannot fit {n_langs} language coefficients with an intercept and a standard error",
            f"set experiment.languages_mixtures to at least {p + 1}",
        )
    if np.linalg.matrix_rank(design) < p:
        raise LingtraceError(
            "the mixtures' kept fractions are linearly dependent, so their effects cannot be told apart",
            "raise experiment.languages_mixtures (or change experiment.seed)",
        )
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)  # [p x n]
    resid = y - design @ beta
    df = m - p
    sigma2 = (resid**2).sum(axis=0) / df
    inv = np.linalg.inv(design.T @ design)
    se = np.sqrt(np.outer(sigma2, np.diag(inv)))
    return Fit(coef=beta[1:].T.copy(), se=se[:, 1:].copy(), intercept=beta[0].copy(), df=df)


# ---------------------------------------------------------------- aggregation


def bootstrap_interval(values: np.ndarray, n_boot: int, seed: int, tag: str, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped), resampled with the seed
    (seed, "languages-bootstrap", tag); (NaN, NaN) with fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(b"languages-bootstrap"), zlib.crc32(tag.encode())])
    means = v[rng.integers(0, len(v), size=(int(n_boot), len(v)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def noise_by_language(noise_table: pd.DataFrame, languages: Sequence[str]) -> dict[str, float]:
    """Per test language X: sqrt(mean over seeds of (mean over X's test examples of margin_base - margin)^2),
    the mean change of a cell that retraining the unchanged data with another seed produces (NaN without seeds)."""
    out = {}
    for lang in languages:
        sub = noise_table[noise_table["test_lang"].astype(str) == lang] if len(noise_table) else noise_table
        if sub is None or sub.empty:
            out[lang] = float("nan")
            continue
        per_seed = (sub["margin_base"] - sub["margin"]).groupby(sub["seed"]).mean().to_numpy(dtype=np.float64)
        out[lang] = float(np.sqrt(np.mean(per_seed**2)))
    return out


def within_noise(mean: float, low: float, high: float, noise: float, fit_se: float = float("nan")) -> bool:
    """Whether a cell cannot be told from retraining noise: its interval includes 0, or |mean| <= the seed
    noise, or |mean| <= 1.96 fit_se (mixture); True when none of these can be computed."""
    checks = []
    if np.isfinite(low) and np.isfinite(high):
        checks.append(low <= 0.0 <= high)
    if np.isfinite(noise):
        checks.append(abs(mean) <= noise)
    if np.isfinite(fit_se):
        checks.append(abs(mean) <= Z_95 * fit_se)
    return bool(any(checks)) if checks else True


def matrix_table(
    effects: pd.DataFrame,
    design: str,
    test_langs: Sequence[str],
    train_langs: Sequence[str],
    noise: dict[str, float],
    n_boot: int,
    seed: int,
    fit_se: dict[tuple[str, str], float] | None = None,
) -> pd.DataFrame:
    """One row per (X, Y): the mean effect over X's test examples, its bootstrap interval, the noise floor (columns ``MATRIX``)."""
    rows = []
    for x in test_langs:
        for y in train_langs:
            cell = effects[(effects["test_lang"] == x) & (effects["train_lang"] == y)]
            values = cell["delta_margin"].to_numpy(dtype=np.float64)
            mean = float(np.mean(values)) if len(values) else float("nan")
            low, high = bootstrap_interval(values, n_boot, seed, f"cell/{x}/{y}")
            se = float((fit_se or {}).get((x, y), float("nan")))
            floor = float(noise.get(x, float("nan")))
            rows.append(
                {
                    "design": design,
                    "test_lang": x,
                    "train_lang": y,
                    "n_test": int(len(values)),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "fit_se": se,
                    "noise": floor,
                    "within_noise": within_noise(mean, low, high, floor, se),
                    "mean_delta_p": float(cell["delta_p"].mean()) if len(cell) else float("nan"),
                    "mean_delta_loss": float(cell["delta_loss"].mean()) if len(cell) else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=list(MATRIX))


# ---------------------------------------------------------------- the predictors


def predicted_sums(total: np.ndarray, train_langs: Sequence[str], languages: Sequence[str]) -> np.ndarray:
    """[test x len(languages)]: per test example, the sum of its scores over each language's training examples."""
    langs = np.asarray([str(x) for x in train_langs], dtype=object)
    scores = np.asarray(total, dtype=np.float64)
    return np.column_stack([scores[:, langs == lang].sum(axis=1) for lang in languages]) if len(languages) else np.zeros((len(scores), 0))


def topk_shares(total: np.ndarray, train_langs: Sequence[str], k: int, languages: Sequence[str]) -> np.ndarray:
    """[test x len(languages)]: the % of each test example's top-k (largest scores) in each language (Fig. 2)."""
    idx = top_k(np.asarray(total, dtype=np.float64), k, largest=True).indices
    langs = np.asarray([str(x) for x in train_langs], dtype=object)[idx]
    return np.column_stack([100.0 * (langs == lang).mean(axis=1) for lang in languages])


def cell_means(values: np.ndarray, test_langs: Sequence[str], order: Sequence[str]) -> np.ndarray:
    """[len(order) x columns]: the mean of ``values`` [test x columns] over each test language's rows."""
    langs = np.asarray([str(x) for x in test_langs], dtype=object)
    return np.vstack([np.asarray(values, dtype=np.float64)[langs == x].mean(axis=0) for x in order])


def correlation(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    """Pearson or Spearman correlation of two flat arrays (finite pairs only); NaN when either is constant."""
    from scipy.stats import pearsonr, spearmanr

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float((pearsonr if kind == "pearson" else spearmanr)(a, b).statistic)


def top_language(values: Sequence[float], languages: Sequence[str], exclude: str | None = None) -> str | None:
    """The language with the largest finite value (the first in ``languages`` order on a tie), ``exclude`` left out."""
    best, best_value = None, -np.inf
    for lang, v in zip(languages, values):
        if lang == exclude or not np.isfinite(v):
            continue
        if v > best_value:
            best, best_value = lang, float(v)
    return best


def rank_of(values: Sequence[float], languages: Sequence[str], target: str | None, exclude: str | None = None) -> float:
    """1 + the number of languages (``exclude`` left out) with a larger value than ``target``'s; NaN without one."""
    lookup = dict(zip(languages, values))
    if target is None or target not in lookup or not np.isfinite(lookup[target]):
        return float("nan")
    return float(1 + sum(1 for lang, v in lookup.items() if lang not in (exclude, target) and np.isfinite(v) and v > lookup[target]))


# ---------------------------------------------------------------- faithfulness


def faithfulness(
    method: str,
    predictor: str,
    predicted: np.ndarray,
    measured: np.ndarray,
    test_langs: Sequence[str],
    test_order: Sequence[str],
    languages: Sequence[str],
    within: dict[tuple[str, str], bool],
    n_boot: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A predictor [test x languages] against the measured effects [test x languages]: one row of
    ``FAITHFULNESS`` and the ``READINGS`` rows of every test language."""
    lds = lds_per_example(predicted, measured) if len(languages) > 1 else np.full(len(predicted), np.nan)
    low, high = bootstrap_interval(lds, n_boot, seed, f"lds/{method}/{predictor}")
    pred_cells = cell_means(predicted, test_langs, test_order)
    meas_cells = cell_means(measured, test_langs, test_order)
    readings = []
    for r, x in enumerate(test_order):
        m_top, m_other = top_language(meas_cells[r], languages), top_language(meas_cells[r], languages, exclude=x)
        p_top, p_other = top_language(pred_cells[r], languages), top_language(pred_cells[r], languages, exclude=x)
        readings.append(
            {
                "method": method,
                "predictor": predictor,
                "test_lang": x,
                "measured_top": m_top or "",
                "measured_top_other": m_other or "",
                "measured_top_other_within_noise": bool(within.get((x, m_other), True)) if m_other else True,
                "predicted_top": p_top or "",
                "predicted_top_other": p_other or "",
                "agrees_top": bool(m_top is not None and p_top == m_top),
                "agrees_top_other": bool(m_other is not None and p_other == m_other),
                "rank_of_measured_top_other": rank_of(pred_cells[r], languages, m_other, exclude=x),
                "spearman": correlation(pred_cells[r], meas_cells[r], "spearman"),
            }
        )
    finite = lds[np.isfinite(lds)]
    row = {
        "method": method,
        "predictor": predictor,
        "n_test": int(len(finite)),
        "n_langs": len(languages),
        "lds_mean": float(finite.mean()) if len(finite) else float("nan"),
        "lds_ci_low": low,
        "lds_ci_high": high,
        "distinguishable": bool(np.isfinite(low) and np.isfinite(high) and not low <= 0.0 <= high),
        "n_cells": int(pred_cells.size),
        "matrix_pearson": correlation(pred_cells, meas_cells, "pearson"),
        "matrix_spearman": correlation(pred_cells, meas_cells, "spearman"),
        "n_test_langs": len(test_order),
        "top_agree": int(sum(r["agrees_top"] for r in readings)),
        "top_other_agree": int(sum(r["agrees_top_other"] for r in readings)),
    }
    return row, readings


def faithfulness_tables(rows: list[dict[str, Any]], readings: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(rows, columns=list(FAITHFULNESS)), pd.DataFrame(readings, columns=list(READINGS))
