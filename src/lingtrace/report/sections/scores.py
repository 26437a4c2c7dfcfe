"""One method's part of the sections on the top-k scores themselves: their distributions, the script
purity of the top-k entries, and the share of the summed score that comes from the word embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, POSITIVE
from lingtrace.report import readings
from lingtrace.report.html import columns_doc, figure, more, pct, table_html
from lingtrace.report.inputs import ReportInputs
from lingtrace.report.sections.common import (
    Block,
    not_applicable,
    pct_formats,
    pivot,
    table_file,
    table_section,
)


def distributions_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    """One method's part of "Score distributions": the summed scores of the top-k entries."""
    spec = table_specs.SCORE_DISTRIBUTIONS
    na = not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        dist = inp.tables[spec.name]
        content = (
            figure(figs.get("score_distributions"), "score distributions box plots", "Boxes: quartiles of the summed scores of the top-k entries; whiskers 1.5 IQR.")
            + more("Table", table_html(dist))
            + columns_doc(spec.columns, table_file(inp, spec))
        )
        reading = readings.score_distributions(dist)
    return table_section(inp, spec, reading, content, na)


def scripts_section(inp: ReportInputs, figs: dict[str, bytes]) -> Block:
    """One method's part of "Scripts": the script purity of the top-k entries against the training data's."""
    spec = table_specs.SCRIPT_PURITY
    na = not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        sp = inp.tables[spec.name]
        fm = {"pct_pure_topk": pct, "pct_pure_train": pct}
        content = (
            figure(figs.get("script_purity"), "script purity bars", "Grey: all training examples of the language (baseline); blue/red: its top-k entries.")
            + table_html(sp[sp["test_lang"] == ALL], formats=fm, text_columns=("expected_script", "other_scripts"))
            + more("Per test language", table_html(sp[sp["test_lang"] != ALL], formats=fm, text_columns=("expected_script", "other_scripts")))
            + columns_doc(spec.columns, table_file(inp, spec))
        )
        reading = readings.script_purity(sp)
    return table_section(inp, spec, reading, content, na)


def word_embeddings_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    """One method's part of "Word embeddings": the share of the summed score from the word embeddings."""
    spec = table_specs.WORD_EMBEDDING_SHARE
    na = not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        we = inp.tables[spec.name]
        p = pivot(we[we["direction"] == POSITIVE], "share", test_order, train_order)
        content = (
            figure(figs.get("word_embedding_share"), "word-embedding share heat maps")
            + "<h3>Top-k positive: % of the summed score from the word embeddings</h3>"
            + table_html(p, index=True, formats=pct_formats(p))
            + more("Full table", table_html(we, formats={"share": pct, "abs_share": pct}))
            + columns_doc(spec.columns, table_file(inp, spec))
        )
        reading = readings.word_embedding_share(we)
    return table_section(inp, spec, reading, content, na)
