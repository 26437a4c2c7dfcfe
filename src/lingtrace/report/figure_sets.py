"""Which figures the report holds and how each is made from the tables: ``make_figures`` draws one
influence method's figures (name -> PNG bytes; a figure whose table is absent is left out) and
``make_comparison_figures`` those of the comparison of the methods. The drawing itself is in ``figures``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lingtrace.analysis import tables as table_specs
from lingtrace.report import figures
from lingtrace.report.inputs import ReportInputs


def make_figures(inp: ReportInputs, test_order: Sequence[str], train_order: Sequence[str]) -> dict[str, bytes]:
    """The figures of one method's analyses (name -> PNG)."""
    t = inp.tables
    makers = {
        "language_shares": lambda: figures.language_shares(t[table_specs.LANGUAGE_SHARES.name], test_order, train_order) if table_specs.LANGUAGE_SHARES.name in t else None,
        "average_influence": lambda: figures.average_influence(t[table_specs.AVERAGE_INFLUENCE.name], test_order, train_order) if table_specs.AVERAGE_INFLUENCE.name in t else None,
        "translation_overlap": lambda: figures.translation_overlap(t[table_specs.TRANSLATION_OVERLAP.name], test_order) if table_specs.TRANSLATION_OVERLAP.name in t else None,
        "in_language_dynamics": lambda: figures.in_language_dynamics(t[table_specs.IN_LANGUAGE_SHARE.name], test_order) if table_specs.IN_LANGUAGE_SHARE.name in t else None,
        "shares_per_epoch": lambda: figures.shares_per_epoch(t[table_specs.LANGUAGE_SHARES.name], test_order, train_order) if table_specs.LANGUAGE_SHARES.name in t else None,
        "wilcoxon": lambda: figures.wilcoxon_pvalues(t[table_specs.DYNAMICS_WILCOXON.name]) if table_specs.DYNAMICS_WILCOXON.name in t else None,
        "score_distributions": lambda: figures.score_distributions(t[table_specs.TOPK.name], test_order, train_order),
        "script_purity": lambda: figures.script_purity(t[table_specs.SCRIPT_PURITY.name]) if table_specs.SCRIPT_PURITY.name in t else None,
        "word_embedding_share": lambda: figures.word_embedding_share(t[table_specs.WORD_EMBEDDING_SHARE.name], test_order, train_order) if table_specs.WORD_EMBEDDING_SHARE.name in t else None,
    }
    out = {}
    for name, make in makers.items():
        fig = make()
        if fig is not None:
            out[name] = figures.to_png(fig)
    return out


def make_comparison_figures(inp: ReportInputs, test_order: Sequence[str]) -> dict[str, bytes]:
    c = inp.comparison
    out = {}
    if len(inp.method_names) > 1 and table_specs.METHODS_IN_LANGUAGE_SHARE.name in c:
        fig = figures.methods_in_language(c[table_specs.METHODS_IN_LANGUAGE_SHARE.name], test_order, inp.method_names)
        if fig is not None:
            out["methods_in_language_share"] = figures.to_png(fig)
    if table_specs.METHODS_TOPK_OVERLAP.name in c:
        fig = figures.methods_topk_overlap(c[table_specs.METHODS_TOPK_OVERLAP.name])
        if fig is not None:
            out["methods_topk_overlap"] = figures.to_png(fig)
    return out
