"""The example tables (one method's part: the first selected test example of each language with its most
influential training examples) and the example browser section (every test example, every method).
"""

from __future__ import annotations

from collections.abc import Sequence

from lingtrace.analysis import tables as table_specs
from lingtrace.report import readings
from lingtrace.report.browser import browser_data
from lingtrace.report.html import browser, columns_doc, esc, section, table_html
from lingtrace.report.inputs import ReportInputs
from lingtrace.report.sections.common import Block, not_applicable, table_file, table_section


def examples_section(inp: ReportInputs, test_order: Sequence[str]) -> Block:
    """One method's part of "Example tables": the first selected test example of each language."""
    spec = table_specs.EXAMPLES
    na = not_applicable(inp, spec)
    content = ""
    if not na:
        ex = inp.tables[spec.name]
        blocks = []
        for lang in test_order:
            sub = ex[ex["test_lang"] == lang]
            if sub.empty:
                continue
            first = sub[sub["test_uid"] == sub["test_uid"].iloc[0]]
            head = first.iloc[0]
            tab = first[["direction", "rank", "train_lang", "train_text", "train_label_name", "score"]]
            blocks.append(
                f"<h3><span class='lang'>{esc(lang)}</span> {esc(head['test_text'])} <span class='lbl'>gold: {esc(head['test_label_name'])}</span></h3>"
                + table_html(tab, text_columns=("direction", "train_lang", "train_text", "train_label_name"))
            )
        content = (
            f"<p class='note'>The first selected test example of each language with its {inp.cfg.analysis.examples_per_table} most positively "
            "and negatively influential training examples (summed score). Every test example is in the browser below and in "
            f"analysis/{table_file(inp, spec)}.</p>" + "".join(blocks) + columns_doc(spec.columns, table_file(inp, spec))
        )
    reading = None if na else readings.example_tables(inp.tables[spec.name])
    return table_section(inp, spec, reading, content, na)


def browser_section(inp: ReportInputs, languages: Sequence[str]) -> str:
    """The example browser: every selected test example with every method's top training examples."""
    data = browser_data(inp, languages)
    reading = readings.examples(len(data["tests"]), min(inp.cfg.analysis.browser_k, data["k"]))
    return section("browser", "Example browser", "every test example", reading, browser(data))
