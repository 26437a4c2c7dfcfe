"""One plain-language sentence per analysis, computed from its table (what the numbers say)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE, SUMMED


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f}%"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def language_shares(inl: pd.DataFrame, k: int) -> str:
    sel = inl[(inl["epoch"] == SUMMED) & (inl["direction"] == POSITIVE)]
    per = sel[sel["test_lang"] != ALL]
    overall = sel[sel["test_lang"] == ALL]
    if per.empty or overall.empty:
        return "No test example has top-k results."
    hi = per.loc[per["share"].idxmax()]
    lo = per.loc[per["share"].idxmin()]
    o = overall.iloc[0]
    return (
        f"On average {_pct(o['share'])} of a test example's {k} most positively influential training examples are in "
        f"its own language ({_pct(o['train_fraction'])} expected by chance): from {_pct(lo['share'])} for "
        f"{lo['test_lang']} to {_pct(hi['share'])} for {hi['test_lang']}; the rest comes from other languages."
    )


def average_influence(avg: pd.DataFrame) -> str:
    sel = avg[avg["epoch"] == SUMMED]
    if sel.empty:
        return "No scores."
    same = sel[sel["test_lang"] == sel["train_lang"]]
    cross = sel[sel["test_lang"] != sel["train_lang"]]

    def wmean(f: pd.DataFrame) -> float:
        return float((f["mean_score"] * f["n_pairs"]).sum() / f["n_pairs"].sum()) if f["n_pairs"].sum() else float("nan")

    parts = []
    if not same.empty and not cross.empty:
        parts.append(f"In-language pairs have a mean score of {wmean(same):.3g}, cross-lingual pairs {wmean(cross):.3g}")
    best = cross.loc[cross["mean_score"].idxmax()] if not cross.empty else None
    if best is not None:
        parts.append(f"the most helpful other language is {best['train_lang']} for {best['test_lang']} test examples ({best['mean_score']:.3g})")
    return "; ".join(parts) + "." if parts else "Only one language pair."


def translation_overlap(ov: pd.DataFrame) -> str:
    pos = ov[(ov["direction"] == POSITIVE) & (ov["test_lang"] == ALL) & (ov["train_lang"] == ALL)]
    neg = ov[(ov["direction"] == NEGATIVE) & (ov["test_lang"] == ALL) & (ov["train_lang"] == ALL)]
    if pos.empty:
        return "No cross-lingual top-k examples."
    p = pos.iloc[0]
    kind = "mostly reinforce" if p["pct_translations"] >= 50 else "mostly complement"
    text = (
        f"{_pct(p['pct_translations'])} of the positively influential examples from other languages are translations of "
        f"in-language top-k examples ({_pct(p['pct_by_chance'])} expected by chance), so other languages {kind} the "
        "test language's own data"
    )
    if not neg.empty:
        text += f"; for negative influence it is {_pct(neg.iloc[0]['pct_translations'])}"
    return text + "."


def dynamics(inl: pd.DataFrame, wil: pd.DataFrame | None) -> str:
    sel = inl[(inl["epoch"] != SUMMED) & (inl["direction"] == POSITIVE) & (inl["test_lang"] == ALL)].sort_values("epoch")
    if len(sel) < 2:
        return "Only one checkpoint: there are no dynamics to show."
    first, last = sel.iloc[0], sel.iloc[-1]
    trend = "falls" if last["share"] < first["share"] else "rises" if last["share"] > first["share"] else "stays"
    text = (
        f"The in-language share of the top-k positive examples {trend} from {_pct(first['share'])} at epoch "
        f"{int(first['epoch'])} to {_pct(last['share'])} at epoch {int(last['epoch'])}"
    )
    if wil is not None and not wil.empty:
        w = wil[
            (wil["measure"] == "in_language_share")
            & (wil["direction"] == POSITIVE)
            & (wil["test_lang"] == ALL)
            & (wil["epoch_a"] == first["epoch"])
            & (wil["epoch_b"] == last["epoch"])
        ]
        r = wil[
            (wil["measure"] == "mean_rank_of_top_k")
            & (wil["direction"] == POSITIVE)
            & (wil["test_lang"] == ALL)
            & (wil["epoch_a"] == first["epoch"])
            & (wil["epoch_b"] == last["epoch"])
        ]
        if not w.empty:
            text += f" (Wilcoxon {_p(w.iloc[0]['p_value'])}, n = {int(w.iloc[0]['n'])})"
        if not r.empty:
            text += (
                f"; the overall top-k have a mean rank of {r.iloc[0]['mean_a']:.0f} at epoch {int(first['epoch'])} and "
                f"{r.iloc[0]['mean_b']:.0f} at epoch {int(last['epoch'])} ({_p(r.iloc[0]['p_value'])})"
            )
    return text + "."


def score_distributions(dist: pd.DataFrame) -> str:
    sel = dist[dist["direction"] == POSITIVE]
    langs = list(dict.fromkeys(sel["test_lang"]))
    wins = 0
    counted = 0
    for lang in langs:
        sub = sel[sel["test_lang"] == lang]
        own = sub[sub["train_lang"] == lang]
        other = sub[sub["train_lang"] != lang]
        if own.empty or other.empty:
            continue
        counted += 1
        wins += bool(own["median"].iloc[0] >= other["median"].max())
    if not counted:
        return "The top-k of each test language come from a single training language."
    return (
        f"In {wins} of {counted} test languages the in-language top-k positive examples have the highest median score; "
        "elsewhere some other language's examples score higher."
    )


def examples(n_test: int, browser_k: int) -> str:
    return (
        f"The browser below lists all {n_test} test examples; open one to see its {browser_k} most positively and most "
        "negatively influential training examples."
    )


def example_tables(ex: pd.DataFrame) -> str:
    top = ex[(ex["direction"] == POSITIVE) & (ex["rank"] == 1)]
    if top.empty:
        return "No example has a top-k."
    same_label = float((top["train_label"] == top["test_label"]).mean()) * 100
    same_lang = float((top["train_lang"] == top["test_lang"]).mean()) * 100
    return (
        f"Over all {len(top)} test examples, the single most positively influential training example has the test example's "
        f"gold label in {_pct(same_label)} of cases and is in the test example's language in {_pct(same_lang)}."
    )


def script_purity(sp: pd.DataFrame) -> str:
    sel = sp[(sp["test_lang"] == ALL) & (sp["direction"] == POSITIVE) & (sp["n_topk"] > 0)]
    if sel.empty:
        return "No top-k example has any letter."
    lo = sel.loc[sel["pct_pure_topk"].idxmin()]
    text = (
        f"The lowest share is for {lo['train_lang']}: {_pct(lo['pct_pure_topk'])} of its positively influential examples "
        f"are written only in {lo['expected_script']} (vs {_pct(lo['pct_pure_train'])} of all its training examples)"
    )
    if lo["other_scripts"]:
        text += f"; the others also contain {lo['other_scripts']}"
    return text + "."


def word_embedding_share(we: pd.DataFrame) -> str:
    sel = we[we["direction"] == POSITIVE]
    if sel.empty:
        return "No word-embedding breakdown."
    total = float(sel["word_embeddings_sum"].sum() / sel["score_sum"].sum()) * 100 if sel["score_sum"].sum() else float("nan")
    cross = sel[sel["test_lang"] != sel["train_lang"]].dropna(subset=["share"])
    text = f"Word embeddings carry {_pct(total)} of the summed top-k positive influence"
    if not cross.empty:
        hi = cross.loc[cross["share"].idxmax()]
        text += f"; the most for {hi['train_lang']} training examples on {hi['test_lang']} test examples ({_pct(hi['share'])})"
    return text + "."


# ---------------------------------------------------------------- do the conclusions depend on the method?


@dataclass
class Finding:
    """One conclusion of the run checked under every method: ``holds`` is True when every method
    agrees with the reference method, False when some does not, None for a plain observation."""

    text: str
    holds: bool | None


def _names(items) -> str:
    items = list(items)
    return ", ".join(items) if items else "none"


#: the level below which a difference from chance counts as one (two-sided t-test)
ALPHA = 0.05


def chance_verdict(row) -> str:
    """``above`` / ``below`` chance when the t-test says so at ``ALPHA``, else ``at chance``."""
    p = row["p_vs_chance"]
    if p is None or not (p < ALPHA):  # NaN: too few test examples to tell
        return "at chance"
    return "above" if row["share"] > row["train_fraction"] else "below"


def in_language_findings(inl: pd.DataFrame, methods: Sequence[str], reference: str) -> list[Finding]:
    """Which test languages draw more of their positive top-k from their own language than chance (a
    one-sample t-test, p < ``ALPHA``), and which has the highest in-language share: the reference
    method's answer, checked under every method."""
    sel = inl[(inl["direction"] == POSITIVE) & (inl["test_lang"] != ALL)]
    ref = sel[sel["method"] == reference]
    if ref.empty:
        return []
    verdicts = {r["test_lang"]: chance_verdict(r) for _, r in ref.iterrows()}
    differ = []
    for method in methods:
        if method == reference:
            continue
        for _, r in sel[sel["method"] == method].iterrows():
            verdict = chance_verdict(r)
            if r["test_lang"] in verdicts and verdict != verdicts[r["test_lang"]]:
                where = "at chance" if verdict == "at chance" else f"{verdict} chance"
                differ.append(f"{method} puts {r['test_lang']} {where} ({_pct(r['share'])} vs {_pct(r['train_fraction'])}, {_p(r['p_vs_chance'])})")
    above = [lang for lang, v in verdicts.items() if v == "above"]
    rest = {v: [lang for lang, w in verdicts.items() if w == v] for v in ("at chance", "below")}
    text = (
        f"Under {reference}, {len(above)} of {len(verdicts)} test languages {'draws' if len(above) == 1 else 'draw'} more of their positively influential "
        f"examples from their own language than chance would ({_names(above)}; t-test against chance, p < {ALPHA:g})"
    )
    if rest["at chance"]:
        text += f"; {_names(rest['at chance'])} cannot be told from chance"
    if rest["below"]:
        text += f"; {_names(rest['below'])} below chance"
    out = [Finding(text + ("; so under every method." if not differ else "; but " + "; ".join(differ) + "."), not differ)]
    top = {m: sub.loc[sub["share"].idxmax(), "test_lang"] for m, sub in sel.groupby("method", sort=False) if not sub.empty}
    others = {m: lang for m, lang in top.items() if m != reference and lang != top[reference]}
    text = f"The test language with the highest in-language share is {top[reference]} under {reference}"
    text += "; so under every method." if not others else "; " + "; ".join(f"{lang} under {m}" for m, lang in others.items()) + "."
    out.append(Finding(text, not others))
    return out


def top_other_findings(top: pd.DataFrame, methods: Sequence[str], reference: str) -> list[Finding]:
    """Is the training language each test language relies on most apart from its own the same under
    every method? Where a method's first and second languages are tied (the reference's included),
    either counts as its first."""
    sel = top[top["direction"] == POSITIVE]
    ref = sel[sel["method"] == reference].set_index("test_lang")
    if ref.empty:
        return []
    def firsts(row) -> set[str]:
        """The language ranked first and, when tied with it, the runner-up."""
        tied = bool(row["runner_up_lang"]) and row["runner_up_share"] == row["share"]
        return {row["train_lang"], row["runner_up_lang"]} if tied else {row["train_lang"]}

    same, differ = [], []
    for lang, r in ref.iterrows():
        rows = sel[(sel["test_lang"] == lang) & (sel["method"] != reference)]
        disagree = [f"{o['method']}: {o['train_lang']}" for _, o in rows.iterrows() if not firsts(o) & firsts(r)]
        if disagree:
            margin = ""
            if r["runner_up_lang"]:
                margin = f" {_pct(r['share'])}, {r['share'] - r['runner_up_share']:.1f} points above {r['runner_up_lang']}"
            differ.append(f"{lang} ({reference}: {r['train_lang']}{margin}; {', '.join(disagree)})")
        else:
            same.append(f"{lang} → {r['train_lang']}")
    text = "The training language each test language relies on most apart from its own "
    if not differ:
        return [Finding(text + f"is the same under every method: {_names(same)}.", True)]
    agreed = f"is the same under every method for {_names(same)}" if same else "agrees for no test language"
    return [Finding(text + f"{agreed}; it differs for " + "; ".join(differ) + ".", False)]


def reinforcing_findings(reinforcing: pd.DataFrame, methods: Sequence[str], reference: str) -> list[Finding]:
    """Do other languages mostly reinforce (>= 50% translations) or complement the in-language evidence,
    and more often than chance? The reference method's answer over all test examples, under every method."""
    sel = reinforcing[(reinforcing["direction"] == POSITIVE) & (reinforcing["test_lang"] == ALL)].set_index("method")
    if reference not in sel.index:
        return []

    def kind(row) -> str:
        word = "mostly reinforce" if row["pct_translations"] >= 50 else "mostly complement"
        chance = "more" if row["pct_translations"] > row["pct_by_chance"] else "not more"
        return f"{word} the test language's own data ({chance} translations than chance)"

    ref = sel.loc[reference]
    differ = [f"under {m} they {kind(sel.loc[m])} ({_pct(sel.loc[m]['pct_translations'])})" for m in methods if m != reference and m in sel.index and kind(sel.loc[m]) != kind(ref)]
    text = (
        f"Under {reference}, other languages {kind(ref)}: {_pct(ref['pct_translations'])} of the cross-lingual top-k are "
        f"translations of in-language top-k examples ({_pct(ref['pct_by_chance'])} by chance)"
    )
    return [Finding(text + ("; so under every method." if not differ else "; but " + "; ".join(differ) + "."), not differ)]


def overlap_finding(summary: pd.DataFrame) -> list[Finding]:
    """How much the methods agree on the individual training examples (positive top-k, all test examples)."""
    sel = summary[(summary["direction"] == POSITIVE) & (summary["test_lang"] == ALL)]
    if sel.empty:
        return []
    lo, hi = sel.loc[sel["mean"].idxmin()], sel.loc[sel["mean"].idxmax()]
    text = (
        f"On the individual examples, two methods share on average from {_pct(lo['mean'])} "
        f"({lo['method_a']} vs {lo['method_b']}) to {_pct(hi['mean'])} ({hi['method_a']} vs {hi['method_b']}) of a test "
        f"example's positive top-k ({_pct(lo['pct_by_chance'])} for two random sets)."
    )
    if len(sel) == 1:
        text = (
            f"On the individual examples, {lo['method_a']} and {lo['method_b']} share on average {_pct(lo['mean'])} of a test "
            f"example's positive top-k (median {_pct(lo['median'])}; {_pct(lo['pct_by_chance'])} for two random sets)."
        )
    return [Finding(text, None)]


def method_findings(
    comparison: dict[str, pd.DataFrame], methods: Sequence[str], reference: str
) -> list[Finding]:
    """Every finding of the "Do the conclusions depend on the method?" section, from the comparison tables."""
    out: list[Finding] = []
    if "methods_in_language_share" in comparison:
        out += in_language_findings(comparison["methods_in_language_share"], methods, reference)
    if "methods_top_other_language" in comparison:
        out += top_other_findings(comparison["methods_top_other_language"], methods, reference)
    if "methods_reinforcing_share" in comparison:
        out += reinforcing_findings(comparison["methods_reinforcing_share"], methods, reference)
    if "methods_topk_overlap_summary" in comparison:
        out += overlap_finding(comparison["methods_topk_overlap_summary"])
    return out


def method_reading(findings: Sequence[Finding], methods: Sequence[str]) -> str:
    """One sentence: how many of the run's conclusions hold under every method."""
    checked = [f for f in findings if f.holds is not None]
    if not checked:
        return "There is no conclusion to compare."
    held = sum(f.holds for f in checked)
    every = f"both methods ({', '.join(methods)})" if len(methods) == 2 else f"all {len(methods)} methods ({', '.join(methods)})"
    if held == len(checked):
        return f"Every one of the {len(checked)} conclusions checked below holds under {every}."
    if held == 0:
        return f"None of the {len(checked)} conclusions checked below holds under {every}: they depend on the method."
    verb = "holds" if held == 1 else "hold"
    other = "depends" if len(checked) - held == 1 else "depend"
    return f"{held} of the {len(checked)} conclusions checked below {verb} under {every}; {len(checked) - held} {other} on the method."
