"""One method's part of the section on dynamics over fine-tuning: the in-language share of each
checkpoint's own top-k, the language shares per epoch, and the Wilcoxon tests between epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, DIRECTIONS, SUMMED
from lingtrace.report import readings
from lingtrace.report.html import columns_doc, esc, figure, more, pvalue, table_html
from lingtrace.report.inputs import ReportInputs
from lingtrace.report.sections.common import Block, pct_formats, pivot, table_file


def dynamics_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    """One method's part of "Dynamics over fine-tuning" (its notes are those of the Wilcoxon table)."""
    inl = inp.tables.get(table_specs.IN_LANGUAGE_SHARE.name)
    wil = inp.tables.get(table_specs.DYNAMICS_WILCOXON.name)
    na_w = inp.summary.get("not_applicable", {}).get(table_specs.DYNAMICS_WILCOXON.name)
    parts = []
    reading = None
    if inl is not None:
        sel = inl[inl["epoch"] != SUMMED]
        tabs = []
        for d in DIRECTIONS:
            p = pivot(sel[sel["direction"] == d], "share", [*test_order, ALL], sorted(sel["epoch"].unique()), columns="epoch")
            p.columns = [f"epoch {int(c)}" for c in p.columns]
            tabs.append(f"<div><h3>In-language share, {esc(d)}</h3>{table_html(p, index=True, formats=pct_formats(p))}</div>")
        parts.append(figure(figs.get("in_language_dynamics"), "in-language share per epoch", "Each checkpoint's own top-k; dashed: chance level."))
        parts.append(f"<div class='tables'>{''.join(tabs)}</div>")
        parts.append(figure(figs.get("shares_per_epoch"), "language shares per epoch"))
        parts.append(columns_doc(table_specs.IN_LANGUAGE_SHARE.columns, table_file(inp, table_specs.IN_LANGUAGE_SHARE)))
        reading = readings.dynamics(inl, wil)
    parts.append("<h3>Wilcoxon signed-rank tests between epochs</h3>")
    parts.append(
        "<p class='note'>Paired over test examples, two-sided, scipy.stats.wilcoxon. <em>in_language_share</em>: each test "
        "example's in-language % of its top-k at epoch a vs epoch b. <em>mean_rank_of_top_k</em>: the mean rank of the test "
        "example's overall (summed-score) top-k in epoch a's ranking of all training examples vs in epoch b's ranking "
        "(1 = most influential): do the rankings of the training examples differ between epochs?</p>"
    )
    if na_w:
        parts.append(f"<div class='na'><strong>Does not apply to this run:</strong> {esc(na_w)}</div>")
    elif wil is not None:
        fm = {"p_value": pvalue}
        parts.append(figure(figs.get("wilcoxon"), "Wilcoxon p-values between epochs"))
        parts.append(table_html(wil[wil["test_lang"] == ALL], formats=fm))
        parts.append(more("Per test language", table_html(wil[wil["test_lang"] != ALL], formats=fm)))
        parts.append(columns_doc(table_specs.DYNAMICS_WILCOXON.columns, table_file(inp, table_specs.DYNAMICS_WILCOXON)))
    return Block("dynamics", "Dynamics over fine-tuning", "Figs. 3, 12, 13", reading, "\n".join(parts), None, inp.summary.get("notes", {}).get(table_specs.DYNAMICS_WILCOXON.name, []))
