"""The Hugging Face hub (the ``hub`` extra: ``datasets``)."""

from __future__ import annotations

import logging

import pandas as pd

from lingtrace.data.tasks import TaskSpec
from lingtrace.errors import LingtraceError
from lingtrace.prepare.readers.common import (
    SPLIT_ALIASES,
    check_languages,
    make_frame,
    require_columns,
)
from lingtrace.prepare.readers.official import marc_stars_to_label

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- Hugging Face hub


def _import_datasets():
    try:
        import datasets  # noqa: PLC0415
    except ImportError as e:
        raise LingtraceError(
            "data.source=hub needs the hub extra (the `datasets` package is not installed)",
            "pip install 'lingtrace[hub]', or use data.source=official/local with downloaded files",
        ) from e
    return datasets


def _hub_split(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.lower())


def _hub_frame(task: str, lang: str, split: str, df: pd.DataFrame, where: str) -> pd.DataFrame:
    cols = list(df.columns)
    if task == "xnli":
        require_columns(cols, ["premise", "hypothesis", "label"], where)
        df = df[df["label"].isin([0, 1, 2])]  # -1 marks unlabelled rows in some versions
        labels = (df["label"] == 0).astype(int)  # 0 = entailment in facebook/xnli
        tid = df.index.astype(str)  # row order is aligned across languages
        return make_frame(lang, tid, df["premise"], df["hypothesis"], labels, split)
    if task == "pawsx":
        require_columns(cols, ["id", "sentence1", "sentence2", "label"], where)
        df = df[
            (df["sentence1"].astype(str).str.strip() != "") & (df["sentence2"].astype(str).str.strip() != "")
        ]
        df = df[df["label"].isin([0, 1])]
        return make_frame(
            lang, df["id"].astype(str), df["sentence1"], df["sentence2"], df["label"].astype(int), split
        )
    if task == "marc":
        if "stars" in cols:
            stars = df["stars"].astype(int)
        else:
            require_columns(cols, ["label"], where)
            stars = df["label"].astype(int) + 1  # mteb/amazon_reviews_multi: label = stars - 1
        labels = stars.map(marc_stars_to_label)
        keep = labels.notna()
        df, labels = df[keep], labels[keep].astype(int)
        if "review_title" in cols and "review_body" in cols:
            a, b = df["review_title"].astype(str), df["review_body"].astype(str)
        else:
            require_columns(cols, ["text"], where)
            # mteb joins title and body with a blank line
            parts = df["text"].astype(str).str.split("\n\n", n=1, expand=True)
            if parts.shape[1] == 1:
                parts[1] = None
            a, b = parts[0], parts[1].fillna("")
        idcol = "review_id" if "review_id" in cols else ("id" if "id" in cols else None)
        tid = df[idcol].astype(str) if idcol else df.index.astype(str)
        return make_frame(lang, tid, a, b, labels, split)
    raise LingtraceError(f"task {task!r} has no hub dataset", "use data.source=local or official")


def read_hub(task: TaskSpec, languages: list[str]) -> pd.DataFrame:
    """``datasets.load_dataset(task.hub_name, lang)`` for each language, converted to the frame layout."""
    if not task.hub_name:
        raise LingtraceError(
            f"task {task.name!r} has no hub dataset", f"use data.source={task.default_source}"
        )
    if task.languages:
        check_languages(languages, task.languages, task.name, f" on the hub ({task.hub_name})")
    datasets = _import_datasets()
    parts = []
    for lang in languages:
        try:
            dd = datasets.load_dataset(task.hub_name, lang)
        except Exception as e:  # network, auth, missing configs: all reported the same way
            msg = str(e).splitlines()[0] if str(e) else ""
            raise LingtraceError(
                f"could not load {task.hub_name} ({lang}) from the Hugging Face hub: {type(e).__name__}: {msg}",
                "check the network, or download the files and use data.source=official (or local) with data.path",
            ) from e
        for name in dd:
            split = _hub_split(str(name))
            if split is None:
                continue
            df = dd[name].to_pandas().reset_index(drop=True)
            parts.append(_hub_frame(task.name, lang, split, df, f"{task.hub_name} {lang}/{name}"))
    return pd.concat(parts, ignore_index=True)
