"""k-selection's report section: the figure, the prose (readings, cost, notes) and the HTML body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE
from lingtrace.experiments import html as section_html
from lingtrace.experiments import noise
from lingtrace.experiments.kselect.columns import TABLES
from lingtrace.experiments.kselect.settings import NAME, RANDOM
from lingtrace.experiments.kselect.stats import Results
from lingtrace.report.html import pct, pvalue


def figure(faith: pd.DataFrame, lo: pd.DataFrame, floor_row: dict[str, Any]):
    """One panel per method: mean change against k per direction, the noise floor as a band."""
    from lingtrace.report.figures import subplots

    colors = {POSITIVE: "#2b7bba", NEGATIVE: "#c0392b", RANDOM: "#7f7f7f"}
    labels = {POSITIVE: "most positive removed", NEGATIVE: "most negative removed", RANDOM: "random control"}
    methods = list(dict.fromkeys(faith["method"]))
    fig, axes = subplots(1, len(methods), figsize=(3.6 * len(methods) + 1.2, 4.2), sharey=True, squeeze=False)
    allrows = faith[faith["test_lang"] == ALL]
    ks = sorted(allrows["k"].unique())
    step = (max(ks) - min(ks)) / 60 if len(ks) > 1 else 0.5
    for ax, method in zip(axes[0], methods, strict=True):
        mine = allrows[allrows["method"] == method]
        if floor_row:
            band = floor_row["max_abs_mean_delta_p"]
            ax.axhspan(-band, band, color="#dddddd", alpha=0.6, label="seed alone (largest mean change)")
        for i, d in enumerate((POSITIVE, NEGATIVE, RANDOM)):
            sub = mine[mine["direction"] == d].sort_values("k")
            if sub.empty:
                continue
            x = sub["k"].to_numpy(dtype=float) + (i - 1) * step
            ax.errorbar(x, sub["mean_delta"], yerr=sub["std_delta"], marker="o", capsize=3, color=colors[d], label=labels[d])
            k = lo.loc[(lo["method"] == method) & (lo["direction"] == d), "levels_off_k"]
            if d == POSITIVE and len(k) and not pd.isna(k.iloc[0]):
                ax.axvline(float(k.iloc[0]), color=colors[d], linestyle=":", linewidth=1)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(ks)
        ax.set_xlabel("k (top-k removed per test example)")
        ax.set_title(method, fontsize=10)
    axes[0][0].set_ylabel("change in P(correct class)")
    axes[0][0].legend(fontsize=7, loc="best")
    n = int(allrows["n_test"].max()) if len(allrows) else 0
    fig.suptitle(f"Retraining without the top-k: mean ± std over {n} test examples", fontsize=10)
    return fig


def _readings(faith: pd.DataFrame, lo: pd.DataFrame, tol: float) -> list[str]:
    """A sentence per method and direction at the largest k, and where the positive removal levels off."""
    allrows = faith[faith["test_lang"] == ALL]
    if allrows.empty:
        return []
    kmax = int(allrows["k"].max())
    out = []
    for method in dict.fromkeys(allrows["method"]):
        at = allrows[(allrows["method"] == method) & (allrows["k"] == kmax)].set_index("direction")
        for d, what in ((POSITIVE, "most positively"), (NEGATIVE, "most negatively")):
            if d not in at.index:
                continue
            row = at.loc[d]
            verb = "lowered" if row["mean_delta"] < 0 else "raised"
            text = (
                f"{method}: at k = {kmax}, retraining without the {what} influential training examples ({row['n_removed_mean']:.0f} removed on average) "
                f"{verb} the probability of the correct class by {abs(row['mean_delta']):.3f} on average (std {row['std_delta']:.3f}, {int(row['n_test'])} test examples)"
            )
            if RANDOM in at.index:
                text += f", against a change of {at.loc[RANDOM, 'mean_delta']:+.3f} when as many random examples are removed"
                if np.isfinite(row["p_vs_random"]):
                    text += f" (paired Wilcoxon p = {row['p_vs_random']:.3g})"
            text += "."
            detectable = row["detectable_vs_random"]
            if np.isfinite(row["mean_minus_random"]) and np.isfinite(detectable):
                if abs(row["mean_minus_random"]) < detectable:
                    text += (
                        f" The difference from the control ({row['mean_minus_random']:+.3f}) is within the retraining noise: with "
                        f"{int(row['n_test'])} test examples and the seed spread measured here, only a difference of {detectable:.3f} or more "
                        "would be detected reliably (80% power), so this test is underpowered for it."
                    )
                else:
                    text += f" The difference from the control ({row['mean_minus_random']:+.3f}) exceeds the {detectable:.3f} this test detects reliably against the seed noise."
            out.append(text)
        pos = lo[(lo["method"] == method) & (lo["direction"] == POSITIVE)]
        if len(pos):
            k = pos["levels_off_k"].iloc[0]
            if pd.isna(k):
                out.append(f"{method}: the mean change for the positive removal is still moving at the largest k ({kmax}): it does not level off within this sweep (tolerance {tol:g}% of its range).")
            else:
                out.append(f"{method}: the mean change for the positive removal levels off at k = {int(k)}: after it, it moves by at most {tol:g}% of its range over the sweep.")
    return out


GROUPING_TEXT = {
    "example": "one retraining per test example (the paper's protocol)",
    "language": "one retraining per test language, removing the union of the top-k of its test examples",
    "all": "one retraining for all chosen test examples, removing the union of their top-k",
}


def _cost_text(plan: pd.DataFrame, methods: Sequence[str], st: dict[str, Any], floor: noise.NoiseFloor, n_test: int, mean_t: float | None) -> str:
    per_lang = "all selected" if st["k_test_per_lang"] is None else f"up to {st['k_test_per_lang']}"
    return (
        f"{len(plan)} retrainings for {len(methods)} method(s) ({', '.join(methods)}): {plan['group'].nunique()} group(s) x {len(st['ks'])} values of k x "
        f"{len(st['k_directions'])} removals ({', '.join(st['k_directions'])}) per method, identical training sets retrained once, "
        f"plus {len(floor.seeds)} noise-floor retraining(s) shared with lds; grouping '{st['k_grouping']}': {GROUPING_TEXT[st['k_grouping']]}; {n_test} test examples "
        f"({per_lang} per language of {', '.join(st['k_languages'])}, drawn with seed {st['seed']}). Every retraining uses the "
        f"base run's data minus the removed examples and the base run's model, training config and seed: only the data differs."
        + (f" Training took {mean_t:.0f} s per retraining on average here." if mean_t else "")
    )


def _notes(tol: float) -> list[str]:
    return [
        "The change is P(correct class | retrained final model) - P(correct class | base final model) on the same test example.",
        "The random control removes as many examples as the positive removal of the same method, group and k, drawn from the whole "
        "training set with a seed that does not involve the scores; comparing the two separates the effect of influence from "
        "the effect of retraining on less data (and of retraining noise).",
        f"'Levels off': the smallest k after which the mean change moves by at most {tol:g}% of its range over the sweep (k = 0, change 0 included).",
        "Detectable difference: (1.96 + 0.84) x sqrt(2) x the seed spread of P(correct class) / sqrt(test examples), the paired "
        "difference against the control found 80% of the time at the 5% level when both retrained models carry the seed noise.",
    ]


def prose(res: Results, plan: pd.DataFrame, methods: Sequence[str], st: dict[str, Any], floor: noise.NoiseFloor, mean_train_seconds: float | None) -> dict[str, Any]:
    """The section's ``readings``, ``cost`` (text) and ``notes``."""
    return {
        "readings": [*_readings(res.faithfulness, res.levels_off, res.tolerance_pct), noise.describe(floor, res.chosen_uids, st["k_languages"])],
        "cost": _cost_text(plan, methods, st, floor, len(res.chosen_uids), mean_train_seconds),
        "notes": _notes(res.tolerance_pct),
    }


def body(png: bytes, res: Results, tables: Sequence[str]) -> str:
    """The section's HTML body: the figure, the tables and their columns."""
    faith = res.faithfulness
    fmt = {"flip_pct": pct, "p_vs_random": pvalue}
    parts = [
        section_html.figure(png, "change in the probability of the correct class against k, per method", "Mean change (± std over test examples) in the probability of the correct class after retraining, per method; grey band: the largest mean change from the seed alone; dotted line: where the positive removal levels off."),
        "<h3>Mean change per k (all test examples)</h3>",
        section_html.table(faith[faith["test_lang"] == ALL].drop(columns=["test_lang", "q25_delta", "q75_delta"]), formats=fmt, text_columns=["method"]),
        "<h3>Where the change levels off</h3>",
        section_html.table(res.levels_off, formats={"levels_off_k": lambda x: "not within the sweep" if pd.isna(x) else str(int(x))}, text_columns=["method"]),
        "<h3>The noise floor (the same training set, other seeds)</h3>",
        section_html.table(res.floor_summary, text_columns=["test_lang"]),
        "<details class='more'><summary>Per test language</summary>" + section_html.table(faith[faith["test_lang"] != ALL], formats=fmt, text_columns=["method", "test_lang"]) + "</details>",
        *(section_html.columns_doc(NAME, t, TABLES[t.removesuffix(".parquet")]) for t in tables),
        section_html.columns_doc(NAME, f"../{noise.NAME}/noise_summary.parquet", noise.NOISE_SUMMARY),
    ]
    return "\n".join(parts)
