"""The ``analyze`` stage: every analysis of the paper, for every influence method, into ``RUN/analysis/``.

Reads every complete score store under ``RUN/influence/`` (``layout.discover_stores``),
``RUN/data/train.parquet``, ``RUN/selection/test.parquet`` and ``RUN/data/task.json``; writes, per
method, one Parquet table per analysis (layout in ``lingtrace.analysis.tables``) and a
``summary.json`` (sizes, epochs, k, which analyses do not apply to this run and why, notes) into
``analysis/METHOD/``, the tables comparing the methods into ``analysis/comparison/``, and
``analysis/summary.json`` (``lingtrace.analysis.layout``). A method whose analyses are already there,
made from the same store, examples and analysis settings (its ``fingerprint``), keeps them: adding a
method to a run computes only its analyses (``--overwrite`` recomputes all). The whole folder is
replaced atomically: an interrupted stage leaves the previous result (or none).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.average import average_influence
from lingtrace.analysis.common import SUMMED, MatrixLike, NotApplicable, SummedMatrix
from lingtrace.analysis.compare import (
    in_language_by_method,
    reinforcing_by_method,
    top_other_language,
    topk_overlap,
    topk_overlap_summary,
)
from lingtrace.analysis.distributions import score_distributions
from lingtrace.analysis.dynamics import (
    IN_LANGUAGE_SHARE,
    MEAN_RANK_OF_TOP_K,
    epoch_wilcoxon,
    top_k_mean_ranks,
)
from lingtrace.analysis.embeddings import word_embedding_share
from lingtrace.analysis.examples import example_table
from lingtrace.analysis.layout import COMPARISON, LAYOUT, discover_stores
from lingtrace.analysis.overlap import translation_overlap
from lingtrace.analysis.scripts import script_purity
from lingtrace.analysis.shares import in_language_share, language_shares, per_example_in_language_share
from lingtrace.analysis.topk import topk_frame
from lingtrace.config import AnalysisConfig, Config
from lingtrace.config.influence import DEFAULT_METHOD
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.influence.params import WORD_EMBEDDINGS
from lingtrace.influence.store import GROUP_PREFIX, META, TEST_UIDS, TRAIN_UIDS, InfluenceScores, load_scores
from lingtrace.io import atomic_dir, file_sha256, read_json, write_json
from lingtrace.run import RunDir, align_uids, read_table, read_task
from lingtrace.utils import progress

log = logging.getLogger(__name__)

#: bump when an analysis changes what it computes: analyses made by an older version are then redone
ANALYSIS_VERSION = 2
#: the per-method tables the comparison reads
COMPARED = (table_specs.TOPK.name, table_specs.IN_LANGUAGE_SHARE.name, table_specs.LANGUAGE_SHARES.name, table_specs.TRANSLATION_OVERLAP.name)


@dataclass
class AnalysisResult:
    """The tables of one run, the analyses that do not apply (name -> plain-language reason), and notes."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def load_examples(run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The training examples, the selected test examples and the task description."""
    train = read_table(run.split_path("train"), "run `lingtrace prepare RUN` first", what="training data")
    test = read_table(run.selection_path, "run `lingtrace select RUN` first", what="selected test examples")
    task = read_task(run)
    for frame, what in ((train, _relative(run, run.split_path("train"))), (test, _relative(run, run.selection_path))):
        missing = [c for c in schema.EXAMPLE_COLUMNS if c not in frame.columns]
        if missing:
            raise LingtraceError(f"{what} has no column {missing[0]!r}", "rerun `lingtrace prepare RUN --overwrite`")
    return train, test, task


def _relative(run: RunDir, path: Path) -> str:
    return str(path.relative_to(run.root))


def align_to_store(scores: InfluenceScores, train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training / selected test examples reordered to the store's columns / rows."""
    if not scores.epochs:
        raise LingtraceError(f"the influence scores in {scores.directory} hold no checkpoint", "rerun `lingtrace influence RUN --overwrite`")
    if len(test) != len(scores.test_uids):
        raise LingtraceError(
            f"the influence scores in {scores.directory} cover {len(scores.test_uids)} test examples but {len(test)} are selected",
            "the selection changed after the influence stage: rerun `lingtrace influence RUN --overwrite`",
        )
    layout = RunDir(".")  # the paths relative to the run directory, for the messages
    train_al = align_uids(train, scores.train_uids, f"training data ({layout.split_path('train')})")
    test_al = align_uids(test, scores.test_uids, f"selected test examples ({layout.selection_path})")
    if len(scores.train_uids) < len(train):
        log.warning("the influence scores in %s cover %d of the %d training examples", scores.directory, len(scores.train_uids), len(train))
    return train_al, test_al


def load_inputs(run: RunDir, method: str | None = None) -> tuple[InfluenceScores, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """One method's score store (default tracin's) and the examples aligned with its columns / rows."""
    scores = load_scores(run, method=method)
    train, test, task = load_examples(run)
    train_al, test_al = align_to_store(scores, train, test)
    return scores, train_al, test_al, task


def analyze(
    scores: InfluenceScores,
    train: pd.DataFrame,
    test: pd.DataFrame,
    task: dict[str, Any],
    acfg: AnalysisConfig,
    languages: Sequence[str] | None = None,
) -> AnalysisResult:
    """Every analysis on one score store (``train`` / ``test`` aligned with its columns / rows)."""
    res = AnalysisResult()
    epochs = list(scores.epochs)
    per_epoch = {e: scores.epoch(e) for e in epochs}
    summed = SummedMatrix(list(per_epoch.values()))
    train_langs = train[schema.LANG].astype(str).tolist()
    test_langs = test[schema.LANG].astype(str).tolist()
    task_name = str(task.get("task", "this task"))

    def attempt(name: str, fn: Callable[[], pd.DataFrame]) -> None:
        try:
            frame = fn()
        except NotApplicable as e:
            res.not_applicable[name] = str(e)
            log.info("%s: does not apply (%s)", name, e)
            return
        notes = list(frame.attrs.get("notes", []))
        frame.attrs = {}
        res.tables[name] = frame
        if notes:
            res.notes[name] = notes

    steps = progress(total=9, desc="analyze", unit="analysis")
    try:
        topk = topk_frame({SUMMED: summed, **per_epoch}, test, train, acfg.k)
        res.tables[table_specs.TOPK.name] = topk
        steps.update()
        attempt(table_specs.LANGUAGE_SHARES.name, lambda: language_shares(topk, train_langs, languages))
        attempt(table_specs.IN_LANGUAGE_SHARE.name, lambda: in_language_share(topk, train_langs, languages))
        steps.update()
        attempt(
            table_specs.AVERAGE_INFLUENCE.name,
            lambda: pd.concat(
                [
                    average_influence(m, test_langs, train_langs, languages).assign(epoch=e)
                    for e, m in {SUMMED: summed, **per_epoch}.items()
                ],
                ignore_index=True,
            )[list(table_specs.AVERAGE_INFLUENCE.columns)],
        )
        steps.update()
        attempt(
            table_specs.TRANSLATION_OVERLAP.name,
            lambda: translation_overlap(topk, train, bool(task.get("parallel", False)), languages, task=f"task {task_name!r}"),
        )
        steps.update()
        attempt(table_specs.DYNAMICS_WILCOXON.name, lambda: _dynamics(topk, per_epoch, scores, languages))
        steps.update()
        attempt(table_specs.SCORE_DISTRIBUTIONS.name, lambda: score_distributions(topk, languages))
        steps.update()
        label_names = list(task.get("label_names", []))
        attempt(table_specs.EXAMPLES.name, lambda: example_table(topk, test, train, label_names, n=acfg.examples_per_table))
        steps.update()
        attempt(table_specs.SCRIPT_PURITY.name, lambda: script_purity(topk, train, languages))
        steps.update()
        attempt(table_specs.WORD_EMBEDDING_SHARE.name, lambda: _word_embeddings(scores, summed, topk, train_langs, test_langs, languages))
        steps.update()
    finally:
        steps.close()
    if acfg.k > len(scores.train_uids):
        res.notes.setdefault(table_specs.TOPK.name, []).append(
            f"analysis.k={acfg.k} is more than the {len(scores.train_uids)} training examples: the top-k hold every training example"
        )
    return res


def _dynamics(
    topk: pd.DataFrame, per_epoch: Mapping[int, MatrixLike], scores: InfluenceScores, languages: Sequence[str] | None
) -> pd.DataFrame:
    shares = per_example_in_language_share(topk)
    parts = [epoch_wilcoxon(shares, IN_LANGUAGE_SHARE, languages)]
    ranks = top_k_mean_ranks(per_epoch, topk, scores.test_uids, scores.train_uids)
    parts.append(epoch_wilcoxon(ranks, MEAN_RANK_OF_TOP_K, languages))
    return pd.concat(parts, ignore_index=True)


def _word_embeddings(
    scores: InfluenceScores,
    summed: MatrixLike,
    topk: pd.DataFrame,
    train_langs: Sequence[str],
    test_langs: Sequence[str],
    languages: Sequence[str] | None,
) -> pd.DataFrame:
    groups = {g: SummedMatrix([scores.epoch(e, GROUP_PREFIX + g) for e in scores.epochs]) for g in scores.groups}
    return word_embedding_share(
        summed, groups, topk, scores.test_uids, scores.train_uids, test_langs, train_langs, WORD_EMBEDDINGS, languages
    )


def summary(
    result: AnalysisResult, scores: InfluenceScores, train: pd.DataFrame, test: pd.DataFrame, task: dict, acfg: AnalysisConfig
) -> dict[str, Any]:
    """One method's ``summary.json``."""
    meta_keys = ("method", "mode", "lr_weighted", "params", "dtype", "projection", "groups", "n_train", "n_test", "method_info")
    return {
        "method": scores.method,
        "task": task.get("task"),
        "parallel": bool(task.get("parallel", False)),
        "k": acfg.k,
        "k_effective": min(acfg.k, len(scores.train_uids)),
        "examples_per_table": acfg.examples_per_table,
        "epochs": list(scores.epochs),
        "summed_epoch": SUMMED,
        "n_train": len(train),
        "n_test": len(test),
        "train_languages": train[schema.LANG].astype(str).value_counts(sort=False).to_dict(),
        "test_languages": test[schema.LANG].astype(str).value_counts(sort=False).to_dict(),
        "influence": {k: scores.meta[k] for k in meta_keys if k in scores.meta},
        "tables": {
            name: {"file": table_specs.TABLES[name].file, "rows": len(frame), "title": table_specs.TABLES[name].title, "reproduces": table_specs.TABLES[name].reproduces}
            for name, frame in result.tables.items()
        },
        "not_applicable": result.not_applicable,
        "notes": result.notes,
    }


def write_tables(directory: Path, tables: Mapping[str, pd.DataFrame], specs: Mapping[str, table_specs.TableSpec]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(directory / specs[name].file, index=False)


def write_result(directory: Path, result: AnalysisResult, info: dict[str, Any]) -> None:
    """Write one method's tables and ``summary.json`` into ``directory`` (a new folder)."""
    write_tables(directory, result.tables, table_specs.TABLES)
    write_json(directory / table_specs.SUMMARY, info)


def examples_digest(run: RunDir) -> str:
    """What every method's analyses read besides its store: the examples, the task, the version."""
    parts = [file_sha256(p) for p in (run.split_path("train"), run.selection_path, run.task_path)]
    return hashlib.sha256(json.dumps([ANALYSIS_VERSION, *parts]).encode()).hexdigest()


def analysis_fingerprint(store: Path, examples: str, cfg: Config) -> str:
    """What one method's analyses are computed from: its store's meta.json and axes, the examples and
    the analysis settings (the store's epoch files are trusted to match its meta.json)."""
    parts = {
        "store": [file_sha256(store / name) for name in (META, TRAIN_UIDS, TEST_UIDS)],
        "examples": examples,
        "analysis": dataclasses.asdict(cfg.analysis),
        "languages": list(cfg.data.languages),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _reusable(run: RunDir, previous: dict[str, Any], method: str, fp: str) -> Path | None:
    """The folder of ``method``'s analyses from the previous analyze when they were made from the same inputs."""
    if previous.get("layout") != LAYOUT or previous.get("fingerprints", {}).get(method) != fp:
        return None
    folder = run.analysis_dir / previous.get("folders", {}).get(method, method)
    return folder if (folder / table_specs.SUMMARY).is_file() else None


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder of finished tables by hard links (a copy where the file system has none)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def analyze_method(
    method: str, store: Path, train: pd.DataFrame, test: pd.DataFrame, task: dict, cfg: Config, out: Path
) -> dict[str, pd.DataFrame]:
    """Every analysis of one method's store into ``out``; returns the tables the comparison reads."""
    scores = load_scores(store)
    train_al, test_al = align_to_store(scores, train, test)
    log.info(
        "%s: analyzing %d test x %d training examples, %d checkpoint(s), k=%d",
        method,
        len(test_al),
        len(train_al),
        len(scores.epochs),
        cfg.analysis.k,
    )
    result = analyze(scores, train_al, test_al, task, cfg.analysis, cfg.data.languages)
    info = summary(result, scores, train_al, test_al, task, cfg.analysis)
    info["method"] = method
    write_result(out, result, info)
    return {name: result.tables[name] for name in COMPARED if name in result.tables}


def compare_methods(
    compared: Mapping[str, Mapping[str, pd.DataFrame]], n_train: int, parallel: bool, languages: Sequence[str] | None
) -> AnalysisResult:
    """The comparison tables from each method's ``COMPARED`` tables (``{method: {table: frame}}``)."""
    res = AnalysisResult()
    methods = list(compared)

    def tables_of(name: str) -> dict[str, pd.DataFrame]:
        return {m: t[name] for m, t in compared.items() if name in t}

    res.tables[table_specs.METHODS_IN_LANGUAGE_SHARE.name] = in_language_by_method(tables_of(table_specs.IN_LANGUAGE_SHARE.name))
    res.tables[table_specs.METHODS_TOP_OTHER_LANGUAGE.name] = top_other_language(tables_of(table_specs.LANGUAGE_SHARES.name), languages)
    overlap = tables_of(table_specs.TRANSLATION_OVERLAP.name)
    if overlap:
        res.tables[table_specs.METHODS_REINFORCING_SHARE.name] = reinforcing_by_method(overlap)
    else:
        res.not_applicable[table_specs.METHODS_REINFORCING_SHARE.name] = (
            "the task is not parallel" if not parallel else "translation overlap does not apply to this run (see each method's analyses)"
        )
    if len(methods) < 2:
        why = f"only one influence method ({methods[0]}) has scores in this run" if methods else "no method"
        res.not_applicable[table_specs.METHODS_TOPK_OVERLAP.name] = why
        res.not_applicable[table_specs.METHODS_TOPK_OVERLAP_SUMMARY.name] = why
    else:
        per_example = topk_overlap(tables_of(table_specs.TOPK.name))
        res.tables[table_specs.METHODS_TOPK_OVERLAP.name] = per_example
        res.tables[table_specs.METHODS_TOPK_OVERLAP_SUMMARY.name] = topk_overlap_summary(per_example, n_train, languages)
    return res


def run_analyze(run: RunDir, cfg: Config, overwrite: bool = False) -> dict[str, Any]:
    stores, skipped = discover_stores(run.influence_root)
    for method, why in skipped.items():
        log.warning("influence method %s left out of the analyses: %s", method, why)
    if not stores:
        if skipped:
            raise LingtraceError(f"no complete influence scores in {run.influence_root} ({'; '.join(skipped.values())})", "rerun `lingtrace influence RUN`")
        raise LingtraceError(f"no influence scores in {run.root}", "run `lingtrace influence RUN` first")
    train, test, task = load_examples(run)
    previous_path = run.analysis_dir / table_specs.SUMMARY
    previous = {} if overwrite or not previous_path.exists() else read_json(previous_path)
    examples = examples_digest(run)
    fingerprints, reused = {}, []
    compared: dict[str, dict[str, pd.DataFrame]] = {}
    with atomic_dir(run.analysis_dir) as tmp:
        for method, store in stores.items():
            fp = fingerprints[method] = analysis_fingerprint(store, examples, cfg)
            old = _reusable(run, previous, method, fp)
            if old is not None:
                log.info("%s: analyses up to date, kept", method)
                _link_tree(old, tmp / method)
                listed = read_json(old / table_specs.SUMMARY).get("tables", {})
                compared[method] = {n: pd.read_parquet(old / table_specs.TABLES[n].file) for n in COMPARED if n in listed}
                reused.append(method)
            else:
                compared[method] = analyze_method(method, store, train, test, task, cfg, tmp / method)
        comparison = compare_methods(compared, len(train), bool(task.get("parallel", False)), cfg.data.languages)
        write_tables(tmp / COMPARISON, comparison.tables, table_specs.COMPARISON_TABLES)
        methods = list(stores)
        info = {
            "layout": LAYOUT,
            "methods": methods,
            "reference_method": DEFAULT_METHOD if DEFAULT_METHOD in stores else methods[0],
            "folders": {m: m for m in methods},
            "fingerprints": fingerprints,
            "skipped_stores": skipped,
            "k": cfg.analysis.k,
            "n_train": len(train),
            "n_test": len(test),
            "comparison": {
                "folder": COMPARISON,
                "tables": {
                    name: {"file": table_specs.COMPARISON_TABLES[name].file, "rows": len(frame), "title": table_specs.COMPARISON_TABLES[name].title}
                    for name, frame in comparison.tables.items()
                },
                "not_applicable": comparison.not_applicable,
            },
        }
        write_json(tmp / table_specs.SUMMARY, info)
    return {"methods": methods, "reused": reused, "skipped": sorted(skipped)}
