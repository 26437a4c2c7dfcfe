"""One method's part of the sections on where influence comes from by language: language shares of the
top-k (Fig. 2), average influence between languages, and reinforcing vs complementary (how many
cross-lingual top-k examples are translations of in-language ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, DIRECTIONS, SUMMED
from lingtrace.report import figures, readings
from lingtrace.report.html import columns_doc, esc, figure, more, pct, table_html
from lingtrace.report.inputs import ReportInputs
from lingtrace.report.sections.common import (
    Block,
    not_applicable,
    pct_formats,
    pivot,
    table_file,
    table_section,
)


def shares_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    """One method's part of "Language shares": each training language's share of the top-k of each test language."""
    name = table_specs.LANGUAGE_SHARES.name
    na = inp.summary.get("not_applicable", {}).get(name)
    content, reading = "", None
    if not na:
        shares = inp.tables[name]
        sel = shares[shares["epoch"] == SUMMED]
        tabs = []
        for d in DIRECTIONS:
            p = pivot(sel[sel["direction"] == d], "share", test_order, train_order)
            tabs.append(f"<div><h3>{esc(figures.DIRECTION_TITLE[d])}</h3>{table_html(p, index=True, formats=pct_formats(p))}</div>")
        chance = sel.drop_duplicates("train_lang")[["train_lang", "train_fraction"]]
        content = (
            figure(figs.get("language_shares"), "language shares heat maps", "Rows: test language; columns: training language; each row sums to 100%.")
            + f"<div class='tables'>{''.join(tabs)}</div>"
            + f"<p class='note'>Expected by chance (share of the training data): {esc(', '.join(f'{r.train_lang} {r.train_fraction:.1f}%' for r in chance.itertuples()))}.</p>"
            + columns_doc(table_specs.LANGUAGE_SHARES.columns, table_file(inp, table_specs.LANGUAGE_SHARES))
        )
        if table_specs.IN_LANGUAGE_SHARE.name in inp.tables:
            reading = readings.language_shares(inp.tables[table_specs.IN_LANGUAGE_SHARE.name], int(inp.summary.get("k_effective", inp.cfg.analysis.k)))
    return Block(name, table_specs.LANGUAGE_SHARES.title, table_specs.LANGUAGE_SHARES.reproduces, reading, content, na, inp.summary.get("notes", {}).get(name, []))


def average_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    """One method's part of "Average influence": the mean summed score per pair of a test and a training language."""
    spec = table_specs.AVERAGE_INFLUENCE
    na = not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        avg = inp.tables[spec.name]
        p = pivot(avg[avg["epoch"] == SUMMED], "mean_score", test_order, train_order)
        per_epoch = []
        for e in sorted(x for x in avg["epoch"].unique() if x != SUMMED):
            pe = pivot(avg[avg["epoch"] == e], "mean_score", test_order, train_order)
            per_epoch.append(f"<div><h3>epoch {int(e)}</h3>{table_html(pe, index=True)}</div>")
        content = (
            figure(figs.get("average_influence"), "average influence heat map", "Mean summed score over all pairs of a test and a training language.")
            + table_html(p, index=True)
            + (more("Per epoch", f"<div class='tables'>{''.join(per_epoch)}</div>") if per_epoch else "")
            + columns_doc(spec.columns, table_file(inp, spec))
        )
        reading = readings.average_influence(avg)
    return table_section(inp, spec, reading, content, na)


def overlap_section(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    """One method's part of "Reinforcing vs complementary": how many cross-lingual top-k examples are translations of in-language ones."""
    spec = table_specs.TRANSLATION_OVERLAP
    na = not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        ov = inp.tables[spec.name]
        rows = []
        for lang in [*test_order, ALL]:
            r = {"test language": lang}
            for d in DIRECTIONS:
                sub = ov[(ov["direction"] == d) & (ov["test_lang"] == lang) & (ov["train_lang"] == ALL)]
                if not sub.empty:
                    r[f"{d}: translations"] = sub.iloc[0]["pct_translations"]
                    r[f"{d}: by chance"] = sub.iloc[0]["pct_by_chance"]
                    r[f"{d}: cross-lingual top-k"] = int(sub.iloc[0]["n_cross"])
                    r[f"{d}: test examples without in-language top-k"] = int(sub.iloc[0]["n_test_without_in_language"])
            if len(r) > 1:
                rows.append(r)
        tab = pd.DataFrame(rows)
        fm = {c: pct for c in tab.columns if c.endswith("translations") or c.endswith("chance")}
        full = ov.copy()
        content = (
            figure(figs.get("translation_overlap"), "translation overlap bars", "Bars: % of the cross-lingual top-k that are translations of in-language top-k examples; black marks: chance.")
            + table_html(tab, formats=fm)
            + more("Per training language", table_html(full, formats={"pct_translations": pct, "pct_by_chance": pct}))
            + columns_doc(spec.columns, table_file(inp, spec))
        )
        reading = readings.translation_overlap(ov)
    return table_section(inp, spec, reading, content, na)
