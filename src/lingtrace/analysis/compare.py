"""Do the conclusions depend on the influence method? The tables that put the methods side by side.

Every function takes, per method (a mapping ``{method: table}`` in the methods' order), a table the
analyses of one method already made (``in_language_share``, ``language_shares``,
``translation_overlap``, ``topk``) and returns a table whose columns are documented in
``lingtrace.analysis.tables`` (``METHODS_*``). Everything is on the summed score (epoch 0).

* ``in_language_by_method``: the in-language share per test language (the diagonal of Fig. 2);
* ``top_other_language``: the training language each test language relies on most apart from its own;
* ``reinforcing_by_method``: the reinforcing share (Table 4, every other language together);
* ``topk_overlap`` / ``topk_overlap_summary``: how many of a test example's top-k training examples two
  methods share, per test example and as a distribution per method pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, DIRECTIONS, SUMMED, describe, language_order, sort_table


def _stack(per_method: Mapping[str, pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """One frame with a leading ``method`` column, methods in the mapping's order, rows as given."""
    parts = [frame.assign(method=method) for method, frame in per_method.items() if not frame.empty]
    if not parts:
        return pd.DataFrame(columns=list(columns))
    out = pd.concat(parts, ignore_index=True)
    return out[list(columns)]


def in_language_by_method(in_language: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The ``methods_in_language_share`` table from each method's ``in_language_share`` table, with
    ``p_vs_chance`` (``versus_chance``)."""
    out = _stack({m: f[f["epoch"] == SUMMED] for m, f in in_language.items()}, list(table_specs.METHODS_IN_LANGUAGE_SHARE.columns)[:-1])
    p = versus_chance(out["share"], out["share_std"], out["n_test"], out["train_fraction"])
    # over all test examples the chance level differs between the test examples: no single-sample test
    out["p_vs_chance"] = np.where(out["test_lang"] == ALL, np.nan, p)
    return out


def versus_chance(mean, std, n, chance) -> np.ndarray:
    """Two-sided p-value of a one-sample t-test of per-example values against ``chance``, from their
    ``mean``, population ``std`` and number ``n`` (what ``scipy.stats.ttest_1samp(values, chance)``
    gives on the values themselves); NaN with fewer than two values or when every value is the same."""
    mean, std, n, chance = (np.asarray(x, dtype=np.float64) for x in (mean, std, n, chance))
    with np.errstate(divide="ignore", invalid="ignore"):
        sample_std = std * np.sqrt(n / (n - 1))
        t = (mean - chance) / (sample_std / np.sqrt(n))
        p = 2 * stats.t.sf(np.abs(t), n - 1)
    return np.where((n >= 2) & (std > 0), p, np.nan)


def top_other_language(shares: Mapping[str, pd.DataFrame], languages: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``methods_top_other_language`` table from each method's ``language_shares`` table.

    Per (method, direction, test language): among the training languages other than the test language,
    the one with the largest mean share and the runner-up; ties go to the language earlier in
    ``languages`` (then alphabetical). A test language with no other training language has no row.
    """
    rows = []
    for method, frame in shares.items():
        sel = frame[frame["epoch"] == SUMMED]
        order = language_order(languages, sel["train_lang"])
        rank = {lang: i for i, lang in enumerate(order)}
        for (direction, test_lang), grp in sel.groupby(["direction", "test_lang"], sort=False):
            other = grp[grp["train_lang"] != test_lang]
            if other.empty:
                continue
            other = other.assign(_order=other["train_lang"].map(rank)).sort_values(["share", "_order"], ascending=[False, True], kind="stable")
            best = other.iloc[0]
            second = other.iloc[1] if len(other) > 1 else None
            rows.append(
                {
                    "method": method,
                    "direction": direction,
                    "test_lang": test_lang,
                    "train_lang": best["train_lang"],
                    "share": float(best["share"]),
                    "train_fraction": float(best["train_fraction"]),
                    "runner_up_lang": "" if second is None else second["train_lang"],
                    "runner_up_share": float("nan") if second is None else float(second["share"]),
                }
            )
    out = pd.DataFrame(rows, columns=list(table_specs.METHODS_TOP_OTHER_LANGUAGE.columns))
    return _method_sorted(out, shares, languages)


def reinforcing_by_method(overlap: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The ``methods_reinforcing_share`` table from each method's ``translation_overlap`` table (its
    rows over every other training language, ``train_lang == all``)."""
    return _stack({m: f[f["train_lang"] == ALL] for m, f in overlap.items()}, table_specs.METHODS_REINFORCING_SHARE.columns)


def topk_overlap(topks: Mapping[str, pd.DataFrame], directions: Sequence[str] = DIRECTIONS) -> pd.DataFrame:
    """The ``methods_topk_overlap`` table: for every pair of methods (in the mapping's order), direction
    and test example, the number of training examples in both methods' top-k (summed score).

    ``k`` is the size of the first method's set (the sets have the same size when the stores cover the
    same training examples); ``overlap`` = 100 * n_common / k.
    """
    sets = {}
    for method, topk in topks.items():
        sel = topk[topk["epoch"] == SUMMED]
        sets[method] = {
            key: (str(grp["test_lang"].iloc[0]), set(grp["train_uid"].astype(str)))
            for key, grp in sel.groupby(["direction", "test_uid"], sort=False)
        }
    rows = []
    for a, b in combinations(list(topks), 2):
        for direction in directions:
            for (d, test_uid), (test_lang, in_a) in sets[a].items():
                if d != direction or (d, test_uid) not in sets[b]:
                    continue
                in_b = sets[b][(d, test_uid)][1]
                k = len(in_a)
                common = len(in_a & in_b)
                rows.append(
                    {
                        "method_a": a,
                        "method_b": b,
                        "direction": direction,
                        "test_uid": test_uid,
                        "test_lang": test_lang,
                        "k": k,
                        "n_common": common,
                        "overlap": 100.0 * common / k if k else float("nan"),
                    }
                )
    return pd.DataFrame(rows, columns=list(table_specs.METHODS_TOPK_OVERLAP.columns))


def topk_overlap_summary(per_example: pd.DataFrame, n_train: int, languages: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``methods_topk_overlap_summary`` table: the distribution of ``overlap`` over the test examples
    per (method pair, direction, test language) and over all test examples (``all``).

    ``pct_by_chance`` = 100 * k / n_train: the expected overlap of two top-k sets drawn at random from
    the ``n_train`` training examples (each of the k of one set is in the other with probability k / n_train).
    """
    rows = []
    test_order = language_order(languages, per_example["test_lang"])
    for (a, b, direction), grp in per_example.groupby(["method_a", "method_b", "direction"], sort=False):
        for lang, sub in [*((lang, grp[grp["test_lang"] == lang]) for lang in test_order), (ALL, grp)]:
            if sub.empty:
                continue
            v = sub["overlap"].to_numpy(dtype=np.float64)
            k = float(sub["k"].mean())
            rows.append(
                {
                    "method_a": a,
                    "method_b": b,
                    "direction": direction,
                    "test_lang": lang,
                    "n_test": int(len(v)),
                    **describe(v),
                    "pct_by_chance": 100.0 * k / n_train if n_train else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=list(table_specs.METHODS_TOPK_OVERLAP_SUMMARY.columns))


def _method_sorted(frame: pd.DataFrame, methods: Sequence[str], languages: Sequence[str] | None) -> pd.DataFrame:
    """Rows by method (mapping order), direction, test language."""
    if frame.empty:
        return frame
    parts = [sort_table(frame[frame["method"] == m], [*language_order(languages, frame["test_lang"]), ALL]) for m in methods]
    return pd.concat([p for p in parts if not p.empty], ignore_index=True)
