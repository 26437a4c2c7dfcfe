"""k-selection's statistics (pure functions): the change's statistics per method, direction, k and test
language, paired against the random control, and where the mean change levels off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE
from lingtrace.experiments import noise
from lingtrace.experiments.kselect.columns import FAITHFULNESS, LEVELS_OFF
from lingtrace.experiments.kselect.settings import RANDOM


def levels_off(ks: Sequence[int], means: Sequence[float], tolerance_pct: float) -> tuple[int | None, float, float]:
    """(levels-off k or None, range, tolerance) by the module's definition (anchor k = 0, change 0)."""
    order = np.argsort(np.asarray(ks))
    k_sorted = [int(ks[i]) for i in order]
    m = np.asarray([float(means[i]) for i in order], dtype=np.float64)
    if len(m) == 0 or not np.all(np.isfinite(m)):
        return None, float("nan"), float("nan")
    allm = np.concatenate([[0.0], m])
    rng = float(allm.max() - allm.min())
    tol = tolerance_pct / 100.0 * rng
    for i in range(len(m) - 1):
        if np.all(np.abs(m[i + 1 :] - m[i]) <= tol):
            return k_sorted[i], rng, tol
    return None, rng, tol



def faithfulness_table(changes: pd.DataFrame, languages: Sequence[str], noise_sd: dict[str, float] | None = None) -> pd.DataFrame:
    """Per method, direction, k and test language (and all): the change's statistics, paired against the
    random control. ``noise_sd``: per test language and ``all``, the seed spread of the gold-label
    probability (``noise.summarize``'s ``p_sd``) for the detectable difference."""
    from scipy.stats import wilcoxon

    rows = []
    noise_sd = noise_sd or {}
    key_cols = ["method", "group", "k", "test_uid"]
    rand = changes[changes["direction"] == RANDOM].set_index(key_cols)["delta"]
    for (method, direction, k), grp in changes.groupby(["method", "direction", "k"], sort=False):
        langs = [lang for lang in languages if (grp["test_lang"] == lang).any()]
        for lang in [*langs, ALL]:
            sub = grp if lang == ALL else grp[grp["test_lang"] == lang]
            d = sub["delta"].to_numpy(dtype=np.float64)
            n = len(d)
            diff_mean, p = float("nan"), float("nan")
            if direction != RANDOM and len(rand):
                key = pd.MultiIndex.from_frame(sub[key_cols])
                r = rand.reindex(key).to_numpy(dtype=np.float64)
                ok = np.isfinite(r)
                if ok.any():
                    diff = d[ok] - r[ok]
                    diff_mean = float(diff.mean())
                    if len(diff) >= 2 and np.any(diff != 0):
                        p = float(wilcoxon(diff).pvalue)
            rows.append(
                {
                    "method": method,
                    "direction": direction,
                    "k": int(k),
                    "test_lang": lang,
                    "n_test": n,
                    "n_retrainings": int(sub["sub_run"].nunique()),
                    "n_removed_mean": float(sub.drop_duplicates("sub_run")["n_removed"].mean()),
                    "mean_delta": float(d.mean()),
                    "std_delta": float(d.std()),
                    "sem_delta": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                    "median_delta": float(np.median(d)),
                    "q25_delta": float(np.percentile(d, 25)),
                    "q75_delta": float(np.percentile(d, 75)),
                    "flip_pct": float(100.0 * sub["flipped"].mean()),
                    "mean_minus_random": diff_mean,
                    "p_vs_random": p,
                    "detectable_vs_random": noise.detectable_difference(noise_sd.get(lang, float("nan")), n) if direction != RANDOM else float("nan"),
                }
            )
    out = pd.DataFrame(rows, columns=list(FAITHFULNESS))
    method_order = {m: i for i, m in enumerate(dict.fromkeys(changes["method"]))}
    orders = {"method": method_order, "direction": {POSITIVE: 0, NEGATIVE: 1, RANDOM: 2}, "test_lang": {lang: i for i, lang in enumerate([*languages, ALL])}}
    return out.sort_values(
        ["method", "direction", "k", "test_lang"], key=lambda s: s.map(orders[s.name]) if s.name in orders else s, kind="stable"
    ).reset_index(drop=True)


def levels_off_table(faith: pd.DataFrame, tolerance_pct: float) -> pd.DataFrame:
    rows = []
    for method in dict.fromkeys(faith["method"]):
        for direction in (POSITIVE, NEGATIVE, RANDOM):
            sub = faith[(faith["method"] == method) & (faith["direction"] == direction) & (faith["test_lang"] == ALL)].sort_values("k")
            if sub.empty:
                continue
            k, rng, tol = levels_off(sub["k"].tolist(), sub["mean_delta"].tolist(), tolerance_pct)
            at = float(sub.loc[sub["k"] == k, "mean_delta"].iloc[0]) if k is not None else float("nan")
            rows.append({"method": method, "direction": direction, "levels_off_k": k, "mean_delta_at_k": at, "range": rng, "tolerance": tol})
    out = pd.DataFrame(rows, columns=list(LEVELS_OFF))
    out["levels_off_k"] = out["levels_off_k"].astype("Int64")
    return out


# ---------------------------------------------------------------- all of them, from the changes


@dataclass
class Results:
    """k-selection's result tables: the change per retraining and test example (``columns.CHANGES``), its
    statistics (``FAITHFULNESS``, ``LEVELS_OFF``) and the noise floor on the same test examples."""

    changes: pd.DataFrame
    faithfulness: pd.DataFrame
    levels_off: pd.DataFrame
    floor_summary: pd.DataFrame  # noise.NOISE_SUMMARY on the chosen test examples
    floor_row: dict[str, Any]  # the floor over all of them (empty without noise seeds)
    chosen_uids: list[str]
    tolerance_pct: float


def results(changes: pd.DataFrame, floor: noise.NoiseFloor, languages: Sequence[str], tolerance_pct: float) -> Results:
    """The statistics of ``changes`` (``changes_table``), paired against the random control and set
    against the noise floor ``floor`` of the same test examples."""
    chosen_uids = sorted(set(changes["test_uid"]))
    floor_summary = noise.summarize(floor.table, languages, chosen_uids) if not floor.table.empty else pd.DataFrame(columns=list(noise.NOISE_SUMMARY))
    floor_row = floor.overall(chosen_uids, languages)
    faith = faithfulness_table(changes, languages, dict(zip(floor_summary["test_lang"], floor_summary["p_sd"])))
    lo = levels_off_table(faith, tolerance_pct)
    return Results(changes, faith, lo, floor_summary, floor_row, chosen_uids, tolerance_pct)


def levels_off_by_method(lo: pd.DataFrame, methods: Sequence[str]) -> dict[str, dict[str, int | None]]:
    """summary.json's ``levels_off``: per method and direction, the k where the mean change levels off."""
    return {
        method: {row["direction"]: (None if pd.isna(row["levels_off_k"]) else int(row["levels_off_k"])) for _, row in lo[lo["method"] == method].iterrows()}
        for method in methods
    }


def mean_delta_by_method(faith: pd.DataFrame, methods: Sequence[str], directions: Sequence[str]) -> dict[str, dict[str, dict[int, float]]]:
    """summary.json's ``mean_delta``: per method, direction and k, the mean change over all test examples."""
    return {
        method: {
            d: {int(k): float(v) for k, v in faith[(faith["method"] == method) & (faith["direction"] == d) & (faith["test_lang"] == ALL)][["k", "mean_delta"]].itertuples(index=False)}
            for d in directions
        }
        for method in methods
    }
