"""k-selection: its name, its title in the report, and the settings its retrainings and results depend on."""

from __future__ import annotations

from typing import Any

from lingtrace.analysis.common import NEGATIVE, POSITIVE
from lingtrace.config import Config

NAME = "k-selection"
TITLE = "Choosing k: retraining without the most influential examples"
REPRODUCES = "Fig. 1, 6-8 (+ random control)"
RANDOM = "random"  # the control, beside the analyses' positive / negative directions


def retraining_settings(cfg: Config) -> dict[str, Any]:
    x = cfg.experiment
    return {
        "ks": sorted(set(x.ks)),
        "k_directions": [d for d in (POSITIVE, NEGATIVE, RANDOM) if d in x.k_directions],
        "k_languages": list(x.k_languages) or list(cfg.data.languages),
        "k_test_per_lang": x.k_test_per_lang,
        "k_grouping": x.k_grouping,
        "seed": x.seed,
    }


def result_settings(cfg: Config) -> dict[str, Any]:
    return {"level_tolerance": cfg.experiment.level_tolerance}
