"""Shared machinery of the retraining experiments.

* the **base run** must be complete through ``influence``; its config, data, selection, final model and
  scores are read, never written;
* each experiment has a folder ``RUN/experiments/NAME/`` holding ``config.json`` (its settings and the
  identity of the base run it was made from: a rerun with other retraining settings, or on a changed
  base run, is refused unless ``overwrite``), its result tables, ``summary.json``, ``figures/`` and
  ``section.html``;
* every retraining is a **sub-run** ``RUN/experiments/NAME/runs/SUB/``: an ordinary run directory whose
  ``data/`` is derived from the base run (``data/changed.parquet`` and ``experiment.json`` record what was
  removed, excluded or added, and why) and whose config is the base run's, with at most the
  ``data.exclude_lang`` / ``data.extra_lang`` + ``data.extra_pct`` keys changed. The stages ``train``
  (and ``influence`` where the experiment needs scores) run through the pipeline with their usual
  markers, so a completed sub-run is skipped and an interrupted one resumes. Its ``select`` stage is
  replaced by an evaluation: the base run's selected test examples (never a new draw) with the sub-run's
  predictions.
* once a sub-run's stages are complete its **checkpoints are pruned** (``experiment.keep_checkpoints``
  false, the default): every ``checkpoints/epoch-K/`` is deleted, since the experiments read only the
  predictions, the selection and (zero-shot, imbalance) the scores. The manifest (key ``pruned``) and
  ``experiment.json`` (key ``checkpoints``) record it. A later step that needs the weights (other test
  examples to evaluate, scores not yet computed) retrains the sub-run first: training is seeded, so it
  gives the same model.
"""

from __future__ import annotations

import hashlib
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

from lingtrace.config import Config, ExperimentConfig, apply_overrides, validate
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import InfluenceScores, load_scores
from lingtrace.io import atomic_path, read_json, write_json, write_parquet
from lingtrace.run import STAGES, RunDir, fingerprint

log = logging.getLogger(__name__)

EXPERIMENTS_DIR = "experiments"
RUNS_DIR = "runs"
FIGURES_DIR = "figures"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
SECTION_FILE = "section.html"
#: in a sub-run: what was changed and why (written last: its presence means the sub-run's data is complete)
SUBRUN_RECORD = "experiment.json"
#: in a sub-run's data/: the removed / excluded / added training (and dev) examples
CHANGED_FILE = "changed.parquet"
#: k-selection: the base final model's predictions on the chosen test examples
BASE_PREDICTIONS = "base_predictions.parquet"
#: probability the model gives the gold label (added to the prediction tables)
P_LABEL = "p_label"
#: the correct-class margin: gold logit minus the logsumexp of the other logits (added to the prediction tables)
MARGIN = "margin"
#: the final model's logits, one list per example (added to the prediction tables)
LOGITS = "logits"

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


def read_frame(path: Path, fix: str) -> pd.DataFrame:
    if not path.exists():
        raise LingtraceError(f"missing {path}", fix)
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise LingtraceError(f"cannot read {path}: {e}", fix) from e


def _align(frame: pd.DataFrame, uids: Sequence[str], what: str) -> pd.DataFrame:
    indexed = frame.assign(**{schema.UID: frame[schema.UID].astype(str)}).set_index(schema.UID, drop=False)
    missing = [u for u in uids if u not in indexed.index]
    if missing or indexed.index.duplicated().any():
        raise LingtraceError(
            f"the base run's influence scores do not match its {what} (e.g. {missing[0] if missing else 'a duplicate uid'!r})",
            "rerun `lingtrace influence RUN --overwrite` on the base run",
        )
    return indexed.loc[list(uids)].reset_index(drop=True)


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
    train = read_frame(run.split_path("train"), fix)
    dev = read_frame(run.split_path("dev"), fix)
    test_pool = read_frame(run.split_path("test"), fix)
    selected = read_frame(run.selection_path, f"rerun `lingtrace select {run.root} --overwrite`")
    identity = {
        stage: read_json(run.stage_marker(stage)).get("fingerprint") for stage in BASE_STAGES
    } | {"scores": scores.meta.get("fingerprint")}
    return Base(
        run=run,
        cfg=cfg,
        scores=scores,
        train=_align(train, scores.train_uids, "training data"),
        selected=_align(selected, scores.test_uids, "selected test examples"),
        dev=dev,
        test_pool=test_pool,
        task=read_json(run.task_path),
        identity=identity,
    )


# ---------------------------------------------------------------- config of an experiment


def experiment_dir(run: RunDir, name: str) -> Path:
    return run.root / EXPERIMENTS_DIR / name


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
    saved = experiment_dir(run, name) / CONFIG_FILE
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
        made = any((exp_dir / RUNS_DIR).glob(f"*/{SUBRUN_RECORD}"))  # nothing made yet: nothing to protect
        if not same:
            if made and not overwrite:
                what = "the base run changed" if old.get("retraining") == retraining else _diff(old.get("retraining", {}), retraining)
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


def _diff(a: dict, b: dict) -> str:
    out = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(out[:3]) + ("; ..." if len(out) > 3 else "")


# ---------------------------------------------------------------- sub-runs


def frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of an example frame (its example columns, in order)."""
    cols = [c for c in schema.EXAMPLE_COLUMNS if c in frame.columns]
    h = pd.util.hash_pandas_object(frame[cols].astype(str), index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(cols).encode()).hexdigest()[:16]


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
        return fingerprint({"selection": frame_hash(self.test_examples), "eval": frame_hash(self.eval_frame)})

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
    record_path = sub.root / SUBRUN_RECORD
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
    cfg = spec.cfg
    if spec.train is not None:
        sub.save_config(cfg)
        for split, frame in (("train", spec.train), ("dev", spec.dev), ("test", spec.test)):
            write_parquet(sub.split_path(split), frame[schema.EXAMPLE_COLUMNS].reset_index(drop=True))
        write_json(sub.task_path, base.task)
        sub.mark_complete(cfg, "prepare", {"derived_from": str(base.run.root), "change": spec.change, "reason": spec.reason})
        changed = spec.changed
    else:
        from lingtrace.pipeline import run_stages

        run_stages(sub, cfg, ["prepare"])
        changed = spec.verify(sub)
    write_parquet(sub.data_dir / CHANGED_FILE, changed.reset_index(drop=True))
    write_json(
        record_path,
        {
            "experiment_sub_run": spec.name,
            "base_run": str(base.run.root.resolve()),
            "change": spec.change,
            "reason": spec.reason,
            "n_changed": int(len(changed)),
            "n_train": int(len(pd.read_parquet(sub.split_path("train")))),
            "same_as_base": "model, training, selection and influence config and seed; only the training data differs",
            **spec.info,
            "identity": ident,
            "timings": {},
        },
    )
    return sub


def correct_class_margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per example: the gold label's logit minus the logsumexp of the other logits (float64).

    Equals log p(gold) - log(1 - p(gold)) under the softmax, without its rounding for confident models."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, labels] = -np.inf
    return z[rows, labels] - logsumexp(others, axis=1)


def final_logits(run: RunDir, cfg: Config, frame: pd.DataFrame) -> np.ndarray:
    """The run's final model's class scores on ``frame`` [n, num_labels] (float32): a classifier's logits, a
    causal LM's total log-likelihoods of the verbalisations; batched like training's predictions."""
    from lingtrace.models.loading import load_checkpoint
    from lingtrace.selection import final_checkpoint
    from lingtrace.training.trainer import class_scores
    from lingtrace.utils import resolve_device

    device = resolve_device(cfg.train.device)
    model, tokenizer = load_checkpoint(run.checkpoint_dir(final_checkpoint(run)))
    model.to(device)
    return class_scores(model, tokenizer, frame.reset_index(drop=True), cfg, device, desc="evaluate")


def predict_frame(run: RunDir, cfg: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the run's final model's ``pred``, ``confidence``, ``p_label`` (probability of the gold
    label), ``margin`` (``correct_class_margin``) and ``logits``."""
    from scipy.special import softmax

    logits = final_logits(run, cfg, frame)
    probs = softmax(logits.astype(np.float64), axis=1)
    out = frame.reset_index(drop=True).copy()
    labels = out[schema.LABEL].to_numpy(dtype=np.int64)
    out[schema.PRED] = probs.argmax(1).astype(np.int64)
    out[schema.CONFIDENCE] = probs.max(1)
    out[P_LABEL] = probs[np.arange(len(out)), labels]
    out[MARGIN] = correct_class_margin(logits, labels)
    out[LOGITS] = list(logits)
    return out


def keep_checkpoints(cfg: Config) -> bool:
    """``experiment.keep_checkpoints``: keep the sub-runs' checkpoints instead of pruning them (default false)."""
    return bool(cfg.experiment.keep_checkpoints)


#: what a pruned sub-run still holds
KEPT_AFTER_PRUNING = [
    "config.json",
    "data/",
    "checkpoints/manifest.json",
    "selection/test.parquet",
    "selection/predictions.parquet",
    "influence/ (when the experiment scores the sub-run)",
    "stages/",
    SUBRUN_RECORD,
]


def execute(sub: RunDir, spec: SubRunSpec) -> dict[str, float]:
    """Train the sub-run, evaluate it on the base selection, compute its influence scores if asked, and
    prune its checkpoints unless ``experiment.keep_checkpoints``.

    Each step is skipped when complete (stage markers); returns the seconds of the steps run now.
    """
    from lingtrace.pipeline import run_stages
    from lingtrace.training.checkpoints import prune_checkpoints, pruned_record

    cfg = spec.cfg
    timings: dict[str, float] = {}
    eval_id = spec.eval_identity()
    stale_eval = sub.is_complete("select") and read_json(sub.stage_marker("select")).get("info", {}).get("eval_id") != eval_id
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
        preds = predict_frame(sub, cfg, spec.eval_frame[schema.EXAMPLE_COLUMNS])
        write_parquet(sub.selection_path.parent / "predictions.parquet", preds)
        by_uid = preds.set_index(schema.UID)
        chosen = spec.test_examples[schema.EXAMPLE_COLUMNS].reset_index(drop=True).copy()
        for col in (schema.PRED, schema.CONFIDENCE, P_LABEL, MARGIN):
            chosen[col] = by_uid.loc[chosen[schema.UID], col].to_numpy()
        write_parquet(sub.selection_path, chosen)
        sub.mark_complete(
            cfg, "select", {"selection": "the base run's selected test examples (experiment sub-run)", "n": len(chosen), "eval_id": eval_id}
        )
        timings["evaluate_seconds"] = time.perf_counter() - t0
    if spec.influence:
        was_scored = sub.is_complete("influence")
        t0 = time.perf_counter()
        run_stages(sub, cfg, ["influence"])
        if not was_scored:
            timings["influence_seconds"] = time.perf_counter() - t0
    if timings:
        old = read_json(sub.root / SUBRUN_RECORD).get("timings", {})
        _update_record(sub, timings={**old, **{k: round(v, 2) for k, v in timings.items()}})
    if not keep_checkpoints(cfg) and (pruned_record(sub) is None or any(sub.checkpoints_dir.glob("epoch-*"))):
        kept = [k for k in KEPT_AFTER_PRUNING if spec.influence or not k.startswith("influence/")]
        pruned = prune_checkpoints(sub, by=f"experiment {sub.root.parent.parent.name}", kept=kept)
        _update_record(sub, checkpoints={"pruned": True, **{k: pruned[k] for k in ("removed", "bytes_freed", "kept")}})
    return timings


def _update_record(sub: RunDir, **changes: Any) -> None:
    """Set (or, given ``None``, remove) keys of the sub-run's ``experiment.json``."""
    path = sub.root / SUBRUN_RECORD
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

    runs_dir = exp_dir / RUNS_DIR
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
    return {name: read_json(sub.root / SUBRUN_RECORD).get("timings", {}) for name, sub in subs.items()}


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


def read_predictions(sub: RunDir) -> pd.DataFrame:
    return pd.read_parquet(sub.selection_path.parent / "predictions.parquet")


def read_selection(sub: RunDir) -> pd.DataFrame:
    return pd.read_parquet(sub.selection_path)


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
