"""Everything the report reads, in one dataclass: ``load_inputs`` gives a ``ReportInputs`` per influence
method (its analysis summary and tables, its store's meta.json) sharing the run's config, checkpoint
manifest, task, training data, selected test examples, analysis layout, comparison tables and the
experiments' sections. Every file is read here, through ``lingtrace.run``'s typed readers (the analysis
layout through ``lingtrace.analysis.layout``, a store's meta.json through ``lingtrace.influence.store``);
the rest of the report only renders what this holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.layout import COMPARISON, MethodAnalysis, read_layout
from lingtrace.config import EXPERIMENTS, Config
from lingtrace.config.influence import DEFAULT_METHOD
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import read_meta
from lingtrace.run import (
    RunDir,
    has_store,
    read_experiment_section,
    read_manifest,
    read_selection,
    read_split,
    read_table,
    read_task,
)

log = logging.getLogger(__name__)


@dataclass
class ReportInputs:
    """What the report reads. ``summary``, ``tables``, ``influence_meta``, ``store`` and ``method`` are one
    method's (``for_method`` gives the view of another); ``methods`` holds every method's view by name."""

    root: Path
    cfg: Config
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    manifest: dict[str, Any] | None
    task: dict[str, Any]
    train: pd.DataFrame
    test: pd.DataFrame
    #: the method's store's meta.json (``StoreMeta.to_dict()``; empty when the store has none)
    influence_meta: dict[str, Any]
    #: the method's score store (``RunDir.influence_store``)
    store: Path
    method: str = DEFAULT_METHOD
    #: where this method's tables are, relative to ``RUN/analysis/`` ("" in a flat, older layout)
    folder: str = DEFAULT_METHOD
    layout: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, ReportInputs] = field(default_factory=dict, repr=False)
    comparison: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: (name, HTML) of every complete experiment's section, in the order of ``lingtrace.config.EXPERIMENTS``
    experiments: list[tuple[str, str]] = field(default_factory=list)

    def for_method(self, method: str) -> ReportInputs:
        return self.methods[method]

    @property
    def method_names(self) -> list[str]:
        return list(self.methods) or [self.method]


def _method_tables(analysis: MethodAnalysis) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in analysis.summary.get("tables", {}):
        if name in table_specs.TABLES:
            tables[name] = read_table(analysis.directory / table_specs.TABLES[name].file, "rerun `lingtrace analyze RUN --overwrite`", what=f"analysis table {name} of {analysis.method}")
    if table_specs.TOPK.name not in tables:
        raise LingtraceError(f"{analysis.directory} has no top-k table", "rerun `lingtrace analyze RUN --overwrite`")
    return tables


def _comparison_tables(run: RunDir, layout: dict[str, Any]) -> dict[str, pd.DataFrame]:
    comparison = {}
    for name in layout.get("comparison", {}).get("tables", {}):
        if name in table_specs.COMPARISON_TABLES:
            path = run.analysis_dir / layout["comparison"].get("folder", COMPARISON) / table_specs.COMPARISON_TABLES[name].file
            frame = read_table(path, "rerun `lingtrace analyze RUN --overwrite`", what=f"comparison table {name}")
            missing = [c for c in table_specs.COMPARISON_TABLES[name].columns if c not in frame.columns]
            if missing:
                raise LingtraceError(f"{path} has no column {missing[0]!r} (made by another lingtrace version)", "rerun `lingtrace analyze RUN --overwrite`")
            comparison[name] = frame
    return comparison


def _store_meta(store: Path) -> dict[str, Any]:
    return read_meta(store).to_dict() if has_store(store) else {}


def load_inputs(run: RunDir, cfg: Config) -> ReportInputs:
    """The reference method's view (``layout["reference_method"]``, else the first method's)."""
    layout, analyses = read_layout(run.analysis_dir)
    if layout.get("flat"):
        log.warning("%s has the analysis layout of an older lingtrace (tracin only); rerun `lingtrace analyze RUN --overwrite` for every method", run.analysis_dir)
    comparison = _comparison_tables(run, layout)
    shared = {
        "root": run.root,
        "cfg": cfg,
        "manifest": read_manifest(run),
        "task": read_task(run),
        "train": read_split(run, "train"),
        "test": read_selection(run, what="selected test examples"),
        "layout": layout,
        "comparison": comparison,
        "experiments": [(name, html) for name in EXPERIMENTS if (html := read_experiment_section(run, name)) is not None],
    }
    views = {
        method: ReportInputs(
            summary=a.summary,
            tables=_method_tables(a),
            influence_meta=_store_meta(run.influence_store(method)),
            store=run.influence_store(method),
            method=method,
            folder="" if layout.get("flat") else a.directory.name,
            **shared,
        )
        for method, a in analyses.items()
    }
    for view in views.values():
        view.methods = views
    return views[layout.get("reference_method", next(iter(views)))]
