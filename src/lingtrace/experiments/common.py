"""Shared machinery of the retraining experiments.

* the **base run** must be complete through ``influence``; its config, data, selection, final model and
  scores are read, never written;
* each experiment has a folder ``RUN/experiments/NAME/`` holding ``config.json`` (its settings and the
  identity of the base run it was made from: a rerun with other retraining settings, or on a changed
  base run, is refused unless ``overwrite``), its result tables, ``summary.json``, ``figures/`` and
  ``section.html``;
* every retraining is a **sub-run** ``RUN/experiments/NAME/runs/SUB/``: an ordinary run directory whose
  data is derived from the base run (``data/changed.parquet`` and ``experiment.json`` record what was
  removed, excluded or added, and why) and whose config is the base run's, with at most the
  ``data.exclude_lang`` / ``data.extra_lang`` + ``data.extra_pct`` keys changed. A sub-run is a plan
  entry (``SubRunSpec``: a data change and the stages to run); the experiment writes its inputs into
  ``given/`` (the derived data; the base run's selected test examples and the examples to predict) and
  runs ``prepare``, ``train``, ``select`` (which evaluates the final model on the given test examples,
  never a new draw: ``lingtrace.stages.evaluate``) and, where scores are needed, ``influence`` through
  the pipeline, which alone writes their markers; so a completed sub-run is skipped and an interrupted
  one resumes.
* once a sub-run's stages are complete its **checkpoints are pruned** (``experiment.keep_checkpoints``
  false, the default): every ``checkpoints/epoch-K/`` is deleted, since the experiments read only the
  predictions, the selection and (zero-shot, imbalance) the scores. The manifest (key ``pruned``) and
  ``experiment.json`` (key ``checkpoints``) record it. A later step that needs the weights (other test
  examples to evaluate, scores not yet computed) retrains the sub-run first: training is seeded, so it
  gives the same model.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lingtrace import evaluation
from lingtrace.config import Config, ExperimentConfig, apply_overrides, validate
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import InfluenceScores, load_scores
from lingtrace.io import atomic_path, read_json, write_json, write_parquet
from lingtrace.run import (
    EXPERIMENT_CONFIG_FILE,
    EXPERIMENT_FIGURES_DIR,
    EXPERIMENT_SECTION_FILE,
    EXPERIMENT_SUMMARY_FILE,
    STAGES,
    SUBRUN_RECORD,
    RunDir,
    align_uids,
    describe_differences,
    fingerprint,
    frame_hash,
    given_tests_identity,
    read_given_test_examples,
    read_predictions,  # noqa: F401 - re-exported: the experiments read their sub-runs through common
    read_selection,
    read_split,
    read_task,
    write_given_data,
    write_given_test_examples,
)

log = logging.getLogger(__name__)

# the experiment folder's file names (defined, with every other run-directory name, in lingtrace.run)
FIGURES_DIR = EXPERIMENT_FIGURES_DIR
CONFIG_FILE = EXPERIMENT_CONFIG_FILE
SUMMARY_FILE = EXPERIMENT_SUMMARY_FILE
SECTION_FILE = EXPERIMENT_SECTION_FILE
#: k-selection: the base final model's predictions on the chosen test examples
BASE_PREDICTIONS = "base_predictions.parquet"

#: the prediction tables' columns (defined with the predictions, in lingtrace.evaluation)
P_LABEL, MARGIN, LOGITS = evaluation.P_LABEL, evaluation.MARGIN, evaluation.LOGITS
predict_frame = evaluation.predict_frame
correct_class_margin = evaluation.correct_class_margin

#: base stages that must be complete before any experiment
BASE_STAGES = ("prepare", "train", "select", "influence")


# ---------------------------------------------------------------- the base run


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
    """The influence methods with a complete score store in ``run`` (tracin first, then by name):
    discovered from ``RUN/influence/``, so a method added later is found without a change here."""
    from lingtrace.influence.methods import DEFAULT_METHOD
    from lingtrace.influence.store.meta import has_store, read_meta

    found = []
    root = run.influence_root
    candidates = [(DEFAULT_METHOD, run.influence_store(DEFAULT_METHOD))]
    if root.is_dir():
        candidates += [(d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and d.name != DEFAULT_METHOD]
    for name, directory in candidates:
        if not has_store(directory) or name in found:
            continue
        if read_meta(directory).complete:
            found.append(name)
        else:
            log.warning("the %s scores in %s are incomplete: left out of the experiments (finish them with `lingtrace influence RUN --method %s`)", name, directory, name)
    return found


#: the fix when a sub-run's scores do not match its examples
STALE_SUB_RUN = "pass --overwrite to redo the experiment's retrainings"
#: the fix when the base run's scores do not match its examples
STALE_BASE_SCORES = "rerun `lingtrace influence RUN --overwrite` on the base run"


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


# ---------------------------------------------------------------- config of an experiment


def resolve_config(run: RunDir, name: str, overrides: Sequence[str]) -> Config:
    """The base run's config with the experiment section of an earlier invocation (if any) and ``overrides``.

    Only ``experiment.*`` keys may be overridden: every retraining uses the base run's data, model,
    training and influence settings.
    """
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("experiment."):
            raise LingtraceError(
                f"`lingtrace experiment` only takes experiment.* settings, got {key!r}",
                "retrainings use the base run's own config; change it in a new base run",
            )
    cfg = run.load_config()
    saved = run.experiment_dir(name) / CONFIG_FILE
    d = cfg.to_dict()
    if saved.exists():
        d["experiment"] = read_json(saved).get("experiment_section", d["experiment"])
    cfg = apply_overrides(Config.from_dict(d), list(overrides))
    validate(cfg)
    return cfg


def retraining_identity(base: Base) -> dict[str, Any]:
    """The part of the base run's identity that retrainings scored from its stores depend on: its data,
    training and test selection, not its scores (so computing another method's scores, which rewrites
    the influence marker, does not make such an experiment's retrainings stale)."""
    return {stage: base.identity[stage] for stage in ("prepare", "train", "select")}


def check_experiment_config(
    exp_dir: Path,
    name: str,
    retraining: dict[str, Any],
    results: dict[str, Any],
    base: Base,
    section: ExperimentConfig,
    overwrite: bool,
    identity: dict[str, Any] | None = None,
) -> None:
    """Refuse a rerun whose retraining settings (or base run) differ, unless ``overwrite``; then record the settings.

    ``identity`` is what of the base run the retrainings depend on (default: all of ``base.identity``,
    its scores included). Settings that only change how saved results are summarised (``results``)
    never need ``overwrite``, and neither does a change before any retraining was made (e.g. after a
    first attempt failed). On ``overwrite`` the previous result files are removed first, so no stale
    section is reported.
    """
    path = exp_dir / CONFIG_FILE
    identity = base.identity if identity is None else identity
    new = {
        "experiment": name,
        "retraining": retraining,
        "results": results,
        "base": identity,
        "experiment_section": _to_dict(section),
    }
    if path.exists():
        old = read_json(path)
        same = old.get("retraining") == retraining and old.get("base") == identity
        made = any(base.run.sub_runs_dir(name).glob(f"*/{SUBRUN_RECORD}"))  # nothing made yet: nothing to protect
        if not same:
            if made and not overwrite:
                what = "the base run changed" if old.get("retraining") == retraining else describe_differences(old.get("retraining", {}), retraining)
                raise LingtraceError(
                    f"experiment {name!r} in {exp_dir} was made with other settings ({what})",
                    "pass --overwrite to redo it (retrainings whose training set is unchanged are reused)",
                )
            for stale in (SUMMARY_FILE, SECTION_FILE, BASE_PREDICTIONS):
                (exp_dir / stale).unlink(missing_ok=True)
    write_json(path, new)


def _to_dict(section: ExperimentConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(section)


# ---------------------------------------------------------------- sub-runs


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
    from lingtrace.training.checkpoints import prune_checkpoints, pruned_record

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


# ---------------------------------------------------------------- outputs


def write_table(exp_dir: Path, name: str, frame: pd.DataFrame, columns: dict[str, str]) -> str:
    """Write ``name.parquet`` with exactly the documented ``columns`` (in order)."""
    if list(frame.columns) != list(columns):
        raise AssertionError(f"table {name}: columns {list(frame.columns)} differ from the documented {list(columns)}")
    write_parquet(exp_dir / f"{name}.parquet", frame.reset_index(drop=True))
    return f"{name}.parquet"


def write_figure(exp_dir: Path, name: str, fig) -> bytes:
    from lingtrace.report.figures import to_png

    png = to_png(fig)
    with atomic_path(exp_dir / FIGURES_DIR / f"{name}.png", suffix=".png") as tmp:
        tmp.write_bytes(png)
    return png


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_summary(exp_dir: Path, summary: dict[str, Any]) -> None:
    path = exp_dir / SUMMARY_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_result(exp_dir: Path, module: Any, cfg: Config, base: Base, section: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Write an experiment's ``section.html`` and ``summary.json`` (the standard keys first, then ``fields``).

    ``module`` is the experiment's module (its ``NAME``, ``TITLE``, ``REPRODUCES``, ``retraining_settings``
    and ``result_settings``); ``section`` holds ``readings``, ``cost`` (the cost text), ``notes`` and ``body``
    (HTML). Returns the summary."""
    from lingtrace.experiments import html

    fragment = html.section(module.NAME, module.TITLE, module.REPRODUCES, section["readings"], section["cost"], section["notes"], section["body"])
    write_text(exp_dir / SECTION_FILE, fragment)
    summary = {
        "experiment": module.NAME,
        "title": module.TITLE,
        "reproduces": module.REPRODUCES,
        "complete": True,
        "settings": {**module.retraining_settings(cfg), **module.result_settings(cfg)},
        "base_run": str(base.run.root),
        **fields,
        "section": SECTION_FILE,
        "readings": list(section["readings"]),
        "notes": list(section["notes"]),
    }
    write_summary(exp_dir, summary)
    return summary
