"""The section "Do the conclusions depend on the method?": the influence methods side by side from the
comparison tables (in-language share, the other language relied on most, reinforcing share, top-k overlap),
which conclusions of the reference method hold under every method, or how to add a method when the run
has only one.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE
from lingtrace.analysis.layout import COMPARISON
from lingtrace.config.influence import method_names
from lingtrace.report import readings
from lingtrace.report.html import (
    columns_doc,
    esc,
    figure,
    find_verdict,
    more,
    pct,
    pvalue,
    section,
    table_html,
)
from lingtrace.report.inputs import ReportInputs
from lingtrace.report.sections.common import pct_formats, pivot


def _add_method_hint(methods: Sequence[str]) -> str:
    """A method the run does not have yet, for the hint that says how to add one."""
    missing = [m for m in ("representation", *method_names()) if m not in methods]
    return ",".join([*methods, missing[0]]) if missing else ",".join(methods)


def _by_method(frame: pd.DataFrame, value: str, rows: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """test language x method table of one column of a comparison table."""
    p = pivot(frame, value, rows, methods, columns="method")
    p.index.name = "test language"
    return p


def _retraining_check(inp: ReportInputs) -> str:
    """A link to the languages experiment's section and its verdict, or how to run it."""
    fragment = dict(inp.experiments).get("languages")
    if fragment is None:
        return (
            "<p class='note'>Which method's language-level picture is right can be checked by retraining: "
            "<code>lingtrace experiment languages RUN</code> retrains without each training language and compares.</p>"
        )
    found = find_verdict(fragment, "languages")
    verdict = f" {esc(found[0])}" if found else ""
    return f"<p class='reading'>Checked by retraining (<a href='#experiment-languages'>What happens when a language's data is removed?</a>):{verdict}</p>"


def _lds_check(inp: ReportInputs) -> str:
    """The lds experiment's verdict on which methods are at chance, a warning when some are; empty without it."""
    fragment = dict(inp.experiments).get("lds")
    found = find_verdict(fragment, "lds") if fragment is not None else None
    if found is None:
        return ""
    text, warning = found
    kind = "warning" if warning else "reading"
    return f"<p class='{kind}'>Checked by retraining (<a href='#experiment-lds'>the linear datamodeling score</a>): {esc(text)}</p>"


def _comparison_doc(spec) -> str:
    return columns_doc(spec.columns, f"{COMPARISON}/{spec.file}")


def comparison_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str]) -> str:
    """Do the conclusions depend on the method? The methods side by side, and which conclusions hold under all."""
    sid, title = "methods", "Do the conclusions depend on the method?"
    methods, c = inp.method_names, inp.comparison
    if len(methods) < 2:
        hint = (
            f"Only one influence method ({methods[0]}) has scores in this run, so there is nothing to compare yet: add one with "
            f"`lingtrace influence RUN --method {_add_method_hint(methods)}` (it computes only the new method), then rerun "
            "`lingtrace analyze RUN` and `lingtrace report RUN`."
        )
        if inp.layout.get("flat"):
            hint = "These analyses were made by an older lingtrace, for tracin only: rerun `lingtrace analyze RUN --overwrite`."
        return section(sid, title, None, None, f"<p class='note'>{esc(hint)}</p>" + _lds_check(inp) + _retraining_check(inp))
    findings = readings.method_findings(c, methods, inp.method)
    items = "".join(
        f"<li class='{'holds' if f.holds else 'differs' if f.holds is not None else 'info'}'><strong>"
        f"{'holds under every method' if f.holds else 'depends on the method' if f.holds is not None else 'agreement'}:</strong> {esc(f.text)}</li>"
        for f in findings
    )
    parts = [f"<ul class='findings'>{items}</ul>", _lds_check(inp), _retraining_check(inp)]
    rows = [*test_order, ALL]
    inl = c.get(table_specs.METHODS_IN_LANGUAGE_SHARE.name)
    if inl is not None and not inl.empty:
        pos = inl[inl["direction"] == POSITIVE]
        p = _by_method(pos, "share", rows, methods)
        p["chance"] = pos.drop_duplicates("test_lang").set_index("test_lang")["train_fraction"].reindex(p.index)
        neg = _by_method(inl[inl["direction"] == NEGATIVE], "share", rows, methods)
        pvals = _by_method(pos[pos["test_lang"] != ALL], "p_vs_chance", test_order, methods)
        parts += [
            "<h3>In-language share of the positive top-k (the diagonal of Fig. 2)</h3>",
            figure(figs.get("methods_in_language_share"), "in-language share per method", "Bars: one per method; black marks: chance (the share of the training data)."),
            table_html(p, index=True, formats=pct_formats(p)),
            more(
                f"Above chance? Two-sided one-sample t-test of the test examples' in-language % against chance (p < {readings.ALPHA:g} counts)",
                table_html(pvals, index=True, formats={c: pvalue for c in pvals.columns}),
            ),
            more("Negative top-k", table_html(neg, index=True, formats=pct_formats(neg))),
            _comparison_doc(table_specs.METHODS_IN_LANGUAGE_SHARE),
        ]
    top = c.get(table_specs.METHODS_TOP_OTHER_LANGUAGE.name)
    if top is not None and not top.empty:
        def cells(direction: str) -> pd.DataFrame:
            sel = top[top["direction"] == direction].assign(cell=lambda f: f["train_lang"] + " (" + f["share"].map(pct) + ")")
            return _by_method(sel, "cell", test_order, methods)

        pos, neg = cells(POSITIVE), cells(NEGATIVE)
        parts += [
            "<h3>The training language each test language relies on most, apart from its own (positive top-k)</h3>",
            table_html(pos, index=True, text_columns=tuple(pos.columns)),
            more("Negative top-k", table_html(neg, index=True, text_columns=tuple(neg.columns))),
            more("Full table, with the runner-up", table_html(top, formats={"share": pct, "train_fraction": pct, "runner_up_share": pct}, text_columns=("method", "direction", "test_lang", "train_lang", "runner_up_lang"))),
            _comparison_doc(table_specs.METHODS_TOP_OTHER_LANGUAGE),
        ]
    na = inp.layout.get("comparison", {}).get("not_applicable", {})
    parts.append("<h3>Reinforcing share (Table 4): % of the cross-lingual positive top-k that are translations of in-language top-k examples</h3>")
    rein = c.get(table_specs.METHODS_REINFORCING_SHARE.name)
    if rein is not None and not rein.empty:
        pos = rein[rein["direction"] == POSITIVE]
        p = _by_method(pos, "pct_translations", rows, methods)
        chance = _by_method(pos, "pct_by_chance", rows, methods)
        chance.columns = [f"{m}: by chance" for m in chance.columns]
        both = pd.concat([p, chance], axis=1)
        parts += [table_html(both, index=True, formats=pct_formats(both)), _comparison_doc(table_specs.METHODS_REINFORCING_SHARE)]
    else:
        parts.append(f"<div class='na'><strong>Does not apply to this run:</strong> {esc(na.get(table_specs.METHODS_REINFORCING_SHARE.name, 'no translation overlap table'))}</div>")
    summ = c.get(table_specs.METHODS_TOPK_OVERLAP_SUMMARY.name)
    if summ is not None and not summ.empty:
        overall = summ[summ["test_lang"] == ALL].drop(columns=["test_lang"])
        fm = {col: pct for col in ("mean", "std", "min", "q25", "median", "q75", "max", "pct_by_chance")}
        parts += [
            "<h3>Top-k overlap between methods: % of a test example's top-k that both methods have</h3>",
            figure(figs.get("methods_topk_overlap"), "top-k overlap between methods", "Boxes: quartiles over the test examples; whiskers 1.5 IQR."),
            table_html(overall, formats=fm, text_columns=("method_a", "method_b", "direction")),
            more("Per test language", table_html(summ[summ["test_lang"] != ALL], formats=fm, text_columns=("method_a", "method_b", "direction", "test_lang"))),
            _comparison_doc(table_specs.METHODS_TOPK_OVERLAP_SUMMARY),
            _comparison_doc(table_specs.METHODS_TOPK_OVERLAP),
        ]
    parts.append(
        "<p class='note'>The conclusions are checked against the reference method "
        f"({esc(inp.method)}) on the summed score and the positive top-k; the numbers of every method are its own analyses "
        "(the other sections, one part per method). Agreement between methods is not evidence that either is faithful "
        "to what retraining would show.</p>"
    )
    return section(sid, title, None, readings.method_reading(findings, methods), "\n".join(parts))
