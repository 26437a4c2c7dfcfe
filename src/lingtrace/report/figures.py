"""The report's figures: one function per analysis, tables in, ``Figure`` out.

Figures are made with matplotlib's object-oriented API on the Agg canvas (no pyplot, so no global
backend or figure state: safe in any process, headless). Every figure labels its axes with language
codes, has a colour bar where colour carries a value, and prints the numbers in heat-map cells, so it
can be read without the table beside it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lingtrace.analysis.common import ALL, DIRECTIONS, NEGATIVE, POSITIVE, SUMMED

DPI = 110
DIRECTION_TITLE = {POSITIVE: "most positively influential (top-k)", NEGATIVE: "most negatively influential (top-k)"}


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.0), **kwargs):
    """A new figure on an Agg canvas and its axes (like ``pyplot.subplots``, without pyplot)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _heatmap(ax, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], cmap: str, vmin: float, vmax: float, fmt: str, label: str, fig):
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=list(cols))
    ax.set_yticks(range(len(rows)), labels=list(rows))
    cm = matplotlib.colormaps[cmap]
    span = (vmax - vmin) or 1.0
    small = len(rows) * len(cols) <= 144
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            if not small or not np.isfinite(v):
                continue
            r, g, b, _ = cm((v - vmin) / span)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label(label)
    return im


def _pivot(frame: pd.DataFrame, value: str, rows: Sequence[str], cols: Sequence[str], index="test_lang", columns="train_lang") -> np.ndarray:
    p = frame.pivot_table(index=index, columns=columns, values=value, aggfunc="first")
    return p.reindex(index=list(rows), columns=list(cols)).to_numpy(dtype=np.float64)


def dev_accuracy(manifest: dict) -> Figure | None:
    epochs = manifest.get("epochs") or []
    if not epochs:
        return None
    fig, ax = subplots(figsize=(6.4, 3.6))
    xs = [e["epoch"] for e in epochs]
    langs = sorted({lang for e in epochs for lang in e.get("dev_accuracy_per_lang", {})})
    for lang in langs:
        ax.plot(xs, [100 * e["dev_accuracy_per_lang"].get(lang, np.nan) for e in epochs], marker="o", label=lang, lw=1.2)
    ax.plot(xs, [100 * e["dev_accuracy"] for e in epochs], marker="s", color="black", lw=2.2, label="all")
    final = manifest.get("final_epoch")
    if final is not None:
        ax.axvline(final, color="grey", ls=":", lw=1)
        ax.annotate("final model", (final, ax.get_ylim()[0]), xytext=(3, 3), textcoords="offset points", fontsize=8, color="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_xticks(xs)
    ax.set_title("Dev accuracy per epoch")
    ax.legend(title="language", fontsize=8, ncols=2, loc="best")
    ax.grid(alpha=0.3)
    return fig


def language_shares(shares: pd.DataFrame, test_order: Sequence[str], train_order: Sequence[str], epoch: int = SUMMED) -> Figure:
    sel = shares[shares["epoch"] == epoch]
    w = max(4.2, 0.75 * len(train_order) + 2.2)
    fig, axes = subplots(1, 2, figsize=(2 * w, max(3.2, 0.55 * len(test_order) + 1.6)))
    for ax, d in zip(axes, DIRECTIONS):
        vals = _pivot(sel[sel["direction"] == d], "share", test_order, train_order)
        _heatmap(ax, vals, test_order, train_order, "viridis", 0.0, max(1.0, float(np.nanmax(vals)) if np.isfinite(vals).any() else 1.0), ".0f", "% of the top-k", fig)
        ax.set_xlabel("training language")
        ax.set_ylabel("test language")
        ax.set_title(DIRECTION_TITLE[d], fontsize=10)
    fig.suptitle("Share of the top-k training examples from each training language" + ("" if epoch == SUMMED else f" (epoch {epoch})"))
    fig.tight_layout()
    return fig


def average_influence(avg: pd.DataFrame, test_order: Sequence[str], train_order: Sequence[str]) -> Figure:
    sel = avg[avg["epoch"] == SUMMED]
    vals = _pivot(sel, "mean_score", test_order, train_order)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    lim = lim or 1.0
    fig, ax = subplots(figsize=(max(4.5, 0.8 * len(train_order) + 2.5), max(3.2, 0.55 * len(test_order) + 1.4)))
    fmt = ".3f" if lim < 1 else ".2f"
    _heatmap(ax, vals, test_order, train_order, "RdBu_r", -lim, lim, fmt, "mean TracIn score", fig)
    ax.set_xlabel("training language")
    ax.set_ylabel("test language")
    ax.set_title("Average influence of all training examples (summed score)")
    fig.tight_layout()
    return fig


def translation_overlap(overlap: pd.DataFrame, test_order: Sequence[str]) -> Figure:
    sel = overlap[overlap["train_lang"] == ALL]
    langs = [lang for lang in [*test_order, ALL] if lang in set(sel["test_lang"])]
    fig, ax = subplots(figsize=(max(5.0, 0.9 * len(langs) + 2), 3.6))
    x = np.arange(len(langs))
    width = 0.38
    colors = {POSITIVE: "#2b7bba", NEGATIVE: "#d7301f"}
    for i, d in enumerate(DIRECTIONS):
        sub = sel[sel["direction"] == d].set_index("test_lang").reindex(langs)
        ax.bar(x + (i - 0.5) * width, sub["pct_translations"].to_numpy(), width, label=f"{d}: translations", color=colors[d])
        ax.scatter(x + (i - 0.5) * width, sub["pct_by_chance"].to_numpy(), marker="_", s=300, color="black", zorder=3, label="expected by chance" if i == 0 else None)
    ax.set_xticks(x, labels=langs)
    ax.set_xlabel("test language")
    ax.set_ylabel("% of cross-lingual top-k")
    ax.set_ylim(0, 100)
    ax.set_title("Cross-lingual top-k examples that are translations of in-language top-k examples")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def in_language_dynamics(inl: pd.DataFrame, test_order: Sequence[str]) -> Figure | None:
    sel = inl[inl["epoch"] != SUMMED]
    epochs = sorted(sel["epoch"].unique())
    if not epochs:
        return None
    fig, axes = subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, d in zip(axes, DIRECTIONS):
        sub = sel[sel["direction"] == d]
        for lang in [*test_order, ALL]:
            s = sub[sub["test_lang"] == lang].sort_values("epoch")
            if s.empty:
                continue
            kw = {"color": "black", "lw": 2.4} if lang == ALL else {"lw": 1.3}
            ax.plot(s["epoch"], s["share"], marker="o", label=lang, **kw)
        chance = sub[sub["test_lang"] == ALL]["train_fraction"]
        if len(chance):
            ax.axhline(float(chance.iloc[0]), color="grey", ls="--", lw=1, label="chance")
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch (checkpoint)")
        ax.set_title(DIRECTION_TITLE[d], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of the top-k in the test language")
    axes[1].legend(title="test language", fontsize=8, ncols=2)
    fig.suptitle("In-language share of the top-k per epoch")
    fig.tight_layout()
    return fig


def shares_per_epoch(shares: pd.DataFrame, test_order: Sequence[str], train_order: Sequence[str]) -> Figure | None:
    epochs = sorted(e for e in shares["epoch"].unique() if e != SUMMED)
    if not epochs:
        return None
    n = len(epochs)
    cell = min(max(2.4, 0.4 * len(train_order) + 1.0), 4.0)
    width = min(cell * n + 1.2, 26.0)
    height = 2 * min(max(2.3, 0.35 * len(test_order) + 1.1), 4.0)
    fig, axes = subplots(2, n, figsize=(width, height), squeeze=False)
    vmax = max(1.0, float(shares[shares["epoch"] != SUMMED]["share"].max()))
    annotate = len(test_order) <= 7 and len(train_order) <= 7 and n <= 6
    im = None
    for r, d in enumerate(DIRECTIONS):
        for c, e in enumerate(epochs):
            ax = axes[r, c]
            sub = shares[(shares["epoch"] == e) & (shares["direction"] == d)]
            vals = _pivot(sub, "share", test_order, train_order)
            im = ax.imshow(vals, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
            ax.set_xticks(range(len(train_order)), labels=list(train_order), fontsize=7, rotation=90 if len(train_order) > 8 else 0)
            ax.set_yticks(range(len(test_order)), labels=list(test_order) if c == 0 else [""] * len(test_order), fontsize=7)
            if annotate:
                for i in range(len(test_order)):
                    for j in range(len(train_order)):
                        if np.isfinite(vals[i, j]):
                            ax.text(j, i, f"{vals[i, j]:.0f}", ha="center", va="center", fontsize=7, color="white" if vals[i, j] < 0.6 * vmax else "black")
            ax.set_title(f"epoch {e}, {d}", fontsize=9)
            if r == 1:
                ax.set_xlabel("training language", fontsize=8)
            if c == 0:
                ax.set_ylabel("test language", fontsize=8)
    cbar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.02)
    cbar.set_label("% of the top-k")
    fig.suptitle("Share of the top-k from each training language, per epoch")
    return fig


def wilcoxon_pvalues(wil: pd.DataFrame) -> Figure | None:
    sel = wil[wil["test_lang"] == ALL]
    if sel.empty:
        return None
    measures = list(dict.fromkeys(sel["measure"]))
    epochs = sorted(set(sel["epoch_a"]) | set(sel["epoch_b"]))
    fig, axes = subplots(len(measures), 2, figsize=(9, 3.3 * len(measures) + 0.4), squeeze=False)
    for r, m in enumerate(measures):
        for c, d in enumerate(DIRECTIONS):
            ax = axes[r, c]
            mat = np.full((len(epochs), len(epochs)), np.nan)
            for row in sel[(sel["measure"] == m) & (sel["direction"] == d)].itertuples():
                i, j = epochs.index(row.epoch_a), epochs.index(row.epoch_b)
                mat[i, j] = mat[j, i] = row.p_value
            labels = [str(e) for e in epochs]
            _heatmap(ax, mat, labels, labels, "magma", 0.0, 1.0, ".2g", "p-value", fig)
            ax.set_xlabel("epoch")
            ax.set_ylabel("epoch")
            ax.set_title(f"{m.replace('_', ' ')}, {d}", fontsize=9)
    fig.suptitle("Wilcoxon signed-rank p-values between epochs (all test examples)")
    fig.tight_layout()
    return fig


def score_distributions(topk: pd.DataFrame, test_order: Sequence[str], train_order: Sequence[str]) -> Figure:
    sel = topk[topk["epoch"] == SUMMED]
    langs = list(test_order) or [""]
    ncols = min(len(langs), 5)
    per_dir = -(-len(langs) // ncols)  # rows of panels per direction
    fig, axes = subplots(2 * per_dir, ncols, figsize=(max(6.0, 2.7 * ncols), 3.0 * 2 * per_dir + 0.4), squeeze=False)
    for r, d in enumerate(DIRECTIONS):
        for i, lang in enumerate(langs):
            ax = axes[r * per_dir + i // ncols, i % ncols]
            sub = sel[(sel["direction"] == d) & (sel["test_lang"] == lang)]
            data = [sub.loc[sub["train_lang"] == t, "score"].to_numpy() for t in train_order]
            present = [j for j, v in enumerate(data) if len(v)]
            if present:
                bp = ax.boxplot([data[j] for j in present], positions=present, widths=0.6, patch_artist=True, flierprops={"markersize": 2}, medianprops={"color": "black"})
                for j, box in zip(present, bp["boxes"]):
                    box.set_facecolor("#f4a582" if train_order[j] == lang else "#92c5de")
            ax.set_xticks(range(len(train_order)), labels=list(train_order), fontsize=8, rotation=90 if len(train_order) > 8 else 0)
            ax.set_xlim(-0.6, len(train_order) - 0.4)
            ax.set_title(f"test {lang}, {d}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if i % ncols == 0:
                ax.set_ylabel("summed TracIn score", fontsize=8)
            ax.set_xlabel("training language", fontsize=8)
        for i in range(len(langs), per_dir * ncols):
            axes[r * per_dir + i // ncols, i % ncols].set_visible(False)
    fig.suptitle("Scores of the top-k per training language (orange: the test language itself)")
    fig.tight_layout()
    return fig


def script_purity(purity: pd.DataFrame) -> Figure | None:
    sel = purity[purity["test_lang"] == ALL]
    if sel.empty:
        return None
    langs = list(dict.fromkeys(sel["train_lang"]))
    x = np.arange(len(langs))
    fig, ax = subplots(figsize=(max(5.0, 1.0 * len(langs) + 2), 3.6))
    width = 0.27
    base = sel.drop_duplicates("train_lang").set_index("train_lang").reindex(langs)
    ax.bar(x - width, base["pct_pure_train"].to_numpy(), width, label="all training examples", color="#bdbdbd")
    for i, (d, color) in enumerate(((POSITIVE, "#2b7bba"), (NEGATIVE, "#d7301f"))):
        sub = sel[sel["direction"] == d].set_index("train_lang").reindex(langs)
        ax.bar(x + i * width, sub["pct_pure_topk"].to_numpy(), width, label=f"top-k {d}", color=color)
    ax.set_xticks(x, labels=[f"{lang}\n({s})" for lang, s in zip(langs, base["expected_script"])], fontsize=8)
    ax.set_xlabel("training language (expected script)")
    ax.set_ylabel("% written only in the expected script")
    ax.set_ylim(0, 105)
    ax.set_title("Examples written fully in their language's script")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def word_embedding_share(we: pd.DataFrame, test_order: Sequence[str], train_order: Sequence[str]) -> Figure | None:
    panels = [(POSITIVE, "share", "top-k positive: % of the summed score"), ("all", "abs_share", "all pairs: % of |influence| (abs share)")]
    panels = [p for p in panels if not we[we["direction"] == p[0]].empty]
    if not panels:
        return None
    w = max(4.2, 0.75 * len(train_order) + 2.2)
    fig, axes = subplots(1, len(panels), figsize=(w * len(panels), max(3.2, 0.55 * len(test_order) + 1.6)), squeeze=False)
    for ax, (d, col, title) in zip(axes[0], panels):
        vals = _pivot(we[we["direction"] == d], col, test_order, train_order)
        finite = vals[np.isfinite(vals)]
        hi = max(1.0, float(finite.max())) if finite.size else 100.0
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        _heatmap(ax, vals, test_order, train_order, "cividis", lo, hi, ".0f", "% from word embeddings", fig)
        ax.set_xlabel("training language")
        ax.set_ylabel("test language")
        ax.set_title(title, fontsize=10)
    fig.suptitle("Share of the influence that flows through the word embeddings")
    fig.tight_layout()
    return fig


def methods_in_language(inl: pd.DataFrame, test_order: Sequence[str], methods: Sequence[str]) -> Figure | None:
    """Grouped bars: the in-language share of the positive top-k per test language, one bar per method;
    black marks: the share expected by chance."""
    sel = inl[inl["direction"] == POSITIVE]
    langs = [lang for lang in [*test_order, ALL] if lang in set(sel["test_lang"])]
    if sel.empty or not langs:
        return None
    fig, ax = subplots(figsize=(max(6.4, 0.9 * len(langs) * max(1, len(methods)) / 2), 3.8))
    x = np.arange(len(langs))
    width = 0.8 / max(1, len(methods))
    colors = matplotlib.colormaps["tab10"]
    for i, method in enumerate(methods):
        sub = sel[sel["method"] == method].set_index("test_lang").reindex(langs)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, sub["share"].to_numpy(), width, label=method, color=colors(i % 10))
    chance = sel.drop_duplicates("test_lang").set_index("test_lang").reindex(langs)["train_fraction"].to_numpy()
    ax.scatter(x, chance, marker="_", s=400, color="black", label="chance", zorder=3)
    ax.set_xticks(x, labels=langs)
    ax.set_xlabel("test language")
    ax.set_ylabel("in-language % of the top-k (positive)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncols=min(4, len(methods) + 1))
    return fig


def methods_topk_overlap(per_example: pd.DataFrame) -> Figure | None:
    """Box plots over the test examples of the top-k overlap of every method pair, positive and negative."""
    if per_example.empty:
        return None
    pairs = list(dict.fromkeys(zip(per_example["method_a"], per_example["method_b"])))
    fig, axes = subplots(1, len(DIRECTIONS), figsize=(max(6.4, 1.6 * len(pairs) * len(DIRECTIONS)), 3.8), sharey=True, squeeze=False)
    for ax, direction in zip(axes[0], DIRECTIONS):
        sel = per_example[per_example["direction"] == direction]
        data = [sel[(sel["method_a"] == a) & (sel["method_b"] == b)]["overlap"].to_numpy(dtype=np.float64) for a, b in pairs]
        ax.boxplot(data, positions=range(len(pairs)), widths=0.6, medianprops={"color": "black"}, flierprops={"markersize": 2})
        ax.set_xticks(range(len(pairs)), labels=[f"{a}\nvs {b}" for a, b in pairs], fontsize=8)
        ax.set_title(DIRECTION_TITLE[direction], fontsize=10)
        ax.set_ylim(-2, 102)
    axes[0][0].set_ylabel("% of the top-k shared")
    return fig
