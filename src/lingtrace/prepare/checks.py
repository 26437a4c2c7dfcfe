"""Checks on the labels of the prepared data: a label with very few examples (often a typo in the label
column, which would otherwise become a class of its own) is named in a warning; a training sample of one
class is refused, and so is a class of the dev or test sample that the data's training split lacks altogether
(a class the training sample misses only by chance is a warning: draw more, or label-stratified)."""

from __future__ import annotations

import logging

import pandas as pd

from lingtrace.data.schema import LABEL
from lingtrace.data.tasks import TaskSpec
from lingtrace.errors import LingtraceError

log = logging.getLogger(__name__)

#: a label is "rare" when it has at most this share of the most frequent label's examples (and at most RARE_MAX)
RARE_SHARE = 0.05
RARE_MAX = 10


def rare_labels(frames: pd.DataFrame, task: TaskSpec) -> dict[str, int]:
    """Label name -> count for the labels of ``frames`` with very few examples next to the others."""
    counts = frames[LABEL].value_counts()
    if len(counts) < 2:
        return {}
    largest = int(counts.max())
    return {
        _name(task, label): int(n) for label, n in sorted(counts.items()) if n <= RARE_MAX and n <= max(1.0, RARE_SHARE * largest)
    }


def warn_rare_labels(frames: pd.DataFrame, task: TaskSpec) -> dict[str, int]:
    """Log a warning naming the rare labels of the data read (``rare_labels``); returns them."""
    rare = rare_labels(frames, task)
    if rare:
        counts = frames[LABEL].value_counts()
        others = counts[[n not in rare for n in (_name(task, label) for label in counts.index)]]
        log.warning(
            "label%s %s %s very few examples next to the other labels (%d to %d each): a typo in the label column? "
            "Each distinct label becomes a class; fix the data (or list the intended labels in data.label_names)",
            "s" if len(rare) > 1 else "",
            ", ".join(f"{name!r} ({n} example{'s' if n != 1 else ''})" for name, n in rare.items()),
            "have" if len(rare) > 1 else "has",
            int(others.min()),
            int(others.max()),
        )
    return rare


def check_training_labels(splits: dict[str, pd.DataFrame], task: TaskSpec, pool: pd.DataFrame) -> None:
    """Refuse a training sample with a single class, or a dev or test class that the training split of the data
    read (``pool``: its training rows) lacks; warn about one the training sample lacks only by chance."""
    train = set(splits["train"][LABEL].unique())
    if len(train) < 2:
        only = ", ".join(repr(_name(task, label)) for label in sorted(train)) or "none"
        raise LingtraceError(
            f"the training sample holds a single class ({only}): a classifier cannot learn from it",
            "check the label column and data.columns, or draw more training examples (data.train_per_lang)",
        )
    for split in ("dev", "test"):
        missing = sorted(set(splits[split][LABEL].unique()) - train) if split in splits else []
        absent = [label for label in missing if label not in set(pool[LABEL].unique())]
        if absent:
            names = ", ".join(repr(_name(task, label)) for label in absent)
            raise LingtraceError(
                f"the {split} sample has class{'es' if len(absent) > 1 else ''} {names} that the training data lacks",
                "check the labels of that split for typos (each distinct label becomes a class)",
            )
        if missing:
            log.warning(
                "the training sample has no example of class%s %s, which the %s sample has: draw more training examples "
                "(data.train_per_lang) or label-stratified ones (data.stratify)",
                "es" if len(missing) > 1 else "",
                ", ".join(repr(_name(task, label)) for label in missing),
                split,
            )


def _name(task: TaskSpec, label) -> str:
    names = task.label_names
    return str(names[int(label)]) if 0 <= int(label) < len(names) else str(label)
