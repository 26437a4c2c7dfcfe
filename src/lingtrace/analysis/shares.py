"""Which training languages the top-k come from (paper Fig. 2, and Figs. 3, 12, 13 per epoch).

Every function reads the ``topk`` frame (``topk_frame``) and returns a table whose columns are
documented in ``lingtrace.analysis.tables`` (``language_shares``, ``in_language_share``).

A test example's share of language L is the percentage of its top-k entries whose training example is
in L; a test language's share is the mean of that percentage over its test examples (each test example
weighs the same, as in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, language_order, sort_table

_KEYS = ["epoch", "direction"]


def train_fractions(train_langs: Sequence[str]) -> dict[str, float]:
    """% of the training examples in each language (the share expected if the top-k were random)."""
    counts = pd.Series([str(x) for x in train_langs]).value_counts()
    total = counts.sum()
    return {str(k): 100.0 * v / total for k, v in counts.items()} if total else {}


def per_example_shares(topk: pd.DataFrame, train_order: Sequence[str]) -> pd.DataFrame:
    """One row per (epoch, direction, test example), one column per training language: the % of its top-k."""
    counts = (
        topk.groupby(_KEYS + ["test_uid", "test_lang", "train_lang"], sort=False)
        .size()
        .unstack("train_lang", fill_value=0)
        .reindex(columns=list(train_order), fill_value=0)
    )
    totals = topk.groupby(_KEYS + ["test_uid", "test_lang"], sort=False).size()
    return counts.div(totals.reindex(counts.index), axis=0) * 100.0


def language_shares(
    topk: pd.DataFrame, train_langs: Sequence[str], languages: Sequence[str] | None = None
) -> pd.DataFrame:
    """The ``language_shares`` table: % of the top-k from each training language, per test language.

    ``train_langs``: the language of every training example (for the chance level and so that
    languages absent from every top-k still get a 0 row); ``languages``: preferred order.
    """
    order = language_order(languages, train_langs, topk["train_lang"])
    test_order = language_order(languages, topk["test_lang"])
    fractions = train_fractions(train_langs)
    shares = per_example_shares(topk, order)
    long = shares.stack().rename("pct").reset_index()
    out = (
        long.groupby(_KEYS + ["test_lang", "train_lang"], sort=False)["pct"]
        .agg(share="mean", share_std=lambda s: float(np.std(s.to_numpy())), n_test="size")
        .reset_index()
    )
    out["train_fraction"] = out["train_lang"].map(fractions).fillna(0.0)
    return sort_table(out, test_order, order)


def per_example_in_language_share(topk: pd.DataFrame) -> pd.DataFrame:
    """(epoch, direction, test_uid, test_lang, value): % of each test example's top-k in its own language."""
    own = (topk["train_lang"].astype(str) == topk["test_lang"].astype(str)).astype(np.float64) * 100.0
    out = own.groupby([topk[c] for c in _KEYS + ["test_uid", "test_lang"]], sort=False).mean().rename("value")
    return out.reset_index()


def in_language_share(
    topk: pd.DataFrame, train_langs: Sequence[str], languages: Sequence[str] | None = None
) -> pd.DataFrame:
    """The ``in_language_share`` table: mean % of the top-k in the test example's own language."""
    fractions = train_fractions(train_langs)
    per = per_example_in_language_share(topk)
    per["chance"] = per["test_lang"].map(fractions).fillna(0.0)
    rows = []
    for (epoch, direction), grp in per.groupby(_KEYS, sort=True):
        for lang, sub in [*grp.groupby("test_lang", sort=False), (ALL, grp)]:
            v = sub["value"].to_numpy()
            rows.append(
                {
                    "epoch": int(epoch),
                    "direction": direction,
                    "test_lang": str(lang),
                    "share": float(v.mean()),
                    "share_std": float(v.std()),
                    "n_test": int(len(v)),
                    "train_fraction": float(sub["chance"].mean()),
                }
            )
    out = pd.DataFrame(rows, columns=["epoch", "direction", "test_lang", "share", "share_std", "n_test", "train_fraction"])
    return sort_table(out, [*language_order(languages, topk["test_lang"]), ALL])
