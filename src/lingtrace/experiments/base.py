"""The base run of the retraining experiments: complete through ``influence``; its config, data,
selection, final model and scores are read, never written (``load_base``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.layout import discover_stores
from lingtrace.config import Config
from lingtrace.config.influence import DEFAULT_METHOD
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import InfluenceScores, load_scores
from lingtrace.io import read_json
from lingtrace.run import RunDir, align_uids, read_selection, read_split, read_task

log = logging.getLogger(__name__)

#: base stages that must be complete before any experiment
BASE_STAGES = ("prepare", "train", "select", "influence")
#: the fix when the base run's scores do not match its examples
STALE_BASE_SCORES = "rerun `lingtrace influence RUN --overwrite` on the base run"


@dataclass
class Base:
    """The base run: its config, training data and selected test examples aligned with the score store."""

    run: RunDir
    cfg: Config
    scores: InfluenceScores
    train: pd.DataFrame  # aligned with the score columns
    selected: pd.DataFrame  # aligned with the score rows (with pred, confidence)
    dev: pd.DataFrame
    test_pool: pd.DataFrame
    task: dict[str, Any]
    identity: dict[str, Any]
    _total: np.ndarray | None = field(default=None, repr=False)

    def total(self) -> np.ndarray:
        """The summed TracIn score [selected test x train] (float64; cached)."""
        if self._total is None:
            self._total = self.scores.total()
        return self._total

    @property
    def languages(self) -> list[str]:
        return list(self.cfg.data.languages)

    def method_total(self, method: str) -> np.ndarray:
        """The summed score of influence method ``method`` [selected test x train], in the order of
        ``selected`` and ``train`` (float64). Its store must hold exactly the base run's examples."""
        if method == self.scores.method:
            return self.total()
        scores = load_scores(self.run, method=method)
        fix = f"rerun `lingtrace influence {self.run.root} --method {method} --overwrite`"
        train_cols = _positions(scores.train_uids, self.train[schema.UID].astype(str), f"{method} scores' training examples", fix)
        test_rows = _positions(scores.test_uids, self.selected[schema.UID].astype(str), f"{method} scores' test examples", fix)
        return scores.total()[np.ix_(test_rows, train_cols)]


def _positions(have: Sequence[str], want: Sequence[str], what: str, fix: str) -> np.ndarray:
    """Positions in ``have`` of every uid of ``want``; a one-line error when the two differ as sets."""
    index = pd.Index([str(u) for u in have])
    wanted = list(want)
    if len(index) != len(wanted) or index.has_duplicates or not index.isin(wanted).all():
        raise LingtraceError(f"the base run's {what} are not the examples of its tracin scores", fix)
    return index.get_indexer(wanted)


def methods_present(run: RunDir) -> list[str]:
    """The influence methods with a complete score store in ``run`` (``discover_stores``), tracin first,
    then by name: the order the experiments plan their retrainings in (an identical removal of two
    methods is retrained once, in the sub-run named after the first), so it is kept as it was."""
    stores, skipped = discover_stores(run.influence_root, comparison_reserved=False)
    for name, why in skipped.items():
        log.warning("the %s scores are left out of the experiments: %s", name, why)
    return sorted(stores, key=lambda m: (m != DEFAULT_METHOD, m))


def load_base(run: RunDir) -> Base:
    """The base run, checked to be complete through ``influence`` with its own config."""
    if not run.config_path.exists():
        raise LingtraceError(f"{run.root} is not a lingtrace run (no config.json)", f"run `lingtrace demo --out {run.root}` or `lingtrace run CONFIG --out {run.root}` first")
    cfg = run.load_config()
    for stage in BASE_STAGES:
        if not run.is_complete(stage):
            raise LingtraceError(
                f"the base run {run.root} is not complete through influence (stage {stage!r} has not been run)",
                f"run `lingtrace {stage} {run.root}`" + (" and the stages after it" if stage != "influence" else "") + " first",
            )
        run.check_stage(cfg, stage, overwrite=False)
    scores = load_scores(run)
    if not scores.epochs:
        raise LingtraceError(f"the influence scores of {run.root} hold no checkpoint", f"rerun `lingtrace influence {run.root} --overwrite`")
    fix = f"rerun `lingtrace prepare {run.root} --overwrite` and the stages after it"
    train = read_split(run, "train", fix)
    dev = read_split(run, "dev", fix)
    test_pool = read_split(run, "test", fix)
    selected = read_selection(run, f"rerun `lingtrace select {run.root} --overwrite`")
    identity = {
        stage: read_json(run.stage_marker(stage)).get("fingerprint") for stage in BASE_STAGES
    } | {"scores": scores.meta.get("fingerprint")}
    return Base(
        run=run,
        cfg=cfg,
        scores=scores,
        train=align_uids(train, scores.train_uids, "base run's training data", STALE_BASE_SCORES),
        selected=align_uids(selected, scores.test_uids, "base run's selected test examples", STALE_BASE_SCORES),
        dev=dev,
        test_pool=test_pool,
        task=read_task(run),
        identity=identity,
    )
