"""The run directory: every path, the typed readers and writers of the run's artifacts, the resolved
config, and stage completion. No other module spells a run-directory file name.

Layout (documented in the README)::

    RUN/config.json                      resolved configuration of the run
    RUN/data/{train,dev,test}.parquet    examples: uid, lang, translation_id, text_a, text_b, label
    RUN/data/task.json                   task name, label names, parallel flag
    RUN/checkpoints/epoch-K/             save_pretrained model + tokenizer after epoch K
    RUN/checkpoints/manifest.json        per epoch: path, learning rates, train loss, dev accuracy
    RUN/selection/test.parquet           selected test examples with the final model's prediction
    RUN/selection/predictions.parquet    the final model's prediction on every test example
    RUN/influence/METHOD/                score store of each influence method (tracin's at RUN/influence/
                                         itself in runs made before several methods existed)
    RUN/analysis/                        analysis tables
    RUN/report/index.html                the report
    RUN/experiments/NAME/                an experiment: config.json, summary.json, section.html,
                                         figures/, its tables and sub-runs in runs/SUB/ (each an
                                         ordinary run directory with experiment.json, data/changed.parquet)
    RUN/stages/<stage>.json              completion marker: the config section the stage used

A stage is complete when its marker exists; the marker holds the configuration it was made with.
Running a stage again with a different configuration is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.config import DEFAULT_METHOD, STAGE_SECTIONS, Config, rerun_keys, validate
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.io import disk_bytes, read_json, write_json, write_parquet

log = logging.getLogger(__name__)

#: pipeline order; each stage depends on the configuration sections listed (``config.stages``)
STAGES: dict[str, tuple[str, ...]] = dict(STAGE_SECTIONS)


#: a final model whose dev accuracy is at most the majority-class baseline plus this (absolute) did not learn
MAJORITY_MARGIN = 0.01


def majority_class_warning(manifest: dict[str, Any] | None) -> str | None:
    """A plain warning when the final model is no better than always predicting the most frequent
    label (dev accuracy <= ``dev_majority_baseline`` + ``MAJORITY_MARGIN``), else None."""
    if not manifest or not manifest.get("epochs"):
        return None
    base = (manifest.get("dev_majority_baseline") or {}).get("all")
    final = manifest.get("final_epoch") or manifest["epochs"][-1]["epoch"]
    record = next((e for e in manifest["epochs"] if e["epoch"] == final), None)
    if base is None or record is None or record.get("dev_accuracy") is None:
        return None
    acc = float(record["dev_accuracy"])
    if acc > float(base) + MAJORITY_MARGIN:
        return None
    return (
        f"the final model (epoch {final}) did not learn the task: its dev accuracy {acc:.3f} is no better than "
        f"the majority-class baseline {float(base):.3f} (always predicting the most frequent label), so its "
        "'correct' test predictions and their influence scores describe a constant predictor; train longer, "
        "change train.lr or check the labels before reading the analyses"
    )


def describe_config(d: dict[str, Any]) -> str:
    """A config (as a dict) in a few words: task, model, languages."""
    data, model = d.get("data", {}), d.get("model", {})
    return f"task {data.get('task')}, model {model.get('name')}, languages {', '.join(map(str, data.get('languages', [])))}"


#: config keys whose change reruns a completed stage instead of being refused (the stage reuses what holds)
RERUN_KEYS = {f"influence.{key}" for key in rerun_keys()}


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- file names
SPLITS = ("train", "dev", "test")
CONFIG_FILE = "config.json"
DATA_DIR = "data"
TASK_FILE = "task.json"
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_FILE = "manifest.json"
#: the trainer's resumable state in ``RUN/checkpoints/`` (safetensors + JSON; ``training/state.py``), and
#: the pickle earlier versions wrote (never loaded, only removed)
TRAINER_STATE_FILE = "trainer_state.safetensors"
LEGACY_TRAINER_STATE_FILE = "trainer_state.pt"
#: the manifest key recording that a run's checkpoints were deleted
PRUNED = "pruned"
SELECTION_DIR = "selection"
#: the selected test examples (with the final model's prediction)
SELECTION_FILE = "test.parquet"
#: the final model's predictions on every test example (``select``), or on the given examples (``evaluate``)
PREDICTIONS = "predictions.parquet"
INFLUENCE_DIR = "influence"
#: a score store's description; a directory holding it is a store (``influence/store/meta.py`` reads and writes it)
STORE_META_FILE = "meta.json"
ANALYSIS_DIR = "analysis"
REPORT_DIR = "report"
REPORT_PAGE = "index.html"
REPORT_FIGURES_DIR = "figures"
STAGES_DIR = "stages"
#: experiments: ``RUN/experiments/NAME/`` with these files, and its sub-runs in ``runs/SUB/``
EXPERIMENTS_DIR = "experiments"
EXPERIMENT_RUNS_DIR = "runs"
EXPERIMENT_FIGURES_DIR = "figures"
EXPERIMENT_CONFIG_FILE = "config.json"
EXPERIMENT_SUMMARY_FILE = "summary.json"
EXPERIMENT_SECTION_FILE = "section.html"
#: in a sub-run: what was changed and why (written last: its presence means the sub-run's data is complete)
SUBRUN_RECORD = "experiment.json"
#: in a sub-run's data/: the removed / excluded / added training (and dev) examples
CHANGED_FILE = "changed.parquet"
#: a sub-run's inputs, written by the experiment that made it: ``given/{train,dev,test}.parquet`` and
#: ``given/task.json`` (the data ``prepare`` takes instead of sampling), ``given/test_examples.parquet``
#: and ``given/evaluate.parquet`` (the test examples ``select`` takes instead of drawing, and the
#: examples it predicts)
GIVEN_DIR = "given"
GIVEN_TEST_EXAMPLES = "test_examples.parquet"
GIVEN_EVALUATE = "evaluate.parquet"
#: a checkpoint directory's name prefix: ``RUN/checkpoints/epoch-K/`` (``checkpoint_name``)
CHECKPOINT_PREFIX = "epoch-"
#: the top-level entries the pipeline makes in a run directory (``lingtrace import`` refuses a target
#: directory holding anything else)
RUN_ENTRIES = (
    CONFIG_FILE, DATA_DIR, CHECKPOINTS_DIR, STAGES_DIR, SELECTION_DIR, INFLUENCE_DIR, ANALYSIS_DIR, REPORT_DIR, EXPERIMENTS_DIR,
)


def checkpoint_name(epoch: int) -> str:
    """The name of epoch ``epoch``'s checkpoint directory in ``RUN/checkpoints/`` (the manifest's ``path``)."""
    return f"{CHECKPOINT_PREFIX}{epoch}"


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def holding_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        """The run directory a checkpoint directory ``RUN/checkpoints/epoch-K`` belongs to (by the layout above;
        for a checkpoint outside a run, a directory that holds no run files)."""
        return cls(Path(checkpoint).parent.parent)

    # paths ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def data_dir(self) -> Path:
        return self.root / DATA_DIR

    def split_path(self, split: str) -> Path:
        return self.data_dir / f"{split}.parquet"

    @property
    def task_path(self) -> Path:
        return self.data_dir / TASK_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def manifest_path(self) -> Path:
        return self.checkpoints_dir / MANIFEST_FILE

    def checkpoint_dir(self, epoch: int) -> Path:
        return self.checkpoints_dir / checkpoint_name(epoch)

    @property
    def selection_path(self) -> Path:
        return self.root / SELECTION_DIR / SELECTION_FILE

    @property
    def predictions_path(self) -> Path:
        return self.root / SELECTION_DIR / PREDICTIONS

    @property
    def influence_root(self) -> Path:
        return self.root / INFLUENCE_DIR

    def influence_store(self, method: str = DEFAULT_METHOD) -> Path:
        """The score store of one influence method: ``RUN/influence/METHOD/``. A run made before several
        methods existed holds tracin's store in ``RUN/influence/`` itself; it stays there."""
        if method == DEFAULT_METHOD and has_store(self.influence_root):
            return self.influence_root
        return self.influence_root / method

    @property
    def influence_dir(self) -> Path:
        """The store of the default method (tracin)."""
        return self.influence_store(DEFAULT_METHOD)

    @property
    def analysis_dir(self) -> Path:
        return self.root / ANALYSIS_DIR

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def report_page(self) -> Path:
        return self.report_dir / REPORT_PAGE

    @property
    def experiments_dir(self) -> Path:
        return self.root / EXPERIMENTS_DIR

    def experiment_dir(self, name: str) -> Path:
        return self.experiments_dir / name

    def experiment_section(self, name: str) -> Path:
        """The HTML fragment ``RUN/experiments/NAME/section.html`` that the report includes."""
        return self.experiment_dir(name) / EXPERIMENT_SECTION_FILE

    def sub_runs_dir(self, name: str) -> Path:
        """Where experiment ``name`` keeps its sub-runs (each an ordinary run directory)."""
        return self.experiment_dir(name) / EXPERIMENT_RUNS_DIR

    @property
    def sub_run_record(self) -> Path:
        """In a sub-run: ``experiment.json`` (what was changed and why)."""
        return self.root / SUBRUN_RECORD

    @property
    def changed_path(self) -> Path:
        """In a sub-run: ``data/changed.parquet`` (the removed / excluded / added examples)."""
        return self.data_dir / CHANGED_FILE

    @property
    def given_dir(self) -> Path:
        return self.root / GIVEN_DIR

    def given_split_path(self, split: str) -> Path:
        return self.given_dir / f"{split}.parquet"

    @property
    def given_task_path(self) -> Path:
        return self.given_dir / TASK_FILE

    @property
    def given_test_examples_path(self) -> Path:
        return self.given_dir / GIVEN_TEST_EXAMPLES

    @property
    def given_evaluate_path(self) -> Path:
        return self.given_dir / GIVEN_EVALUATE

    def has_given_data(self) -> bool:
        """Whether ``prepare`` takes given data (a sub-run) instead of sampling."""
        return self.given_task_path.exists() and all(self.given_split_path(s).exists() for s in SPLITS)

    def has_given_test_examples(self) -> bool:
        """Whether ``select`` takes given test examples (a sub-run) instead of drawing."""
        return self.given_test_examples_path.exists() and self.given_evaluate_path.exists()

    def stage_marker(self, stage: str) -> Path:
        return self.root / STAGES_DIR / f"{stage}.json"

    # config ----------------------------------------------------------------
    def load_config(self) -> Config:
        if not self.config_path.exists():
            raise LingtraceError(f"{self.root} is not a lingtrace run (no config.json)", "run `lingtrace prepare` or `lingtrace run CONFIG` first")
        cfg = Config.from_dict(read_json(self.config_path))
        validate(cfg)
        return cfg

    def save_config(self, cfg: Config) -> None:
        write_json(self.config_path, cfg.to_dict())

    def describe(self) -> str:
        """What the run holds, in a few words (task, model, languages), from its config.json."""
        return describe_config(read_json(self.config_path))

    def config_difference(self, cfg: Config) -> str | None:
        """None when the run's saved config.json is ``cfg`` (keys added since count as their
        defaults), else the first differences; None too when the directory holds no run yet."""
        if not self.config_path.exists():
            return None
        held = _with_defaults(read_json(self.config_path), Config().to_dict())
        mine = cfg.to_dict()
        return None if held == mine else describe_differences(held, mine)

    def refuse_other_config(self, cfg: Config, overwrite: bool, fix: str) -> None:
        """Raise when the directory holds a run of a config other than ``cfg``, unless ``overwrite``;
        the message names what it holds (task, model, languages, or the keys that differ)."""
        changed = self.config_difference(cfg)
        if changed and not overwrite:
            held = self.describe()
            if held == describe_config(cfg.to_dict()):  # same task, model and languages: say what differs
                held += f"; differs in {changed}"
            raise LingtraceError(f"{self.root} holds a run of another config ({held})", fix)

    # stages ----------------------------------------------------------------
    def stage_config(self, cfg: Config, stage: str) -> dict[str, Any]:
        return cfg.fingerprint_view(STAGES[stage])  # keys added later leave old fingerprints alone

    def is_complete(self, stage: str) -> bool:
        return self.stage_marker(stage).exists()

    def check_stage(self, cfg: Config, stage: str, overwrite: bool = False) -> bool:
        """True when ``stage`` is complete with the same configuration (skip it).

        Raises when it was completed with a different configuration and ``overwrite`` is false.
        """
        marker = self.stage_marker(stage)
        if not marker.exists():
            return False
        done = read_json(marker)
        # a key added to lingtrace after the stage was made counts as its default value
        recorded = _with_defaults(done.get("config", {}), self.stage_config(Config(), stage))
        if done.get("fingerprint") == fingerprint(self.stage_config(cfg, stage)) or recorded == self.stage_config(cfg, stage):
            return not overwrite
        if overwrite:
            return False
        changes = _changes(recorded, self.stage_config(cfg, stage))
        if changes and all(key in RERUN_KEYS for key, _, _ in changes):
            return False  # e.g. influence methods added: the stage reruns and keeps what still holds
        changed = _describe_changes(changes)
        raise LingtraceError(
            f"stage {stage!r} in {self.root} was made with a different config ({changed})",
            "use a new run directory, or pass --overwrite to recompute it and the stages after it",
        )

    def mark_complete(self, cfg: Config, stage: str, info: dict[str, Any] | None = None) -> None:
        sc = self.stage_config(cfg, stage)
        write_json(self.stage_marker(stage), {"stage": stage, "fingerprint": fingerprint(sc), "config": sc, "info": info or {}})

    def invalidate_after(self, stage: str) -> None:
        """Remove the completion markers of ``stage`` and every later stage."""
        names = list(STAGES)
        for later in names[names.index(stage):]:
            self.stage_marker(later).unlink(missing_ok=True)


# ---------------------------------------------------------------- typed readers and writers


def has_store(directory: str | Path) -> bool:
    """Whether ``directory`` holds a score store (its ``meta.json``)."""
    return (Path(directory) / STORE_META_FILE).exists()


def read_table(path: Path, fix: str, damaged_fix: str | None = None, what: str | None = None) -> pd.DataFrame:
    """The one "read a parquet table of the run or raise a LingtraceError" helper: a missing file says
    ``fix``, a damaged one ``damaged_fix`` (default ``fix``); ``what`` names the table in the message."""
    if not path.exists():
        raise LingtraceError(f"missing {what} ({path})" if what else f"missing {path}", fix)
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise LingtraceError(f"cannot read {path}: {e}", damaged_fix or fix) from e


def read_split(run: RunDir, split: str, fix: str | None = None) -> pd.DataFrame:
    """``RUN/data/SPLIT.parquet`` (train, dev or test)."""
    if fix is not None:
        return read_table(run.split_path(split), fix)
    return read_table(run.split_path(split), "run `lingtrace prepare RUN` first", "rerun `lingtrace prepare RUN --overwrite`")


def write_split(run: RunDir, split: str, frame: pd.DataFrame) -> None:
    write_parquet(run.split_path(split), frame[schema.EXAMPLE_COLUMNS].reset_index(drop=True))


def read_task(run: RunDir) -> dict[str, Any]:
    """``RUN/data/task.json``: task name, label names, parallel and pair flags."""
    return read_json(run.task_path)


def write_task(run: RunDir, task: dict[str, Any]) -> None:
    write_json(run.task_path, task)


def read_manifest(run: RunDir) -> dict[str, Any] | None:
    """``RUN/checkpoints/manifest.json``, or None before training."""
    return read_json(run.manifest_path) if run.manifest_path.exists() else None


def final_checkpoint(run: RunDir) -> int:
    """The epoch of the final model of a run whose training is complete."""
    manifest = read_manifest(run)
    if not manifest or not manifest.get("complete"):
        raise LingtraceError(f"training in {run.root} is not complete", "run `lingtrace train RUN` first")
    return int(manifest["final_epoch"])


def pruned_record(run: RunDir) -> dict[str, Any] | None:
    """The manifest's record of pruned checkpoints (``None`` when the checkpoints are there)."""
    manifest = read_manifest(run)
    return manifest.get(PRUNED) if manifest else None


def prune_checkpoints(run: RunDir, by: str, kept: list[str]) -> dict[str, Any]:
    """Delete every checkpoint directory (and any trainer state) of a complete ``run``, keeping its manifest,
    which records what was removed, why (``by``) and what the run still holds (``kept``)."""
    manifest = read_json(run.manifest_path)
    if not manifest.get("complete"):
        raise LingtraceError(f"cannot prune the checkpoints of {run.root}: its training is not complete")
    targets = [p for p in sorted(run.checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}*")) if p.is_dir()]
    targets += [run.checkpoints_dir / n for n in (TRAINER_STATE_FILE, LEGACY_TRAINER_STATE_FILE) if (run.checkpoints_dir / n).exists()]
    earlier = manifest.get(PRUNED) or {}  # an interrupted pruning is completed, its files already counted
    new = [p for p in targets if p.name not in earlier.get("removed", [])]
    record = {
        "by": by,
        "removed": sorted({*earlier.get("removed", []), *(p.name for p in targets)}),
        "bytes_freed": earlier.get("bytes_freed", 0) + disk_bytes(new),
        "kept": kept,
        "retrain": "`lingtrace train RUN --overwrite` (the experiment retrains by itself when it needs the weights)",
    }
    manifest[PRUNED] = record  # recorded first: an interrupted deletion still reads as pruned
    write_json(run.manifest_path, manifest)
    for p in targets:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    return record


def write_manifest(run: RunDir, manifest: dict[str, Any]) -> None:
    write_json(run.manifest_path, manifest)


def read_selection(run: RunDir, fix: str | None = None, what: str | None = None) -> pd.DataFrame:
    """``RUN/selection/test.parquet``: the selected test examples."""
    if fix is not None:
        return read_table(run.selection_path, fix, what=what)
    return read_table(run.selection_path, "run `lingtrace select RUN` first", "rerun `lingtrace select RUN --overwrite`", what=what)


def write_selection(run: RunDir, frame: pd.DataFrame) -> None:
    write_parquet(run.selection_path, frame)


def read_predictions(run: RunDir, fix: str = "run `lingtrace select RUN` first") -> pd.DataFrame:
    """``RUN/selection/predictions.parquet``: the final model's predictions."""
    return read_table(run.predictions_path, fix)


def write_predictions(run: RunDir, frame: pd.DataFrame) -> None:
    write_parquet(run.predictions_path, frame)


def read_experiment_section(run: RunDir, name: str) -> str | None:
    """``RUN/experiments/NAME/section.html``, the HTML fragment experiment ``name`` wrote for the report,
    or None when there is none (the experiment is not complete)."""
    path = run.experiment_section(name)
    return path.read_text(encoding="utf-8") if path.is_file() else None


def frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of an example frame (its example columns, in order)."""
    cols = [c for c in schema.EXAMPLE_COLUMNS if c in frame.columns]
    h = pd.util.hash_pandas_object(frame[cols].astype(str), index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(cols).encode()).hexdigest()[:16]


def given_tests_identity(test_examples: pd.DataFrame, evaluate: pd.DataFrame) -> str:
    """What a sub-run's ``select`` on given test examples depends on besides its training."""
    return fingerprint({"selection": frame_hash(test_examples), "eval": frame_hash(evaluate)})


def write_given_data(run: RunDir, splits: dict[str, pd.DataFrame], task: dict[str, Any]) -> None:
    """A sub-run's data, for its ``prepare`` to take instead of sampling."""
    for split in SPLITS:
        write_parquet(run.given_split_path(split), splits[split][schema.EXAMPLE_COLUMNS].reset_index(drop=True))
    write_json(run.given_task_path, task)


def read_given_data(run: RunDir) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    fix = "the sub-run's given data is damaged: pass --overwrite to the experiment to redo it"
    splits = {split: read_table(run.given_split_path(split), fix) for split in SPLITS}
    for split, frame in splits.items():
        missing = [c for c in schema.EXAMPLE_COLUMNS if c not in frame.columns]
        if missing:
            raise LingtraceError(f"{run.given_split_path(split)} has no column {missing[0]!r}", fix)
    return splits, read_json(run.given_task_path)


def write_given_test_examples(run: RunDir, test_examples: pd.DataFrame, evaluate: pd.DataFrame) -> None:
    """The test examples a sub-run's ``select`` takes, and the examples whose predictions it saves."""
    write_parquet(run.given_test_examples_path, test_examples[schema.EXAMPLE_COLUMNS].reset_index(drop=True))
    write_parquet(run.given_evaluate_path, evaluate[schema.EXAMPLE_COLUMNS].reset_index(drop=True))


def read_given_test_examples(run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    fix = "the sub-run's given test examples are damaged: pass --overwrite to the experiment to redo it"
    return read_table(run.given_test_examples_path, fix), read_table(run.given_evaluate_path, fix)


def align_uids(frame: pd.DataFrame, uids: Sequence[str], what: str, fix: str = "the scores were made for other data: rerun `lingtrace influence RUN --overwrite`") -> pd.DataFrame:
    """The one uid aligner: ``frame`` reordered so that row i is the example with uid ``uids[i]`` (index
    reset); a one-line error when ``frame`` has duplicate uids or lacks one of ``uids``."""
    if frame[schema.UID].duplicated().any():
        dup = frame.loc[frame[schema.UID].duplicated(), schema.UID].iloc[0]
        raise LingtraceError(f"{what} has duplicate uid {dup!r}", "rerun `lingtrace prepare RUN --overwrite`")
    indexed = frame.assign(**{schema.UID: frame[schema.UID].astype(str)}).set_index(schema.UID, drop=False)
    missing = [u for u in uids if u not in indexed.index]
    if missing:
        raise LingtraceError(f"{len(missing)} uids of the influence scores are not in the {what} (first: {missing[0]!r})", fix)
    return indexed.loc[list(uids)].reset_index(drop=True)


def _with_defaults(recorded: dict, defaults: dict) -> dict:
    """``recorded`` with the keys it lacks taken from ``defaults`` (recursively)."""
    out = dict(recorded)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def _changes(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) of every leaf that differs."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_changes(va, vb, f"{prefix}{k}."))
        elif va != vb:
            out.append((f"{prefix}{k}", va, vb))
    return out


def _describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    """The first three changes as ``key: old -> new``."""
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:3]) + ("; ..." if len(changes) > 3 else "")


def describe_differences(a: dict, b: dict) -> str:
    """What differs between two configs or settings (as dicts), in a few words: the first three
    ``key: old -> new`` (nested keys dotted)."""
    return _describe_changes(_changes(a, b))


#: the data given to ``lingtrace.integrations.LingtraceCallback``, kept in the run as the local files its
#: ``prepare`` reads (``data.path``): ``RUN/data/source/{train,dev,test}.parquet``
SOURCE_DATA_DIR = "source"


def source_data_dir(run: RunDir) -> Path:
    """``RUN/data/source/``: the training, dev and test data a Trainer callback was given (``data.path`` of its run)."""
    return run.data_dir / SOURCE_DATA_DIR
