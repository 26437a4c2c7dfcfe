"""The files of an experiment folder ``RUN/experiments/NAME/`` and their writers.

It holds ``config.json`` (``identity``), the result tables (``NAME.parquet``, exactly their documented
columns), ``figures/NAME.png``, ``summary.json`` (strict JSON) and ``section.html`` (the report's
fragment, ``lingtrace.experiments.html``). Every write is atomic (``lingtrace.io``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.config import Config
from lingtrace.experiments.base import Base
from lingtrace.io import atomic_path, json_safe, write_parquet
from lingtrace.run import (
    EXPERIMENT_CONFIG_FILE,
    EXPERIMENT_FIGURES_DIR,
    EXPERIMENT_SECTION_FILE,
    EXPERIMENT_SUMMARY_FILE,
)

# the experiment folder's file names (defined, with every other run-directory name, in lingtrace.run)
FIGURES_DIR = EXPERIMENT_FIGURES_DIR
CONFIG_FILE = EXPERIMENT_CONFIG_FILE
SUMMARY_FILE = EXPERIMENT_SUMMARY_FILE
SECTION_FILE = EXPERIMENT_SECTION_FILE
#: k-selection, noise floor: the base final model's predictions on the chosen test examples
BASE_PREDICTIONS = "base_predictions.parquet"


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


def write_summary(exp_dir: Path, summary: dict[str, Any]) -> None:
    path = exp_dir / SUMMARY_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_result(exp_dir: Path, module: Any, cfg: Config, base: Base, section: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Write an experiment's ``section.html`` and ``summary.json`` (the standard keys first, then ``fields``).

    ``module`` is the experiment's module (its ``NAME``, ``TITLE``, ``REPRODUCES``, ``retraining_settings``
    and ``result_settings``); ``section`` holds ``readings``, ``cost`` (the cost text), ``notes``
    and ``body`` (HTML). Returns the summary."""
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
