"""The languages experiment's report section: the measured matrix and each method's predicted matrix as
heat maps, the plain readings built from the numbers, the faithfulness and readings tables.

The section holds one ``<p class="reading" data-verdict="languages">`` element: the sentence saying which
methods' language-level picture the retraining supports, which the "Do the conclusions depend on the
method?" section of the report repeats next to its link here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.experiments import html as fragments
from lingtrace.experiments import noise
from lingtrace.experiments.languages.columns import TABLES
from lingtrace.experiments.languages.settings import LEAVE_ONE_OUT, NAME, SHARE, SUMMED
from lingtrace.report.html import esc, verdict_paragraph


def _num(v: float, fmt: str | None = None) -> str:
    """A number for prose and figures: two decimals, or two significant digits below 0.1 (effects of a model
    that barely moves would all read 0.00); ``fmt`` forces a format (a leading "+" keeps the sign shown)."""
    if v is None or not np.isfinite(v):
        return "–"
    v = float(v)
    sign = "+" if fmt and fmt.startswith("+") else ""
    if fmt and fmt.lstrip("+") not in (".2f",):
        return format(v, fmt)
    return format(v, f"{sign}.2f") if abs(v) >= 0.1 or v == 0 else format(v, f"{sign}.2g")


def _ordinal(rank: float) -> str:
    if not np.isfinite(rank):
        return "not at all"
    r = int(rank)
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(r, f"{r}th")


def _interval(row: pd.Series, rise: bool = False) -> str:
    """The cell's interval (of the drop; of the rise, negated, when ``rise``), seed noise and fit error."""
    low, high = (-row["ci_high"], -row["ci_low"]) if rise else (row["ci_low"], row["ci_high"])
    ci = f"95% interval {_num(low)} to {_num(high)}" if np.isfinite(row["ci_low"]) else "one test example: no interval"
    floor = f"seed noise {_num(row['noise'])}" if np.isfinite(row["noise"]) else "no seed noise measured"
    fit = f"; fit standard error {_num(row['fit_se'])}" if np.isfinite(row["fit_se"]) else ""
    return f"{ci}; {floor}{fit}"


# ---------------------------------------------------------------- readings


def _moves(drop: float) -> str:
    """The verb for a cell's mean drop of the margins: a negative drop is a rise."""
    return "lowers" if drop >= 0 else "raises"


def language_readings(matrix: pd.DataFrame, readings: pd.DataFrame, design: str, methods: Sequence[str], test_order: Sequence[str]) -> list[str]:
    """Per test language: what removing the language it relies on most (apart from its own) does, and how each
    method ranks that language by its summed scores."""
    out = []
    cells = matrix.set_index(["test_lang", "train_lang"])
    removing = "Removing the" if design == LEAVE_ONE_OUT else "Under the linear mixture model, removing all of the"
    for x in test_order:
        mine = readings[(readings["test_lang"] == x)]
        if mine.empty or not mine["measured_top_other"].iloc[0]:
            continue
        y = mine["measured_top_other"].iloc[0]
        row = cells.loc[(x, y)]
        own = f" (removing {x} itself: {_num(cells.loc[(x, x), 'mean'])})" if (x, x) in cells.index else ""
        if row["within_noise"]:
            text = (
                f"{removing} {y} training data {_moves(row['mean'])} {x} test margins by {_num(abs(row['mean']))} ({_interval(row, row['mean'] < 0)}), the largest "
                f"drop among the languages other than {x}, and it is within retraining noise{own}: {x} does not measurably rely on any "
                "single other language. Parallel data can make each language replaceable by its translations: that is a finding about the model."
            )
        elif row["mean"] > 0:
            ranks = mine[mine["predictor"] == SUMMED].set_index("method")["rank_of_measured_top_other"]
            shares = mine[mine["predictor"] == SHARE].set_index("method")["rank_of_measured_top_other"]
            said = "; ".join(f"{m} ranks {y} {_ordinal(ranks.get(m, np.nan))}" for m in methods)
            fig2 = f" and the Fig. 2 top-k shares of {methods[0]} rank it {_ordinal(shares.get(methods[0], np.nan))}" if methods else ""
            text = (
                f"{removing} {y} training data lowers {x} test margins by {_num(row['mean'])} ({_interval(row)}): {x} relies on {y}{own}. "
                f"By summed scores, {said} among the other languages for {x}{fig2}; the retraining ranks it first."
            )
        else:
            text = (
                f"{removing} training data of any other language does not lower {x} test margins: removing {y}, the smallest rise, "
                f"raises them by {_num(abs(row['mean']))} ({_interval(row, rise=True)}){own}."
            )
        out.append(text)
    return out


def method_readings(faith: pd.DataFrame) -> list[str]:
    out = []
    for method, rows in faith.groupby("method", sort=False):
        parts = []
        for _, r in rows.iterrows():
            what = "summed scores" if r["predictor"] == SUMMED else "Fig. 2 top-k shares"
            flag = ": not distinguishable from chance" if not r["distinguishable"] else ": below chance, the opposite of the retraining" if r["lds_ci_high"] < 0 else ""
            parts.append(
                f"by its {what}, language-level LDS {_num(r['lds_mean'])} (95% interval {_num(r['lds_ci_low'])} to {_num(r['lds_ci_high'])}, "
                f"{int(r['n_test'])} test examples, {int(r['n_langs'])} training languages{flag}); the predicted matrix correlates with the "
                f"measured one at Pearson {_num(r['matrix_pearson'])}, Spearman {_num(r['matrix_spearman'])} ({int(r['n_cells'])} cells), "
                f"and it picks the measured top language apart from their own for {int(r['top_other_agree'])} of {int(r['n_test_langs'])} test languages"
            )
        out.append(f"{method}: " + "; ".join(parts) + ".")
    return out


def verdict(faith: pd.DataFrame, matrix: pd.DataFrame) -> str:
    """Which methods' language-level picture the retraining supports (language-level LDS interval above 0)."""

    def split(predictor: str) -> tuple[list[str], list[str]]:
        rows = faith[faith["predictor"] == predictor]
        yes = [str(m) for m, low in zip(rows["method"], rows["lds_ci_low"]) if np.isfinite(low) and low > 0]
        return yes, [str(m) for m in rows["method"] if m not in yes]

    yes, no = split(SUMMED)
    yes_share, _ = split(SHARE)
    if yes:
        text = f"The retraining supports the language-level picture of {', '.join(yes)} (language-level LDS interval above 0)"
        text += f"; not of {', '.join(no)} (interval includes 0 or lies below it)." if no else "."
    else:
        text = "The retraining supports no method's language-level picture: every language-level LDS interval includes 0 (or lies below it)."
    text += (
        f" Their Fig. 2 top-k shares are supported for {', '.join(yes_share)}." if yes_share else " No method's Fig. 2 top-k shares are supported."
    )
    if len(matrix) and matrix["within_noise"].all():
        text += " Every removal effect is within retraining noise, so these correlations rest on effects the seed alone could produce."
    return text


# ---------------------------------------------------------------- figures


def _heat(ax, fig, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], labels: list[list[str]], cmap: str, vmin: float, vmax: float, bar: str):
    import matplotlib

    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=list(cols))
    ax.set_yticks(range(len(rows)), labels=list(rows))
    cm = matplotlib.colormaps[cmap]
    span = (vmax - vmin) or 1.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            r, g, b, _ = cm((v - vmin) / span) if np.isfinite(v) else (1, 1, 1, 1)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(bar)


def _symmetric(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if len(finite) and finite.max() > 0 else 1.0


def measured_figure(matrix: pd.DataFrame, test_order: Sequence[str], languages: Sequence[str], design: str):
    from lingtrace.report.figures import subplots

    cells = matrix.set_index(["test_lang", "train_lang"])
    values = np.array([[cells.loc[(x, y), "mean"] for y in languages] for x in test_order], dtype=float)
    labels = []
    for x in test_order:
        row = []
        for y in languages:
            c = cells.loc[(x, y)]
            ci = f"\n[{_num(c['ci_low'])}, {_num(c['ci_high'])}]" if np.isfinite(c["ci_low"]) else ""
            row.append(f"{_num(c['mean'])}{ci}" + ("\n(noise)" if c["within_noise"] else ""))
        labels.append(row)
    noise_of = matrix.drop_duplicates("test_lang").set_index("test_lang")["noise"]
    ylabels = [f"{x} (noise {_num(noise_of.get(x, np.nan))})" for x in test_order]
    fig, ax = subplots(figsize=(max(4.8, 1.1 * len(languages) + 3.0), max(3.0, 0.7 * len(test_order) + 1.6)))
    lim = _symmetric(values)
    _heat(ax, fig, values, ylabels, languages, labels, "RdBu_r", -lim, lim, "margin drop when removed" if design == LEAVE_ONE_OUT else "margin per unit fraction")
    ax.set_xlabel("training language removed")
    ax.set_ylabel("test language (seed-noise floor)")
    ax.set_title("Measured: mean drop of the correct-class margin (95% interval)", fontsize=10)
    fig.tight_layout()
    return fig


def methods_figure(predicted: pd.DataFrame, methods: Sequence[str], test_order: Sequence[str], languages: Sequence[str]):
    from lingtrace.report.figures import subplots

    n = max(1, len(methods))
    fig, axes = subplots(n, 2, figsize=(max(9.0, 2.0 * len(languages) + 5.0), max(3.0, (0.6 * len(test_order) + 1.4) * n)), squeeze=False)
    for r, method in enumerate(methods):
        p = predicted[predicted["method"] == method].set_index(["test_lang", "train_lang"])
        for c, (col, title, cmap, bar) in enumerate(
            (("predicted", "predicted effect (summed scores)", "RdBu_r", "summed score"), ("share", "Fig. 2: % of the top-k", "viridis", "% of the top-k"))
        ):
            values = np.array([[p.loc[(x, y), col] for y in languages] for x in test_order], dtype=float)
            labels = [[_num(v, ".3g") if col == "predicted" else _num(v, ".0f") for v in row] for row in values]
            finite = values[np.isfinite(values)]
            if col == "share":
                lo, hi = 0.0, max(1.0, float(finite.max()) if len(finite) else 1.0)
            elif len(finite) and (finite.min() >= 0 or finite.max() <= 0):  # one sign: a sequential scale shows the differences
                cmap = "Reds" if finite.min() >= 0 else "Blues_r"
                lo, hi = float(finite.min()), float(finite.max())
                lo, hi = (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)
            else:
                lo, hi = -_symmetric(values), _symmetric(values)
            ax = axes[r][c]
            _heat(ax, fig, values, test_order, languages, labels, cmap, lo, hi, bar)
            ax.set_title(f"{method}: {title}", fontsize=9)
            ax.set_xlabel("training language")
            ax.set_ylabel("test language")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the section


def readings_overview(readings: pd.DataFrame, test_order: Sequence[str]) -> pd.DataFrame:
    """test language x (measured top, measured top other, each method and predictor's top other)."""
    first = readings.drop_duplicates("test_lang").set_index("test_lang")
    out = pd.DataFrame(index=list(test_order))
    out.index.name = "test language"
    out["measured: top"] = first["measured_top"].reindex(out.index)
    out["measured: top other"] = [
        f"{first.loc[x, 'measured_top_other']}{' (within noise)' if first.loc[x, 'measured_top_other_within_noise'] else ''}" for x in out.index
    ]
    for (method, predictor), rows in readings.groupby(["method", "predictor"], sort=False):
        r = rows.set_index("test_lang")
        out[f"{method} ({predictor}): top other"] = [
            f"{r.loc[x, 'predicted_top_other']}{' ✓' if r.loc[x, 'agrees_top_other'] else ''}" for x in out.index
        ]
    return out


def body(pngs: dict[str, bytes], res: Any, tables: list[str], floor: noise.NoiseFloor, verdict_text: str) -> str:
    from lingtrace.report.html import table_html

    overview = readings_overview(res.readings, res.test_order)
    parts = [
        verdict_paragraph(NAME, verdict_text),
        fragments.figure(
            pngs["measured"],
            "measured effect of removing each training language",
            "Measured: mean drop of the correct-class margin of each test language's selected examples when a training language is removed "
            "(95% bootstrap interval over the test examples); '(noise)' marks cells within retraining noise; row labels give the seed-noise floor.",
        ),
        fragments.figure(
            pngs["methods"],
            "each method's predicted effect and Fig. 2 shares",
            "Per method: the predicted effect of removing each training language (the sum of its scores over that language's training "
            "examples, mean over the test language's examples) and the paper's Fig. 2 reading (the language's share of the top-k).",
        ),
        "<h3>How well each method's language-level picture matches the retraining</h3>",
        fragments.table(res.faithfulness, text_columns=["method", "predictor"]),
        "<h3>The training language each test language relies on most apart from its own</h3>",
        table_html(overview, index=True, text_columns=tuple(overview.columns)),
        f"<p class='note'>{esc(noise.describe(floor))}</p>",
        "<details class='more'><summary>The measured matrix</summary>" + fragments.table(res.matrix, text_columns=["design", "test_lang", "train_lang"]) + "</details>",
        "<details class='more'><summary>Each method's predicted matrix and Fig. 2 shares</summary>"
        + fragments.table(res.predicted, text_columns=["method", "test_lang", "train_lang"])
        + "</details>",
        "<details class='more'><summary>Readings per method and test language</summary>"
        + fragments.table(res.readings, text_columns=["method", "predictor", "test_lang", "measured_top", "measured_top_other", "predicted_top", "predicted_top_other"])
        + "</details>",
        *(fragments.columns_doc(NAME, t, TABLES[t.removesuffix(".parquet")]) for t in tables),
        fragments.columns_doc(NAME, f"../{noise.NAME}/noise.parquet", noise.NOISE),
    ]
    return "\n".join(parts)
