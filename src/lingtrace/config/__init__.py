"""Run configuration: nested dataclasses with help text (``sections``), the influence options and
method names (``influence``), presets, loading with CLI overrides, validation and help.

The modules, bottom-up: ``fields`` (the one field helper) < ``parse`` < ``influence`` < ``sections`` <
``presets``, ``validate``, ``help`` < ``load``; ``stages`` names each stage's sections. Import the
public names from ``lingtrace.config``.
"""

from __future__ import annotations

from lingtrace.config.fields import option
from lingtrace.config.help import help_keys
from lingtrace.config.influence import (
    CHECKPOINTS,
    DEFAULT_METHOD,
    DTYPES,
    EKFAC_MEASUREMENTS,
    EMBEDDING_METHODS,
    LINEAR_PATHS,
    METHODS,
    MODES,
    InfluenceOptions,
    Tuning,
    foreign_keys,
    method_names,
    rerun_keys,
)
from lingtrace.config.load import apply_overrides, config_file_dict, load_config
from lingtrace.config.presets import PRESETS, preset, preset_dict
from lingtrace.config.sections import (
    EXPERIMENTS,
    K_DIRECTIONS,
    K_GROUPINGS,
    MODEL_KINDS,
    AnalysisConfig,
    Config,
    DataConfig,
    ExperimentConfig,
    InfluenceConfig,
    ModelConfig,
    SelectConfig,
    TrainConfig,
)
from lingtrace.config.stages import STAGE_SECTIONS
from lingtrace.config.validate import validate

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_METHOD",
    "DTYPES",
    "EKFAC_MEASUREMENTS",
    "EMBEDDING_METHODS",
    "EXPERIMENTS",
    "K_DIRECTIONS",
    "K_GROUPINGS",
    "LINEAR_PATHS",
    "METHODS",
    "MODEL_KINDS",
    "MODES",
    "PRESETS",
    "STAGE_SECTIONS",
    "AnalysisConfig",
    "Config",
    "DataConfig",
    "ExperimentConfig",
    "InfluenceConfig",
    "InfluenceOptions",
    "ModelConfig",
    "SelectConfig",
    "TrainConfig",
    "Tuning",
    "apply_overrides",
    "config_file_dict",
    "foreign_keys",
    "help_keys",
    "load_config",
    "method_names",
    "option",
    "preset",
    "preset_dict",
    "rerun_keys",
    "validate",
]
