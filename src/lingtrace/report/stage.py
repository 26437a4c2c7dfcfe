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
method's parts), example tables, the example browser (per method), and the configuration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace import __version__
from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import (
    ALL,
    DIRECTIONS,
    NEGATIVE,
    POSITIVE,
    SUMMED,
    example_text,
    language_order,
)
from lingtrace.analysis.examples import label_name
from lingtrace.analysis.layout import COMPARISON, MethodAnalysis, read_layout
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.influence.decoder_task import attributed_loss
from lingtrace.influence.methods import DEFAULT_METHOD, method_names
from lingtrace.influence.store import META
from lingtrace.io import atomic_dir, read_json
from lingtrace.report import figures, readings
from lingtrace.report import methods as method_notes
from lingtrace.report.html import (
    browser,
    columns_doc,
    esc,
    figure,
    method_block,
    method_picker,
    more,
    page,
    pct,
    pvalue,
    section,
    table_html,
    warning_box,
)
from lingtrace.run import REPORT_FIGURES_DIR, REPORT_PAGE, RunDir, majority_class_warning, read_table

log = logging.getLogger(__name__)

INDEX = REPORT_PAGE
FIGURES = REPORT_FIGURES_DIR


@dataclass
class ReportInputs:
    """What the report reads. ``summary``, ``tables``, ``influence_meta`` and ``method`` are one method's
    (``for_method`` gives the view of another); ``methods`` holds every method's view by name."""

    root: Path
    cfg: Config
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    manifest: dict[str, Any] | None
    task: dict[str, Any]
    train: pd.DataFrame
    test: pd.DataFrame
    influence_meta: dict[str, Any]
    method: str = DEFAULT_METHOD
    #: where this method's tables are, relative to ``RUN/analysis/`` ("" in a flat, older layout)
    folder: str = DEFAULT_METHOD
    layout: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, ReportInputs] = field(default_factory=dict, repr=False)
    comparison: dict[str, pd.DataFrame] = field(default_factory=dict)

    def for_method(self, method: str) -> ReportInputs:
        return self.methods[method]

    @property
    def method_names(self) -> list[str]:
        return list(self.methods) or [self.method]


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


def _file(inp: ReportInputs, spec) -> str:
    """A table's path relative to ``RUN/analysis/`` for this method."""
    return f"{inp.folder}/{spec.file}" if inp.folder else spec.file


def _method_tables(analysis: MethodAnalysis) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in analysis.summary.get("tables", {}):
        if name in table_specs.TABLES:
            tables[name] = read_table(analysis.directory / table_specs.TABLES[name].file, "rerun `lingtrace analyze RUN --overwrite`", what=f"analysis table {name} of {analysis.method}")
    if table_specs.TOPK.name not in tables:
        raise LingtraceError(f"{analysis.directory} has no top-k table", "rerun `lingtrace analyze RUN --overwrite`")
    return tables


def _store_meta(run: RunDir, method: str) -> dict[str, Any]:
    path = run.influence_store(method) / META
    return read_json(path) if path.exists() else {}


def load_inputs(run: RunDir, cfg: Config) -> ReportInputs:
    layout, analyses = read_layout(run.analysis_dir)
    if layout.get("flat"):
        log.warning("%s has the analysis layout of an older lingtrace (tracin only); rerun `lingtrace analyze RUN --overwrite` for every method", run.analysis_dir)
    comparison = {}
    for name in layout.get("comparison", {}).get("tables", {}):
        if name in table_specs.COMPARISON_TABLES:
            path = run.analysis_dir / layout["comparison"].get("folder", COMPARISON) / table_specs.COMPARISON_TABLES[name].file
            frame = read_table(path, "rerun `lingtrace analyze RUN --overwrite`", what=f"comparison table {name}")
            missing = [c for c in table_specs.COMPARISON_TABLES[name].columns if c not in frame.columns]
            if missing:
                raise LingtraceError(f"{path} has no column {missing[0]!r} (made by another lingtrace version)", "rerun `lingtrace analyze RUN --overwrite`")
            comparison[name] = frame
    shared = {
        "root": run.root,
        "cfg": cfg,
        "manifest": read_json(run.manifest_path) if run.manifest_path.exists() else None,
        "task": read_json(run.task_path),
        "train": read_table(run.split_path("train"), "run `lingtrace prepare RUN` first", what="training data"),
        "test": read_table(run.selection_path, "run `lingtrace select RUN` first", what="selected test examples"),
        "layout": layout,
        "comparison": comparison,
    }
    views = {
        method: ReportInputs(
            summary=a.summary,
            tables=_method_tables(a),
            influence_meta=_store_meta(run, method),
            method=method,
            folder="" if layout.get("flat") else a.directory.name,
            **shared,
        )
        for method, a in analyses.items()
    }
    for view in views.values():
        view.methods = views
    return views[layout.get("reference_method", next(iter(views)))]


# ---------------------------------------------------------------- data for the browser


def browser_data(inp: ReportInputs, languages: Sequence[str]) -> dict[str, Any]:
    """Every selected test example with, per method, its top ``analysis.browser_k`` positive and
    negative training examples (``[uid, score]``; the training examples' language, text and label once
    in ``train``)."""
    label_names = list(inp.task.get("label_names", []))
    n = inp.cfg.analysis.browser_k
    train = inp.train.set_index(inp.train[schema.UID].astype(str))
    lists: dict[tuple[str, str, str], list] = {}
    own_share: dict[str, pd.Series] = {}
    used: set[str] = set()
    for method in inp.method_names:
        topk = inp.for_method(method).tables[table_specs.TOPK.name]
        summed = topk[topk["epoch"] == SUMMED]
        own = (summed["train_lang"] == summed["test_lang"]).astype(float) * 100.0
        own_share[method] = own.groupby([summed["direction"], summed["test_uid"]]).mean()
        shown = summed[summed["rank"] <= n]
        for row in shown.itertuples(index=False):
            u = str(row.train_uid)
            used.add(u)
            lists.setdefault((method, row.direction, str(row.test_uid)), []).append([u, float(row.score)])
    known = [u for u in train.index if u in used]
    sub = train.loc[known]
    train_info = {
        u: [str(lang), example_text(a, b), label_name(label_names, y)]
        for u, lang, a, b, y in zip(sub.index, sub[schema.LANG], sub[schema.TEXT_A], sub[schema.TEXT_B], sub[schema.LABEL])
    }
    tests = []
    for r in inp.test.itertuples(index=False):
        uid = str(getattr(r, schema.UID))
        pred = getattr(r, schema.PRED, None)
        tests.append(
            {
                "uid": uid,
                "lang": str(getattr(r, schema.LANG)),
                "text": example_text(getattr(r, schema.TEXT_A), getattr(r, schema.TEXT_B)),
                "label": label_name(label_names, getattr(r, schema.LABEL)),
                "pred": label_name(label_names, pred) if pred is not None else "",
                "by_method": {
                    m: {
                        "own_pos": _finite(own_share[m].get((POSITIVE, uid))),
                        "own_neg": _finite(own_share[m].get((NEGATIVE, uid))),
                        "pos": lists.get((m, POSITIVE, uid), []),
                        "neg": lists.get((m, NEGATIVE, uid), []),
                    }
                    for m in inp.method_names
                },
            }
        )
    return {
        "k": int(inp.summary.get("k_effective", inp.cfg.analysis.k)),
        "languages": list(languages),
        "methods": inp.method_names,
        "method": inp.method,
        "train": train_info,
        "tests": tests,
    }


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


# ---------------------------------------------------------------- sections


def _pivot(
    frame: pd.DataFrame, value: str, rows: Sequence, cols: Sequence, index: str = "test_lang", columns: str = "train_lang"
) -> pd.DataFrame:
    p = frame.pivot_table(index=index, columns=columns, values=value, aggfunc="first")
    p = p.reindex(index=[r for r in rows if r in p.index], columns=[c for c in cols if c in p.columns])
    p.index.name = f"{index} \\ {columns}"
    p.columns.name = None
    return p


def _pct_formats(frame: pd.DataFrame) -> dict:
    return {c: pct for c in frame.columns}


def _summary_section(inp: ReportInputs, figs: dict[str, bytes]) -> str:
    cfg, s = inp.cfg, inp.summary
    m = inp.manifest or {}
    epochs = m.get("epochs", [])
    label_names = inp.task.get("label_names", [])
    model = cfg.model.name + "".join(
        [f", first {cfg.model.num_layers} layers" if cfg.model.num_layers else "", ", word embeddings frozen" if cfg.model.freeze_embeddings else ""]
    )
    train_counts = ", ".join(f"{k} {v}" for k, v in s.get("train_languages", {}).items())
    items = [
        ("Task", f"{inp.task.get('task')} ({len(label_names)} classes: {', '.join(map(str, label_names))}); "
         f"{'parallel (translation ids shared across languages)' if inp.task.get('parallel') else 'not parallel'}"
         f"{', sentence pairs' if inp.task.get('pair') else ''}"),
        ("Languages", ", ".join(cfg.data.languages)),
        ("Model", f"{model} ({cfg.model.kind}{f', LoRA rank {cfg.model.lora_r}' if cfg.model.lora_r else ''})"),
        ("Attributed loss", attributed_loss(cfg.model.kind)),
        ("Training examples", f"{s.get('n_train')} ({train_counts})"),
        ("Fine-tuning", _fine_tuning(cfg, m)),
        ("Influence", ", ".join(inp.method_names) + f" (one score store each; see the table below; reference method: {inp.method})"),
        ("Analyses", f"top-k with k = {s.get('k')}" + (f" (capped at the {s.get('k_effective')} training examples)" if s.get("k_effective") != s.get("k") else "")),
    ]
    kv = "<dl class='kv'>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"
    warning = majority_class_warning(inp.manifest)
    parts = ([warning_box(warning)] if warning else []) + [kv, _methods_table(inp)]
    if epochs:
        langs = language_order(cfg.data.languages, [lang for e in epochs for lang in e.get("dev_accuracy_per_lang", {})])
        acc = pd.DataFrame(
            [
                {"epoch": e["epoch"], "train loss": e.get("train_loss"), "dev accuracy": 100 * e.get("dev_accuracy", float("nan")),
                 **{f"dev {lang}": 100 * e.get("dev_accuracy_per_lang", {}).get(lang, float("nan")) for lang in langs}}
                for e in epochs
            ]
        )
        base = (inp.manifest or {}).get("dev_majority_baseline")
        if base:  # the accuracy of always predicting the most frequent label
            acc = pd.concat(
                [acc, pd.DataFrame([{"epoch": "majority class", "dev accuracy": 100 * base.get("all", float("nan")),
                                     **{f"dev {lang}": 100 * base.get(lang, float("nan")) for lang in langs}}])],
                ignore_index=True,
            )
        fm = {c: pct for c in acc.columns if c.startswith("dev")}
        parts.append("<h3>Dev accuracy per epoch</h3>" + table_html(acc, formats=fm))
        parts.append(figure(figs.get("dev_accuracy"), "dev accuracy per epoch"))
    sel = inp.test
    sel_tab = sel.groupby(schema.LANG, sort=False).agg(selected=(schema.UID, "size"), **({"mean confidence": (schema.CONFIDENCE, "mean")} if schema.CONFIDENCE in sel else {}))
    sel_tab = sel_tab.reindex([lang for lang in language_order(cfg.data.languages, sel[schema.LANG])]).reset_index().rename(columns={schema.LANG: "test language"})
    parts.append(
        "<h3>Test selection</h3><p class='note'>Test examples the final model predicts correctly, drawn per language "
        f"(select.per_lang = {cfg.select.per_lang}); these are the rows of the score matrices.</p>"
        + table_html(sel_tab, text_columns=("test language",))
    )
    return section("summary", "Run summary", None, None, "\n".join(parts))


def _methods_table(inp: ReportInputs) -> str:
    """Each influence method: how its scores were made, what it leaves out, what it records about itself."""
    rows = []
    for method in inp.method_names:
        view = inp.for_method(method)
        rows.append(
            {
                "method": method,
                "scores": method_notes.scoring(method, view.influence_meta, view.summary),
                "leaves out": method_notes.leaves_out(method, view.influence_meta),
                "method_info": method_notes.method_info(view.influence_meta),
            }
        )
    note = ""
    if inp.layout.get("flat"):
        note = warning_box(
            "These analyses were made by an older lingtrace, for tracin only: rerun `lingtrace analyze RUN --overwrite` "
            "to analyse every influence method of the run and compare them."
        )
    skipped = inp.layout.get("skipped_stores") or {}
    if skipped:
        note += "".join(f"<p class='note'>Left out: {esc(m)}: {esc(why)}</p>" for m, why in skipped.items())
    return "<h3>Influence methods</h3>" + note + table_html(pd.DataFrame(rows), text_columns=("method", "scores", "leaves out", "method_info"))


def _fine_tuning(cfg: Config, m: dict[str, Any]) -> str:
    """How the checkpoints came about: lingtrace's own training, or imported from elsewhere."""
    epochs, imported = m.get("epochs", []), m.get("imported")
    if not imported:
        return (f"{len(epochs)} epoch(s) of at most {cfg.train.epochs}, lr {cfg.train.lr:g}, batch size {cfg.train.batch_size}; "
                f"final model: epoch {m.get('final_epoch')}{' (stopped early)' if m.get('stopped_early') else ''}")
    trainer = ", ".join(imported.get("trainer_output") or []) or ", ".join(imported.get("sources", []))
    final = imported.get("final", {})
    return (f"imported: {len(epochs)} checkpoint(s) trained elsewhere ({trainer}; ordered by {imported.get('order')}); "
            f"final model: epoch {m.get('final_epoch')} ({Path(final.get('source', '')).name}, {final.get('chosen')}); "
            f"dev accuracy {imported.get('taken', {}).get('dev_accuracy')}; learning rates from {imported.get('taken', {}).get('steps_and_learning_rates')}; "
            f"training recipe: {'declared in the config' if imported.get('training_recipe') else 'unknown (the retraining experiments are not available)'}")


def _not_applicable(inp: ReportInputs, spec) -> str | None:
    """Why the analysis of table ``spec`` does not apply to this run (None when it does)."""
    return inp.summary.get("not_applicable", {}).get(spec.name)


def _table_section(inp: ReportInputs, spec, reading: str | None, content: str, na: str | None) -> Block:
    """One method's part of the section of one analysis table, with the notes the analyze stage recorded for it."""
    return Block(spec.name, spec.title, spec.reproduces, reading, content, na, inp.summary.get("notes", {}).get(spec.name, []))


def _section_shares(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    name = table_specs.LANGUAGE_SHARES.name
    na = inp.summary.get("not_applicable", {}).get(name)
    content, reading = "", None
    if not na:
        shares = inp.tables[name]
        sel = shares[shares["epoch"] == SUMMED]
        tabs = []
        for d in DIRECTIONS:
            p = _pivot(sel[sel["direction"] == d], "share", test_order, train_order)
            tabs.append(f"<div><h3>{esc(figures.DIRECTION_TITLE[d])}</h3>{table_html(p, index=True, formats=_pct_formats(p))}</div>")
        chance = sel.drop_duplicates("train_lang")[["train_lang", "train_fraction"]]
        content = (
            figure(figs.get("language_shares"), "language shares heat maps", "Rows: test language; columns: training language; each row sums to 100%.")
            + f"<div class='tables'>{''.join(tabs)}</div>"
            + f"<p class='note'>Expected by chance (share of the training data): {esc(', '.join(f'{r.train_lang} {r.train_fraction:.1f}%' for r in chance.itertuples()))}.</p>"
            + columns_doc(table_specs.LANGUAGE_SHARES.columns, _file(inp, table_specs.LANGUAGE_SHARES))
        )
        if table_specs.IN_LANGUAGE_SHARE.name in inp.tables:
            reading = readings.language_shares(inp.tables[table_specs.IN_LANGUAGE_SHARE.name], int(inp.summary.get("k_effective", inp.cfg.analysis.k)))
    return Block(name, table_specs.LANGUAGE_SHARES.title, table_specs.LANGUAGE_SHARES.reproduces, reading, content, na, inp.summary.get("notes", {}).get(name, []))


def _section_average(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    spec = table_specs.AVERAGE_INFLUENCE
    na = _not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        avg = inp.tables[spec.name]
        p = _pivot(avg[avg["epoch"] == SUMMED], "mean_score", test_order, train_order)
        per_epoch = []
        for e in sorted(x for x in avg["epoch"].unique() if x != SUMMED):
            pe = _pivot(avg[avg["epoch"] == e], "mean_score", test_order, train_order)
            per_epoch.append(f"<div><h3>epoch {int(e)}</h3>{table_html(pe, index=True)}</div>")
        content = (
            figure(figs.get("average_influence"), "average influence heat map", "Mean summed score over all pairs of a test and a training language.")
            + table_html(p, index=True)
            + (more("Per epoch", f"<div class='tables'>{''.join(per_epoch)}</div>") if per_epoch else "")
            + columns_doc(spec.columns, _file(inp, spec))
        )
        reading = readings.average_influence(avg)
    return _table_section(inp, spec, reading, content, na)


def _section_overlap(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    spec = table_specs.TRANSLATION_OVERLAP
    na = _not_applicable(inp, spec)
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
            + columns_doc(spec.columns, _file(inp, spec))
        )
        reading = readings.translation_overlap(ov)
    return _table_section(inp, spec, reading, content, na)


def _section_dynamics(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    inl = inp.tables.get(table_specs.IN_LANGUAGE_SHARE.name)
    wil = inp.tables.get(table_specs.DYNAMICS_WILCOXON.name)
    na_w = inp.summary.get("not_applicable", {}).get(table_specs.DYNAMICS_WILCOXON.name)
    parts = []
    reading = None
    if inl is not None:
        sel = inl[inl["epoch"] != SUMMED]
        tabs = []
        for d in DIRECTIONS:
            p = _pivot(sel[sel["direction"] == d], "share", [*test_order, ALL], sorted(sel["epoch"].unique()), columns="epoch")
            p.columns = [f"epoch {int(c)}" for c in p.columns]
            tabs.append(f"<div><h3>In-language share, {esc(d)}</h3>{table_html(p, index=True, formats=_pct_formats(p))}</div>")
        parts.append(figure(figs.get("in_language_dynamics"), "in-language share per epoch", "Each checkpoint's own top-k; dashed: chance level."))
        parts.append(f"<div class='tables'>{''.join(tabs)}</div>")
        parts.append(figure(figs.get("shares_per_epoch"), "language shares per epoch"))
        parts.append(columns_doc(table_specs.IN_LANGUAGE_SHARE.columns, _file(inp, table_specs.IN_LANGUAGE_SHARE)))
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
        parts.append(columns_doc(table_specs.DYNAMICS_WILCOXON.columns, _file(inp, table_specs.DYNAMICS_WILCOXON)))
    return Block("dynamics", "Dynamics over fine-tuning", "Figs. 3, 12, 13", reading, "\n".join(parts), None, inp.summary.get("notes", {}).get(table_specs.DYNAMICS_WILCOXON.name, []))


def _section_distributions(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    spec = table_specs.SCORE_DISTRIBUTIONS
    na = _not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        dist = inp.tables[spec.name]
        content = (
            figure(figs.get("score_distributions"), "score distributions box plots", "Boxes: quartiles of the summed scores of the top-k entries; whiskers 1.5 IQR.")
            + more("Table", table_html(dist))
            + columns_doc(spec.columns, _file(inp, spec))
        )
        reading = readings.score_distributions(dist)
    return _table_section(inp, spec, reading, content, na)


def _section_examples(inp: ReportInputs, test_order: Sequence[str]) -> Block:
    spec = table_specs.EXAMPLES
    na = _not_applicable(inp, spec)
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
            f"analysis/{_file(inp, spec)}.</p>" + "".join(blocks) + columns_doc(spec.columns, _file(inp, spec))
        )
    reading = None if na else readings.example_tables(inp.tables[spec.name])
    return _table_section(inp, spec, reading, content, na)


def _add_method_hint(methods: Sequence[str]) -> str:
    """A method the run does not have yet, for the hint that says how to add one."""
    missing = [m for m in ("representation", *method_names()) if m not in methods]
    return ",".join([*methods, missing[0]]) if missing else ",".join(methods)


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


def _by_method(frame: pd.DataFrame, value: str, rows: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """test language x method table of one column of a comparison table."""
    p = _pivot(frame, value, rows, methods, columns="method")
    p.index.name = "test language"
    return p


def _comparison_doc(spec) -> str:
    return columns_doc(spec.columns, f"{COMPARISON}/{spec.file}")


def _section_methods(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str]) -> str:
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
        return section(sid, title, None, None, f"<p class='note'>{esc(hint)}</p>")
    findings = readings.method_findings(c, methods, inp.method)
    items = "".join(
        f"<li class='{'holds' if f.holds else 'differs' if f.holds is not None else 'info'}'><strong>"
        f"{'holds under every method' if f.holds else 'depends on the method' if f.holds is not None else 'agreement'}:</strong> {esc(f.text)}</li>"
        for f in findings
    )
    parts = [f"<ul class='findings'>{items}</ul>"]
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
            table_html(p, index=True, formats=_pct_formats(p)),
            more(
                f"Above chance? Two-sided one-sample t-test of the test examples' in-language % against chance (p < {readings.ALPHA:g} counts)",
                table_html(pvals, index=True, formats={c: pvalue for c in pvals.columns}),
            ),
            more("Negative top-k", table_html(neg, index=True, formats=_pct_formats(neg))),
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
        parts += [table_html(both, index=True, formats=_pct_formats(both)), _comparison_doc(table_specs.METHODS_REINFORCING_SHARE)]
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


def _section_browser(inp: ReportInputs, languages: Sequence[str]) -> str:
    data = browser_data(inp, languages)
    reading = readings.examples(len(data["tests"]), min(inp.cfg.analysis.browser_k, data["k"]))
    return section("browser", "Example browser", "every test example", reading, browser(data))


def _section_scripts(inp: ReportInputs, figs: dict[str, bytes]) -> Block:
    spec = table_specs.SCRIPT_PURITY
    na = _not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        sp = inp.tables[spec.name]
        fm = {"pct_pure_topk": pct, "pct_pure_train": pct}
        content = (
            figure(figs.get("script_purity"), "script purity bars", "Grey: all training examples of the language (baseline); blue/red: its top-k entries.")
            + table_html(sp[sp["test_lang"] == ALL], formats=fm, text_columns=("expected_script", "other_scripts"))
            + more("Per test language", table_html(sp[sp["test_lang"] != ALL], formats=fm, text_columns=("expected_script", "other_scripts")))
            + columns_doc(spec.columns, _file(inp, spec))
        )
        reading = readings.script_purity(sp)
    return _table_section(inp, spec, reading, content, na)


def _section_word_embeddings(inp: ReportInputs, figs: dict[str, bytes], test_order: Sequence[str], train_order: Sequence[str]) -> Block:
    spec = table_specs.WORD_EMBEDDING_SHARE
    na = _not_applicable(inp, spec)
    content, reading = "", None
    if not na:
        we = inp.tables[spec.name]
        p = _pivot(we[we["direction"] == POSITIVE], "share", test_order, train_order)
        content = (
            figure(figs.get("word_embedding_share"), "word-embedding share heat maps")
            + "<h3>Top-k positive: % of the summed score from the word embeddings</h3>"
            + table_html(p, index=True, formats=_pct_formats(p))
            + more("Full table", table_html(we, formats={"share": pct, "abs_share": pct}))
            + columns_doc(spec.columns, _file(inp, spec))
        )
        reading = readings.word_embedding_share(we)
    return _table_section(inp, spec, reading, content, na)


def _section_config(inp: ReportInputs) -> str:
    cfg_json = json.dumps(inp.cfg.to_dict(), indent=2, ensure_ascii=False)
    metas = []
    for method in inp.method_names:
        meta = inp.for_method(method).influence_meta
        meta_json = json.dumps({k: v for k, v in meta.items() if k not in ("fingerprint",)}, indent=2, ensure_ascii=False, default=str)
        where = RunDir(inp.root).influence_store(method).relative_to(inp.root)
        metas.append(more(f"Influence store metadata of {method} ({where}/meta.json)", f"<pre>{esc(meta_json)}</pre>"))
    return section(
        "config",
        "Configuration",
        None,
        None,
        f"<p class='note'>The resolved configuration of this run (config.json).</p><pre>{esc(cfg_json)}</pre>" + "".join(metas),
    )


# ---------------------------------------------------------------- assembly


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


def _experiment_sections(root) -> list[tuple[str, str, str]]:
    """The sections the retraining experiments wrote (``RUN/experiments/NAME/section.html``, present
    only once an experiment is complete), in the order of ``lingtrace.config.EXPERIMENTS``."""
    from lingtrace.config import EXPERIMENTS

    run = RunDir(root)
    out = []
    for name in EXPERIMENTS:
        path = run.experiment_section(name)
        if path.is_file():
            out.append((f"experiment-{name}", f"Experiment: {name}", path.read_text(encoding="utf-8")))
    return out


#: the analysis sections, one part per method: (section id, navigation label, maker)
ANALYSIS_SECTIONS = (
    (table_specs.LANGUAGE_SHARES.name, "Language shares", lambda v, figs, to, tr: _section_shares(v, figs, to, tr)),
    (table_specs.AVERAGE_INFLUENCE.name, "Average influence", lambda v, figs, to, tr: _section_average(v, figs, to, tr)),
    (table_specs.TRANSLATION_OVERLAP.name, "Reinforcing vs complementary", lambda v, figs, to, tr: _section_overlap(v, figs, to, tr)),
    ("dynamics", "Dynamics", lambda v, figs, to, tr: _section_dynamics(v, figs, to, tr)),
    (table_specs.SCORE_DISTRIBUTIONS.name, "Score distributions", lambda v, figs, to, tr: _section_distributions(v, figs, to, tr)),
    (table_specs.SCRIPT_PURITY.name, "Scripts", lambda v, figs, to, tr: _section_scripts(v, figs)),
    (table_specs.WORD_EMBEDDING_SHARE.name, "Word embeddings", lambda v, figs, to, tr: _section_word_embeddings(v, figs, to, tr)),
)


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
        ("summary", "Summary", _summary_section(inp, run_figs)),
        ("methods", "Methods compared", _section_methods(inp, comparison_figs, test_order)),
    ]
    for sid, label, make in ANALYSIS_SECTIONS:
        blocks = {m: make(inp.for_method(m), method_figs[m], test_order, train_order) for m in methods}
        sections.append((sid, label, per_method_section(inp, blocks)))
    sections += [
        *_experiment_sections(inp.root),
        (table_specs.EXAMPLES.name, "Example tables", per_method_section(inp, {m: _section_examples(inp.for_method(m), test_order) for m in methods})),
        ("browser", "Browser", _section_browser(inp, test_order)),
        ("config", "Config", _section_config(inp)),
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
