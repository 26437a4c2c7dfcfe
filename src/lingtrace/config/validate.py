"""Validation of a whole config, section by section, with one clear error for the first bad key."""

from __future__ import annotations

from lingtrace.config.sections import (
    K_DIRECTIONS,
    K_GROUPINGS,
    LANGUAGES_DESIGNS,
    MODEL_KINDS,
    Config,
    DataConfig,
)
from lingtrace.data.tasks import TASK_SOURCES, TASKS
from lingtrace.errors import LingtraceError


def validate(cfg: Config) -> None:
    """Check ``cfg`` section by section in dependency order (data, model, train, select, influence,
    analysis, experiment), so that the first error reported is the cause: the sections after ``data``
    refer to its languages, so a wrong language is reported as such, not as a later list that names it."""
    _validate_data(cfg.data)
    m, t, s, i = cfg.model, cfg.train, cfg.select, cfg.influence
    if m.num_layers is not None and m.num_layers < 1:
        raise LingtraceError(f"model.num_layers must be at least 1, got {m.num_layers}")
    if m.max_length < 8:
        raise LingtraceError(f"model.max_length must be at least 8, got {m.max_length}")
    if m.kind not in MODEL_KINDS:
        raise LingtraceError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got {m.kind!r}")
    if m.lora_r < 0 or m.lora_alpha <= 0 or (m.lora_r > 0 and not m.lora_targets):
        raise LingtraceError("model.lora_r must be >= 0, model.lora_alpha > 0, and model.lora_targets non-empty with LoRA")
    if t.lr <= 0 or t.epochs < 1 or t.patience < 1 or t.batch_size < 1 or t.eval_batch_size < 1:
        raise LingtraceError("train.lr must be > 0 and train.epochs, patience, batch_size, eval_batch_size >= 1")
    if not 0 <= t.warmup_ratio < 1:
        raise LingtraceError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if s.per_lang < 1:
        raise LingtraceError(f"select.per_lang must be at least 1, got {s.per_lang}")
    i.validate()
    if cfg.analysis.k < 1 or cfg.analysis.examples_per_table < 1 or cfg.analysis.browser_k < 1:
        raise LingtraceError("analysis.k, analysis.examples_per_table and analysis.browser_k must be at least 1")
    _validate_experiment(cfg)


def _validate_data(d: DataConfig) -> None:
    """The data section alone; a registered task read from its own files (embedded, official, hub) has
    a known set of languages, checked here (a local source's languages are known only when `prepare`
    reads it)."""
    if d.source not in ("embedded", "official", "local", "hub"):
        raise LingtraceError(f"data.source must be embedded, official, local or hub, got {d.source!r}")
    if d.task in TASK_SOURCES and d.source not in TASK_SOURCES[d.task]:
        raise LingtraceError(
            f"task {d.task} cannot be read from data.source={d.source}", f"set data.source to {' or '.join(TASK_SOURCES[d.task])}"
        )
    if d.source in ("official", "local") and not d.path:
        raise LingtraceError(f"data.source={d.source} needs data.path", "set data.path to the directory or file with the data")
    if not d.languages:
        raise LingtraceError("data.languages is empty", "list at least one language, e.g. --set data.languages=[de,fr]")
    if len(set(d.languages)) != len(d.languages):
        raise LingtraceError(f"data.languages has duplicates: {d.languages}")
    known = TASKS[d.task].languages if d.task in TASKS and d.source != "local" else ()
    for lang in d.languages:
        if known and lang not in known:
            raise LingtraceError(
                f"language {lang!r} in data.languages is not available for task {d.task} (data.source={d.source})",
                f"choose data.languages from {', '.join(sorted(known))}",
            )
    for key in ("train_per_lang", "dev_per_lang", "test_per_lang"):
        if getattr(d, key) < 1:
            raise LingtraceError(f"data.{key} must be at least 1, got {getattr(d, key)}")
    if d.exclude_lang is not None and d.exclude_lang not in d.languages:
        raise LingtraceError(f"data.exclude_lang={d.exclude_lang!r} is not one of data.languages {d.languages}")
    if d.extra_lang is not None and d.extra_lang not in d.languages:
        raise LingtraceError(f"data.extra_lang={d.extra_lang!r} is not one of data.languages {d.languages}")
    if d.extra_pct < 0:
        raise LingtraceError(f"data.extra_pct must be >= 0, got {d.extra_pct}")
    if d.extra_pct > 0 and d.extra_lang is None:
        raise LingtraceError("data.extra_pct is set but data.extra_lang is not", "name the language to add data for")


def _validate_experiment(cfg: Config) -> None:
    x, langs = cfg.experiment, cfg.data.languages
    if x.top_k is not None and x.top_k < 1:
        raise LingtraceError(f"experiment.top_k must be at least 1, got {x.top_k}")
    if not x.ks or any(k < 1 for k in x.ks):
        raise LingtraceError(f"experiment.ks must be a non-empty list of k >= 1, got {x.ks}")
    if not x.k_directions or any(d not in K_DIRECTIONS for d in x.k_directions):
        raise LingtraceError(f"experiment.k_directions must be a non-empty subset of {', '.join(K_DIRECTIONS)}, got {x.k_directions}")
    if x.k_grouping not in K_GROUPINGS:
        raise LingtraceError(f"experiment.k_grouping must be {', '.join(K_GROUPINGS)}, got {x.k_grouping!r}")
    if x.k_test_per_lang is not None and x.k_test_per_lang < 1:
        raise LingtraceError(f"experiment.k_test_per_lang must be at least 1 (or null for all), got {x.k_test_per_lang}")
    if not 0 < x.level_tolerance < 100:
        raise LingtraceError(f"experiment.level_tolerance must be in (0, 100), got {x.level_tolerance}")
    for key in ("k_languages", "zero_shot_languages", "imbalance_languages", "languages_removed"):
        unknown = [lang for lang in getattr(x, key) if lang not in langs]
        if unknown:
            raise LingtraceError(
                f"experiment.{key} has {unknown[0]!r}, which is not one of data.languages {langs}",
                f"list only languages of data.languages in experiment.{key} (empty = all), e.g. --set experiment.{key}=[]",
            )
    if x.lds_subsets < 3:
        raise LingtraceError(f"experiment.lds_subsets must be at least 3 (a rank correlation over the subsets), got {x.lds_subsets}")
    if not 0 < x.lds_fraction < 1:
        raise LingtraceError(f"experiment.lds_fraction must be in (0, 1), got {x.lds_fraction}")
    if x.lds_resamples < 100:
        raise LingtraceError(f"experiment.lds_resamples must be at least 100, got {x.lds_resamples}")
    if x.noise_seeds < 0:
        raise LingtraceError(f"experiment.noise_seeds must be 0 or more, got {x.noise_seeds}")
    if not x.imbalance_pcts or any(p <= 0 for p in x.imbalance_pcts):
        raise LingtraceError(f"experiment.imbalance_pcts must be a non-empty list of percentages > 0, got {x.imbalance_pcts}")
    if x.languages_design not in LANGUAGES_DESIGNS:
        raise LingtraceError(f"experiment.languages_design must be {' or '.join(LANGUAGES_DESIGNS)}, got {x.languages_design!r}")
    if x.languages_mixtures < 3:
        raise LingtraceError(f"experiment.languages_mixtures must be at least 3 (a least-squares fit with a standard error), got {x.languages_mixtures}")
    if not 0 < x.languages_min_fraction < 1:
        raise LingtraceError(f"experiment.languages_min_fraction must be in (0, 1), got {x.languages_min_fraction}")
