"""The life cycle of an experiment's retrainings: the sub-runs ``RUN/experiments/NAME/runs/SUB/``.

* every retraining is a **sub-run**: an ordinary run directory whose data is derived from the base run
  (``data/changed.parquet`` and ``experiment.json`` record what was removed, excluded or added, and why)
  and whose config is the base run's, with at most the ``data.exclude_lang`` / ``data.extra_lang`` +
  ``data.extra_pct`` keys changed. A sub-run is a plan entry (``SubRunSpec``: a data change and the
  stages to run); the experiment writes its inputs into ``given/`` (the derived data; the base run's
  selected test examples and the examples to predict) and runs ``prepare``, ``train``, ``select``
  (which evaluates the final model on the given test examples, never a new draw:
  ``lingtrace.stages.evaluate``) and, where scores are needed, ``influence`` through the pipeline,
  which alone writes their markers; so a completed sub-run is skipped and an interrupted one resumes.
* once a sub-run's stages are complete its **checkpoints are pruned** (``experiment.keep_checkpoints``
  false, the default): every ``checkpoints/epoch-K/`` is deleted, since the experiments read only the
  predictions, the selection and (zero-shot, imbalance) the scores. The manifest (key ``pruned``) and
  ``experiment.json`` (key ``checkpoints``) record it. A later step that needs the weights (other test
  examples to evaluate, scores not yet computed) retrains the sub-run first: training is seeded, so it
  gives the same model.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.experiments.base import Base
from lingtrace.io import read_json, write_json, write_parquet
from lingtrace.run import (
    STAGES,
    RunDir,
    fingerprint,
    frame_hash,
    given_tests_identity,
    read_given_test_examples,
    read_split,
    write_given_data,
    write_given_test_examples,
)

log = logging.getLogger(__name__)

#: the fix when a sub-run's scores do not match its examples
STALE_SUB_RUN = "pass --overwrite to redo the experiment's retrainings"


@dataclass
class SubRunSpec:
    """One retraining: its name, config, derived data (or ``None`` for data made by ``prepare``), and record."""

    name: str
    cfg: Config
    change: str  # removed | excluded | added
    reason: str
    test_examples: pd.DataFrame  # the base run's selected test examples it is evaluated (and scored) on
    eval_frame: pd.DataFrame  # examples whose predictions are saved (the selection, or the whole test pool)
    influence: bool
    train: pd.DataFrame | None = None
    dev: pd.DataFrame | None = None
    test: pd.DataFrame | None = None
    changed: pd.DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)
    verify: Any = None  # callable(sub RunDir) -> changed frame, for data made by prepare

    @classmethod
    def kept_subset(cls, base: Base, cfg: Config, train: pd.DataFrame, name: str, keep: np.ndarray, reason: str, info: dict[str, Any]) -> SubRunSpec:
        """The retraining on the rows of the base run's training split ``train`` where ``keep`` is true (the
        others removed: ``changed``), with the base dev and test data, evaluated on the selected test
        examples only and not scored (the LDS subsets, the languages experiment's mixtures)."""
        removed = train[~keep][schema.EXAMPLE_COLUMNS].reset_index(drop=True)
        return cls(
            name=name,
            cfg=cfg,
            change="removed",
            reason=reason,
            test_examples=base.selected,
            eval_frame=base.selected,
            influence=False,
            train=train[keep].reset_index(drop=True),
            dev=base.dev,
            test=base.test_pool,
            changed=removed.assign(split="train", change="removed", reason=reason),
            info=info,
        )

    def eval_identity(self) -> str:
        """What the evaluation (and influence) depends on besides the training: the test examples."""
        return given_tests_identity(self.test_examples, self.eval_frame)

    def identity(self, base: Base, stage: str | None = None) -> str:
        """What the retraining depends on: the config sections of the last stage it runs (``train``, or
        ``influence`` when the sub-run is scored) and the training/dev/test data. So computing another
        method's scores on the base run, which changes its influence section, leaves a sub-run that is
        not scored valid. ``stage`` overrides the stage (``influence``: the identity recorded before)."""
        stage = stage or ("influence" if self.influence else "train")
        parts: dict[str, Any] = {"config": {s: self.cfg.to_dict()[s] for s in STAGES[stage]}}
        if self.train is not None:
            parts.update(train=frame_hash(self.train), dev=frame_hash(self.dev), test=frame_hash(self.test))
        else:  # made by prepare from the base run's data config: the base sample must be the same
            parts.update(base_train=frame_hash(base.train.sort_values(schema.UID)), base_dev=frame_hash(base.dev), base_test=frame_hash(base.test_pool))
        return fingerprint(parts)


def materialize(spec: SubRunSpec, base: Base, runs_dir: Path, overwrite: bool) -> RunDir:
    """Create the sub-run's directory and data (or reuse it when it holds the same training set)."""
    sub = RunDir(runs_dir / spec.name)
    ident = spec.identity(base)
    record_path = sub.sub_run_record
    if record_path.exists():
        record = read_json(record_path)
        if record.get("identity") == ident:
            return sub
        if record.get("identity") == spec.identity(base, stage="influence"):  # recorded with every section before
            _update_record(sub, identity=ident)
            return sub
        if not overwrite:
            raise LingtraceError(
                f"sub-run {sub.root} holds a retraining on another training set",
                "pass --overwrite to redo it",
            )
        log.info("%s: training set changed, removing the old sub-run", spec.name)
        shutil.rmtree(sub.root)
    elif sub.root.exists():  # interrupted while being created
        shutil.rmtree(sub.root)
    sub.root.mkdir(parents=True, exist_ok=True)
    from lingtrace.pipeline import run_stages

    if spec.train is not None:  # derived data: given to the sub-run's prepare
        write_given_data(sub, {"train": spec.train, "dev": spec.dev, "test": spec.test}, base.task)
        run_stages(sub, spec.cfg, ["prepare"])
        changed = spec.changed
    else:
        run_stages(sub, spec.cfg, ["prepare"])
        changed = spec.verify(sub)
    write_parquet(sub.changed_path, changed.reset_index(drop=True))
    write_json(
        record_path,
        {
            "experiment_sub_run": spec.name,
            "base_run": str(base.run.root.resolve()),
            "change": spec.change,
            "reason": spec.reason,
            "n_changed": int(len(changed)),
            "n_train": int(len(read_split(sub, "train"))),
            "same_as_base": "model, training, selection and influence config and seed; only the training data differs",
            **spec.info,
            "identity": ident,
            "timings": {},
        },
    )
    return sub


def keep_checkpoints(cfg: Config) -> bool:
    """``experiment.keep_checkpoints``: keep the sub-runs' checkpoints instead of pruning them (default false)."""
    return bool(cfg.experiment.keep_checkpoints)


def _kept_after_pruning() -> list[str]:
    layout = RunDir(".")  # paths relative to the sub-run
    return [
        str(layout.config_path),
        f"{layout.data_dir}/",
        str(layout.manifest_path),
        str(layout.selection_path),
        str(layout.predictions_path),
        f"{layout.influence_root}/ (when the experiment scores the sub-run)",
        f"{layout.stage_marker('x').parent}/",
        str(layout.sub_run_record),
        f"{layout.given_dir}/",
    ]


#: what a pruned sub-run still holds
KEPT_AFTER_PRUNING = _kept_after_pruning()


def _give_test_examples(sub: RunDir, spec: SubRunSpec) -> bool:
    """Write the sub-run's given test examples (``RUN/given/``) when they are not those of ``spec``; True
    when its ``select`` was made on other ones (so it, and the influence scores, are stale)."""
    ident = spec.eval_identity()
    if sub.has_given_test_examples() and given_tests_identity(*read_given_test_examples(sub)) == ident:
        return False
    recorded = read_json(sub.stage_marker("select")).get("info", {}).get("eval_id") if sub.is_complete("select") else None
    write_given_test_examples(sub, spec.test_examples, spec.eval_frame)
    return sub.is_complete("select") and recorded != ident


def execute(sub: RunDir, spec: SubRunSpec) -> dict[str, float]:
    """Run the sub-run's stages: train it, evaluate it on the base selection (its ``select`` on the given
    test examples), compute its influence scores if asked, and prune its checkpoints unless
    ``experiment.keep_checkpoints``.

    Each stage is skipped when complete (stage markers); returns the seconds of the steps run now.
    """
    from lingtrace.pipeline import run_stages
    from lingtrace.run import prune_checkpoints, pruned_record

    cfg = spec.cfg
    timings: dict[str, float] = {}
    stale_eval = _give_test_examples(sub, spec)
    needs_weights = stale_eval or not sub.is_complete("select") or (spec.influence and not sub.is_complete("influence"))
    if needs_weights and pruned_record(sub) is not None:
        log.info("%s: its checkpoints were pruned and are needed again: retraining", spec.name)
        shutil.rmtree(sub.checkpoints_dir)
        sub.invalidate_after("train")
        shutil.rmtree(sub.influence_dir, ignore_errors=True)
        _update_record(sub, checkpoints=None)
        stale_eval = False
    was_trained = sub.is_complete("train")
    t0 = time.perf_counter()
    run_stages(sub, cfg, ["train"])  # skipped when complete; resumes an interrupted training
    if not was_trained:
        timings["train_seconds"] = time.perf_counter() - t0
    if stale_eval:
        # other test examples: evaluate (and score) again, keep the training
        sub.invalidate_after("select")
        shutil.rmtree(sub.influence_dir, ignore_errors=True)
    if not sub.is_complete("select"):
        t0 = time.perf_counter()
        run_stages(sub, cfg, ["select"])  # on the given test examples (stages.evaluate)
        timings["evaluate_seconds"] = time.perf_counter() - t0
    if spec.influence:
        was_scored = sub.is_complete("influence")
        t0 = time.perf_counter()
        run_stages(sub, cfg, ["influence"])
        if not was_scored:
            timings["influence_seconds"] = time.perf_counter() - t0
    if timings:
        old = read_json(sub.sub_run_record).get("timings", {})
        _update_record(sub, timings={**old, **{k: round(v, 2) for k, v in timings.items()}})
    if not keep_checkpoints(cfg) and (pruned_record(sub) is None or any(sub.checkpoints_dir.glob("epoch-*"))):
        kept = [k for k in KEPT_AFTER_PRUNING if spec.influence or not k.startswith(f"{RunDir('.').influence_root}/")]
        pruned = prune_checkpoints(sub, by=f"experiment {sub.root.parent.parent.name}", kept=kept)
        _update_record(sub, checkpoints={"pruned": True, **{k: pruned[k] for k in ("removed", "bytes_freed", "kept")}})
    return timings


def _update_record(sub: RunDir, **changes: Any) -> None:
    """Set (or, given ``None``, remove) keys of the sub-run's ``experiment.json``."""
    path = sub.sub_run_record
    record = read_json(path)
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    write_json(path, record)


def run_all(specs: list[SubRunSpec], base: Base, exp_dir: Path, overwrite: bool, desc: str) -> dict[str, RunDir]:
    """Materialise and execute every sub-run in order (completed ones are skipped)."""
    from lingtrace.utils import progress

    runs_dir = base.run.sub_runs_dir(exp_dir.name)
    subs: dict[str, RunDir] = {}
    bar = progress(specs, desc=desc, unit="retraining")
    for spec in bar:
        bar.set_postfix_str(spec.name)
        sub = materialize(spec, base, runs_dir, overwrite)
        took = execute(sub, spec)
        if took:
            log.info("%s: %s", spec.name, ", ".join(f"{k.replace('_seconds', '')} {v:.0f} s" for k, v in took.items()))
        else:
            log.info("%s: complete, skipped", spec.name)
        subs[spec.name] = sub
    bar.close()
    return subs


def sub_timings(subs: dict[str, RunDir]) -> dict[str, dict[str, float]]:
    return {name: read_json(sub.sub_run_record).get("timings", {}) for name, sub in subs.items()}


def cost_summary(subs: dict[str, RunDir], n_influence: int) -> dict[str, Any]:
    t = sub_timings(subs)
    train = [v["train_seconds"] for v in t.values() if "train_seconds" in v]
    infl = [v["influence_seconds"] for v in t.values() if "influence_seconds" in v]
    return {
        "retrainings": len(subs),
        "influence_runs": n_influence,
        "train_seconds_total": round(float(sum(train)), 1),
        "train_seconds_mean": round(float(np.mean(train)), 1) if train else None,
        "influence_seconds_total": round(float(sum(infl)), 1),
        "influence_seconds_mean": round(float(np.mean(infl)), 1) if infl else None,
        "per_sub_run": t,
    }
