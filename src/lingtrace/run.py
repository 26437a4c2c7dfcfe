"""The run directory: paths, the resolved config, and stage completion.

Layout (documented in the README)::

    RUN/config.json                      resolved configuration of the run
    RUN/data/{train,dev,test}.parquet    examples: uid, lang, translation_id, text_a, text_b, label
    RUN/data/task.json                   task name, label names, parallel flag
    RUN/checkpoints/epoch-K/             save_pretrained model + tokenizer after epoch K
    RUN/checkpoints/manifest.json        per epoch: path, learning rates, train loss, dev accuracy
    RUN/selection/test.parquet           selected test examples with the final model's prediction
    RUN/influence/METHOD/                score store of each influence method (tracin's at RUN/influence/
                                         itself in runs made before several methods existed)
    RUN/analysis/                        analysis tables
    RUN/report/index.html                the report
    RUN/stages/<stage>.json              completion marker: the config section the stage used

A stage is complete when its marker exists; the marker holds the configuration it was made with.
Running a stage again with a different configuration is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from lingtrace.config import Config, model_fingerprint_view, validate
from lingtrace.errors import LingtraceError
from lingtrace.influence.methods import DEFAULT_METHOD
from lingtrace.influence.options import fingerprint_view, rerun_keys
from lingtrace.io import read_json, write_json

log = logging.getLogger(__name__)

#: pipeline order; each stage depends on the configuration sections listed
STAGES: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "train": ("data", "model", "train"),
    "select": ("data", "model", "train", "select"),
    "influence": ("data", "model", "train", "select", "influence"),
    "analyze": ("data", "model", "train", "select", "influence", "analysis"),
    "report": ("data", "model", "train", "select", "influence", "analysis"),
}


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


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # paths ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def split_path(self, split: str) -> Path:
        return self.data_dir / f"{split}.parquet"

    @property
    def task_path(self) -> Path:
        return self.data_dir / "task.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def manifest_path(self) -> Path:
        return self.checkpoints_dir / "manifest.json"

    def checkpoint_dir(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"epoch-{epoch}"

    @property
    def selection_path(self) -> Path:
        return self.root / "selection" / "test.parquet"

    @property
    def influence_root(self) -> Path:
        return self.root / "influence"

    def influence_store(self, method: str = DEFAULT_METHOD) -> Path:
        """The score store of one influence method: ``RUN/influence/METHOD/``. A run made before several
        methods existed holds tracin's store in ``RUN/influence/`` itself; it stays there."""
        from lingtrace.influence.store.meta import has_store

        if method == DEFAULT_METHOD and has_store(self.influence_root):
            return self.influence_root
        return self.influence_root / method

    @property
    def influence_dir(self) -> Path:
        """The store of the default method (tracin)."""
        return self.influence_store(DEFAULT_METHOD)

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def stage_marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

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
        return None if held == mine else _diff(held, mine)

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
        d = cfg.to_dict()
        d["influence"] = fingerprint_view(d["influence"])  # keys added later leave old fingerprints alone
        d["model"] = model_fingerprint_view(d["model"])
        return {s: d[s] for s in STAGES[stage]}

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


def _diff(a: dict, b: dict) -> str:
    """What differs between two configs (as dicts), in a few words."""
    return _describe_changes(_changes(a, b))
