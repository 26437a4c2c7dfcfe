"""The run summary section (task, languages, model, fine-tuning, dev accuracy per epoch, test selection,
and per influence method how its scores were made and what it leaves out) and the configuration section
(the resolved config and every store's meta.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.analysis.common import language_order
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.objectives import attributed_loss
from lingtrace.report import methods as method_notes
from lingtrace.report.html import esc, figure, more, pct, section, table_html, warning_box
from lingtrace.report.inputs import ReportInputs
from lingtrace.run import majority_class_warning


def summary_section(inp: ReportInputs, figs: dict[str, bytes]) -> str:
    """The run summary: task, languages, model, fine-tuning, the influence methods, dev accuracy per epoch and the test selection."""
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


def config_section(inp: ReportInputs) -> str:
    """The resolved configuration and every influence store's meta.json (without its fingerprint)."""
    cfg_json = json.dumps(inp.cfg.to_dict(), indent=2, ensure_ascii=False)
    metas = []
    for method in inp.method_names:
        meta = inp.for_method(method).influence_meta
        meta_json = json.dumps({k: v for k, v in meta.items() if k not in ("fingerprint",)}, indent=2, ensure_ascii=False, default=str)
        where = inp.for_method(method).store.relative_to(inp.root)
        metas.append(more(f"Influence store metadata of {method} ({where}/meta.json)", f"<pre>{esc(meta_json)}</pre>"))
    return section(
        "config",
        "Configuration",
        None,
        None,
        f"<p class='note'>The resolved configuration of this run (config.json).</p><pre>{esc(cfg_json)}</pre>" + "".join(metas),
    )
