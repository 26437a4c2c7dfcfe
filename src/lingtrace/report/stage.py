"""The ``report`` stage: ``RUN/report/index.html``, one self-contained page a researcher can read and browse.

It reads the analyses of every influence method and the comparison (``RUN/analysis/``, layout in
``lingtrace.analysis.layout``; an older flat layout reads as tracin's), each store's meta.json, the
run's config, data, checkpoint manifest and selection, and writes ``RUN/report/index.html`` (figures
embedded as PNG data URIs, the example browser's data inline: it opens from disk without network
access) plus the same figures as files in ``RUN/report/figures/`` (``dev_accuracy.png``,
``METHOD/NAME.png``, ``comparison/NAME.png``) for reuse in papers. The folder is replaced atomically.

Sections: run summary (task, languages, model, epochs with dev accuracy, test selection, and per
influence method how its scores were made and what it leaves out), "Do the conclusions depend on the
method?", one section per analysis with one part per method (figure, table, one plain sentence read
from the numbers, or the reason it does not apply; a selector in the navigation bar shows one
method's parts), the experiments' sections, example tables, the example browser (per method), and the
configuration.

This module assembles the page (``build_report``) and writes it (``run_report``); ``inputs`` reads what
the report shows, ``sections`` renders each section, ``figure_sets`` makes the figures, ``browser`` the
example browser's data and ``html`` the page's markup.
"""

from __future__ import annotations

import logging
from typing import Any

from lingtrace import __version__
from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import language_order
from lingtrace.analysis.layout import COMPARISON
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.io import atomic_dir
from lingtrace.report import figures
from lingtrace.report.figure_sets import make_comparison_figures, make_figures
from lingtrace.report.html import esc, method_picker, page
from lingtrace.report.inputs import ReportInputs, load_inputs
from lingtrace.report.sections.common import per_method_section
from lingtrace.report.sections.comparison import comparison_section
from lingtrace.report.sections.dynamics import dynamics_section
from lingtrace.report.sections.examples import browser_section, examples_section
from lingtrace.report.sections.experiments import experiment_sections
from lingtrace.report.sections.scores import distributions_section, scripts_section, word_embeddings_section
from lingtrace.report.sections.shares import average_section, overlap_section, shares_section
from lingtrace.report.sections.summary import config_section, summary_section
from lingtrace.run import REPORT_FIGURES_DIR, REPORT_PAGE, RunDir

log = logging.getLogger(__name__)

INDEX = REPORT_PAGE
FIGURES = REPORT_FIGURES_DIR

__all__ = ["ANALYSIS_SECTIONS", "FIGURES", "INDEX", "ReportInputs", "build_report", "load_inputs", "run_report"]


#: the analysis sections, one part per method: (section id, navigation label, maker)
ANALYSIS_SECTIONS = (
    (table_specs.LANGUAGE_SHARES.name, "Language shares", lambda v, figs, to, tr: shares_section(v, figs, to, tr)),
    (table_specs.AVERAGE_INFLUENCE.name, "Average influence", lambda v, figs, to, tr: average_section(v, figs, to, tr)),
    (table_specs.TRANSLATION_OVERLAP.name, "Reinforcing vs complementary", lambda v, figs, to, tr: overlap_section(v, figs, to, tr)),
    ("dynamics", "Dynamics", lambda v, figs, to, tr: dynamics_section(v, figs, to, tr)),
    (table_specs.SCORE_DISTRIBUTIONS.name, "Score distributions", lambda v, figs, to, tr: distributions_section(v, figs, to, tr)),
    (table_specs.SCRIPT_PURITY.name, "Scripts", lambda v, figs, to, tr: scripts_section(v, figs)),
    (table_specs.WORD_EMBEDDING_SHARE.name, "Word embeddings", lambda v, figs, to, tr: word_embeddings_section(v, figs, to, tr)),
)


def build_report(inp: ReportInputs) -> tuple[str, dict[str, bytes]]:
    """The page and its figures (file name under ``figures/`` without .png -> PNG bytes)."""
    langs = inp.cfg.data.languages
    methods = inp.method_names
    test_order = language_order(langs, inp.test[schema.LANG].astype(str))
    train_order = language_order(langs, inp.train[schema.LANG].astype(str), *(inp.for_method(m).tables[table_specs.TOPK.name]["train_lang"] for m in methods))
    run_figs = {"dev_accuracy": figures.to_png(fig)} if inp.manifest and (fig := figures.dev_accuracy(inp.manifest)) is not None else {}
    method_figs = {m: make_figures(inp.for_method(m), test_order, train_order) for m in methods}
    comparison_figs = make_comparison_figures(inp, test_order)
    sections = [
        ("summary", "Summary", summary_section(inp, run_figs)),
        ("methods", "Methods compared", comparison_section(inp, comparison_figs, test_order)),
    ]
    for sid, label, make in ANALYSIS_SECTIONS:
        blocks = {m: make(inp.for_method(m), method_figs[m], test_order, train_order) for m in methods}
        sections.append((sid, label, per_method_section(inp, blocks)))
    sections += [
        *experiment_sections(inp),
        (table_specs.EXAMPLES.name, "Example tables", per_method_section(inp, {m: examples_section(inp.for_method(m), test_order) for m in methods})),
        ("browser", "Browser", browser_section(inp, test_order)),
        ("config", "Config", config_section(inp)),
    ]
    title = f"lingtrace report: {inp.task.get('task', 'run')} ({', '.join(test_order)})"
    subtitle = (
        f"Which training languages and examples did {inp.cfg.model.name} rely on? Influence by {', '.join(methods)} over "
        f"{len(inp.summary.get('epochs', []))} checkpoint(s), {inp.summary.get('n_test')} test x {inp.summary.get('n_train')} training examples. Run: {inp.root}"
    )
    footer = (
        f"Made by lingtrace {esc(__version__)}. Self-contained: the figures are embedded (also in {FIGURES}/), "
        "the tables are in ../analysis/ (Parquet). Reference: Choenni, Garrette &amp; Shutova (EMNLP 2023), "
        "How do languages influence each other? Studying cross-lingual data sharing during LM fine-tuning."
    )
    body = "\n".join(s for _, _, s in sections)
    figs = {**run_figs, **{f"{m}/{name}": png for m, f in method_figs.items() for name, png in f.items()}}
    figs.update({f"{COMPARISON}/{name}": png for name, png in comparison_figs.items()})
    picker = method_picker(methods, inp.method) if len(methods) > 1 else ""
    return page(title, subtitle, [(i, t) for i, t, _ in sections], body, footer, picker), figs


def run_report(run: RunDir, cfg: Config) -> dict[str, Any]:
    inp = load_inputs(run, cfg)
    text, figs = build_report(inp)
    with atomic_dir(run.report_dir) as tmp:
        (tmp / INDEX).write_text(text, encoding="utf-8")
        (tmp / FIGURES).mkdir()
        for name, png in figs.items():
            path = tmp / FIGURES / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
    path = run.report_dir / INDEX
    log.info("report: %s (%d methods, %d figures, %.1f MB)", path, len(inp.method_names), len(figs), path.stat().st_size / 1e6)
    return {"path": str(path), "methods": inp.method_names, "figures": sorted(figs)}
