"""What the section makers share: ``Block`` (one method's part of a section), ``per_method_section``
(one section from every method's block), the pivot of a long table into a test x training-language grid,
percent formats, a table's path under ``RUN/analysis/`` and the "does not apply" reason and notes the
analyze stage recorded for a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lingtrace.report import methods as method_notes
from lingtrace.report.html import method_block, pct, section
from lingtrace.report.inputs import ReportInputs


@dataclass
class Block:
    """One method's part of a section (``section`` arguments)."""

    sid: str
    title: str
    reproduces: str | None
    reading: str | None
    content: str
    not_applicable: str | None = None
    notes: Sequence[str] = ()


def table_file(inp: ReportInputs, spec) -> str:
    """A table's path relative to ``RUN/analysis/`` for this method."""
    return f"{inp.folder}/{spec.file}" if inp.folder else spec.file


def pivot(
    frame: pd.DataFrame, value: str, rows: Sequence, cols: Sequence, index: str = "test_lang", columns: str = "train_lang"
) -> pd.DataFrame:
    """A long table as a grid: ``index`` rows in the order ``rows``, ``columns`` in the order ``cols`` (those present)."""
    p = frame.pivot_table(index=index, columns=columns, values=value, aggfunc="first")
    p = p.reindex(index=[r for r in rows if r in p.index], columns=[c for c in cols if c in p.columns])
    p.index.name = f"{index} \\ {columns}"
    p.columns.name = None
    return p


def pct_formats(frame: pd.DataFrame) -> dict:
    """Every column of ``frame`` formatted as a percentage."""
    return {c: pct for c in frame.columns}


def not_applicable(inp: ReportInputs, spec) -> str | None:
    """Why the analysis of table ``spec`` does not apply to this run (None when it does)."""
    return inp.summary.get("not_applicable", {}).get(spec.name)


def table_section(inp: ReportInputs, spec, reading: str | None, content: str, na: str | None) -> Block:
    """One method's part of the section of one analysis table, with the notes the analyze stage recorded for it."""
    return Block(spec.name, spec.title, spec.reproduces, reading, content, na, inp.summary.get("notes", {}).get(spec.name, []))


def per_method_section(inp: ReportInputs, blocks: dict[str, Block]) -> str:
    """One section from each method's block: as before with one method; with several, one part per
    method (``data-method``), each with its own reading, notes and "does not apply"."""
    first = next(iter(blocks.values()))
    if len(blocks) == 1:
        return section(first.sid, first.title, first.reproduces, first.reading, first.content, first.not_applicable, first.notes)
    parts = [
        method_block(m, method_notes.leaves_out(m, inp.for_method(m).influence_meta), b.reading, b.content, b.not_applicable, b.notes)
        for m, b in blocks.items()
    ]
    return section(first.sid, first.title, first.reproduces, None, "\n".join(parts))
