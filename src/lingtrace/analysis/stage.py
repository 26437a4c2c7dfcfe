"""The ``analyze`` stage: every analysis of the paper from the score store into ``RUN/analysis/``.

Reads ``RUN/influence/`` (scores), ``RUN/data/train.parquet``, ``RUN/selection/test.parquet`` and
``RUN/data/task.json``; writes one Parquet table per analysis (layout in ``lingtrace.analysis.tables``)
and ``summary.json`` (sizes, epochs, k, which analyses do not apply to this run and why, notes).
The whole folder is replaced atomically: an interrupted stage leaves the previous result (or none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.analysis import tables as T
from lingtrace.analysis.average import average_influence
from lingtrace.analysis.common import SUMMED, MatrixLike, NotApplicable, SummedMatrix, align_examples
from lingtrace.analysis.distributions import score_distributions
from lingtrace.analysis.dynamics import (
    IN_LANGUAGE_SHARE,
    MEAN_RANK_OF_TOP_K,
    epoch_wilcoxon,
    top_k_mean_ranks,
)
from lingtrace.analysis.embeddings import word_embedding_share
from lingtrace.analysis.examples import example_table
from lingtrace.analysis.overlap import translation_overlap
from lingtrace.analysis.scripts import script_purity
from lingtrace.analysis.shares import in_language_share, language_shares, per_example_in_language_share
from lingtrace.analysis.topk import topk_frame
from lingtrace.config import AnalysisConfig, Config
from lingtrace.data import schema as S
from lingtrace.errors import LingtraceError
from lingtrace.influence.params import WORD_EMBEDDINGS
from lingtrace.influence.store import GROUP_PREFIX, InfluenceScores, load_scores
from lingtrace.io import atomic_dir, read_json, write_json
from lingtrace.run import RunDir
from lingtrace.utils import progress

log = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """The tables of one run, the analyses that do not apply (name -> plain-language reason), and notes."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def read_frame(path: Path, what: str, fix: str) -> pd.DataFrame:
    if not path.exists():
        raise LingtraceError(f"missing {what} ({path})", fix)
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise LingtraceError(f"cannot read {path}: {e}", fix) from e


def load_inputs(run: RunDir) -> tuple[InfluenceScores, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The score store and the training / selected test examples aligned with its columns / rows."""
    scores = load_scores(run)
    if not scores.epochs:
        raise LingtraceError(f"the influence scores in {scores.directory} hold no checkpoint", "rerun `lingtrace influence RUN --overwrite`")
    train = read_frame(run.split_path("train"), "training data", "run `lingtrace prepare RUN` first")
    test = read_frame(run.selection_path, "selected test examples", "run `lingtrace select RUN` first")
    task = read_json(run.task_path)
    for frame, what in ((train, "data/train.parquet"), (test, "selection/test.parquet")):
        missing = [c for c in S.EXAMPLE_COLUMNS if c not in frame.columns]
        if missing:
            raise LingtraceError(f"{what} has no column {missing[0]!r}", "rerun `lingtrace prepare RUN --overwrite`")
    if len(test) != len(scores.test_uids):
        raise LingtraceError(
            f"the influence scores cover {len(scores.test_uids)} test examples but {len(test)} are selected",
            "the selection changed after the influence stage: rerun `lingtrace influence RUN --overwrite`",
        )
    train_al = align_examples(train, scores.train_uids, "training data (data/train.parquet)")
    test_al = align_examples(test, scores.test_uids, "selected test examples (selection/test.parquet)")
    if len(scores.train_uids) < len(train):
        log.warning("the influence scores cover %d of the %d training examples", len(scores.train_uids), len(train))
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
    train_langs = train[S.LANG].astype(str).tolist()
    test_langs = test[S.LANG].astype(str).tolist()
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
        res.tables[T.TOPK.name] = topk
        steps.update()
        attempt(T.LANGUAGE_SHARES.name, lambda: language_shares(topk, train_langs, languages))
        attempt(T.IN_LANGUAGE_SHARE.name, lambda: in_language_share(topk, train_langs, languages))
        steps.update()
        attempt(
            T.AVERAGE_INFLUENCE.name,
            lambda: pd.concat(
                [
                    average_influence(m, test_langs, train_langs, languages).assign(epoch=e)
                    for e, m in {SUMMED: summed, **per_epoch}.items()
                ],
                ignore_index=True,
            )[list(T.AVERAGE_INFLUENCE.columns)],
        )
        steps.update()
        attempt(
            T.TRANSLATION_OVERLAP.name,
            lambda: translation_overlap(topk, train, bool(task.get("parallel", False)), languages, task=f"task {task_name!r}"),
        )
        steps.update()
        attempt(T.DYNAMICS_WILCOXON.name, lambda: _dynamics(topk, per_epoch, scores, languages))
        steps.update()
        attempt(T.SCORE_DISTRIBUTIONS.name, lambda: score_distributions(topk, languages))
        steps.update()
        label_names = list(task.get("label_names", []))
        attempt(T.EXAMPLES.name, lambda: example_table(topk, test, train, label_names, n=acfg.examples_per_table))
        steps.update()
        attempt(T.SCRIPT_PURITY.name, lambda: script_purity(topk, train, languages))
        steps.update()
        attempt(T.WORD_EMBEDDING_SHARE.name, lambda: _word_embeddings(scores, summed, topk, train_langs, test_langs, languages))
        steps.update()
    finally:
        steps.close()
    if acfg.k > len(scores.train_uids):
        res.notes.setdefault(T.TOPK.name, []).append(
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
    meta_keys = ("mode", "lr_weighted", "params", "dtype", "projection", "groups", "n_train", "n_test")
    return {
        "task": task.get("task"),
        "parallel": bool(task.get("parallel", False)),
        "k": acfg.k,
        "k_effective": min(acfg.k, len(scores.train_uids)),
        "examples_per_table": acfg.examples_per_table,
        "epochs": list(scores.epochs),
        "summed_epoch": SUMMED,
        "n_train": len(train),
        "n_test": len(test),
        "train_languages": train[S.LANG].astype(str).value_counts(sort=False).to_dict(),
        "test_languages": test[S.LANG].astype(str).value_counts(sort=False).to_dict(),
        "influence": {k: scores.meta[k] for k in meta_keys if k in scores.meta},
        "tables": {
            name: {"file": T.TABLES[name].file, "rows": len(frame), "title": T.TABLES[name].title, "reproduces": T.TABLES[name].reproduces}
            for name, frame in result.tables.items()
        },
        "not_applicable": result.not_applicable,
        "notes": result.notes,
    }


def write_result(directory: Path, result: AnalysisResult, info: dict[str, Any]) -> None:
    """Replace ``directory`` atomically with the tables and ``summary.json``."""
    with atomic_dir(directory) as tmp:
        for name, frame in result.tables.items():
            frame.to_parquet(tmp / T.TABLES[name].file, index=False)
        write_json(tmp / T.SUMMARY, info)


def run_analyze(run: RunDir, cfg: Config) -> dict[str, Any]:
    scores, train, test, task = load_inputs(run)
    log.info(
        "analyzing %d test x %d training examples, %d checkpoint(s), k=%d",
        len(test),
        len(train),
        len(scores.epochs),
        cfg.analysis.k,
    )
    result = analyze(scores, train, test, task, cfg.analysis, cfg.data.languages)
    info = summary(result, scores, train, test, task, cfg.analysis)
    write_result(run.analysis_dir, result, info)
    return {"tables": sorted(result.tables), "not_applicable": sorted(result.not_applicable)}
