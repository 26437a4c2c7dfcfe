"""Readers: official distribution files, generic local tables, the Hugging Face hub, the embedded data.

Every reader returns one DataFrame with the columns ``lang, translation_id, text_a, text_b, label,
split`` (``translation_id`` and the texts as strings, ``text_b`` empty for single texts, ``label`` an
int class index, ``split`` one of train/dev/test). :func:`load_task` dispatches on ``data.task`` and
``data.source``; one module per source: ``official``, ``local``, ``hub`` (the embedded data is
``lingtrace.data.emoji``), and what they share in ``common``.
"""

from __future__ import annotations

import logging

import pandas as pd

from lingtrace.config import DataConfig
from lingtrace.data.emoji import emoji_label_names, read_emoji
from lingtrace.data.schema import LABEL, LANG, SPLIT, TEXT_A, TEXT_B, TRANSLATION_ID
from lingtrace.data.tasks import TASK_SOURCES, TaskSpec, get_task
from lingtrace.errors import LingtraceError
from lingtrace.prepare.readers.common import FRAME_COLUMNS, SPLITS, require_columns
from lingtrace.prepare.readers.hub import read_hub
from lingtrace.prepare.readers.local import drop_invalid_rows, read_local
from lingtrace.prepare.readers.official import (
    read_marc_official,
    read_official,
    read_pawsx_official,
    read_xnli_official,
)

__all__ = [
    "FRAME_COLUMNS",
    "SPLITS",
    "drop_invalid_rows",
    "finalize_frames",
    "load_task",
    "read_hub",
    "read_local",
    "read_marc_official",
    "read_official",
    "read_pawsx_official",
    "read_xnli_official",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- dispatch


def finalize_frames(
    frames: pd.DataFrame, task: TaskSpec, languages: list[str], drop_invalid: bool = False
) -> pd.DataFrame:
    """Normalise dtypes, keep ``languages``, and check labels, texts, splits and per-language counts."""
    require_columns(frames.columns, FRAME_COLUMNS, "the task data")
    df = frames[FRAME_COLUMNS].copy()
    df[LANG] = df[LANG].astype(str)
    present = sorted(df[LANG].unique())
    for lang in languages:
        if lang not in present:
            raise LingtraceError(
                f"language {lang!r} has zero examples for task {task.name} "
                f"(languages with examples: {', '.join(present) or 'none'})",
                "check the data files for that language, or remove it from data.languages",
            )
    df = df[df[LANG].isin(languages)]
    df = drop_invalid_rows(df, LABEL, [TEXT_A, TEXT_B], f"the {task.name} data", {}, drop_invalid, False)
    df[TRANSLATION_ID] = df[TRANSLATION_ID].astype(str)
    df[TEXT_A] = df[TEXT_A].fillna("").astype(str)
    df[TEXT_B] = df[TEXT_B].fillna("").astype(str)
    df[LABEL] = pd.to_numeric(df[LABEL]).astype("int64")
    bad_split = sorted(set(df[SPLIT].unique()) - set(SPLITS))
    if bad_split:
        raise LingtraceError(f"split {bad_split[0]!r} is not one of {', '.join(SPLITS)}")
    bad = df[(df[LABEL] < 0) | (df[LABEL] >= task.num_labels)]
    if len(bad):
        raise LingtraceError(
            f"label {int(bad[LABEL].iloc[0])} ({bad[LANG].iloc[0]}, {bad[SPLIT].iloc[0]}) is outside task "
            f"{task.name}'s label set 0..{task.num_labels - 1} ({', '.join(task.label_names)})",
            "fix the labels, or list every label in data.label_names",
        )
    n = len(df)
    df = df.drop_duplicates([SPLIT, LANG, TRANSLATION_ID], keep="first")
    if len(df) < n:
        log.warning("dropped %d rows with a duplicate (split, lang, translation_id)", n - len(df))
    return df.reset_index(drop=True)


def load_task(cfg: DataConfig) -> tuple[pd.DataFrame, TaskSpec]:
    """All splits of ``cfg.task`` for ``cfg.languages`` from ``cfg.source``, and the task spec with its labels."""
    spec = get_task(cfg.task)
    allowed = TASK_SOURCES[spec.name]
    if cfg.source not in allowed:
        raise LingtraceError(
            f"task {spec.name} cannot be read from data.source={cfg.source}",
            f"set data.source to {' or '.join(allowed)}",
        )
    languages = list(cfg.languages)
    if not languages:
        raise LingtraceError("data.languages is empty", "list at least one language")
    if cfg.source == "embedded":
        frames = read_emoji(languages)
        spec = spec.with_labels(emoji_label_names())
    elif cfg.source == "official":
        frames = read_official(spec.name, cfg.path, languages)
    elif cfg.source == "hub":
        frames = read_hub(spec, languages)
    else:
        frames, spec = read_local(cfg.path, cfg.columns, languages, cfg.label_names, spec, cfg.drop_invalid)
    return finalize_frames(frames, spec, languages, cfg.drop_invalid), spec
