"""What an experiment is: its config and the identity of the base run it was made from.

``RUN/experiments/NAME/config.json`` records the experiment's settings and what of the base run its
retrainings depend on: a rerun with other retraining settings, or on a changed base run, is refused
unless ``overwrite`` (settings that only change how saved results are summarised never need it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lingtrace.config import Config, ExperimentConfig, apply_overrides, validate
from lingtrace.errors import LingtraceError
from lingtrace.experiments.base import Base
from lingtrace.experiments.outputs import BASE_PREDICTIONS, CONFIG_FILE, SECTION_FILE, SUMMARY_FILE
from lingtrace.io import read_json, write_json
from lingtrace.run import SUBRUN_RECORD, RunDir, describe_differences


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
        "experiment_section": dataclasses.asdict(section),
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
