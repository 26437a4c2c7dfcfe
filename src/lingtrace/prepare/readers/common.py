"""What every reader shares: the frame's columns, split names, and the checks on files, columns and languages."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lingtrace.data.schema import LABEL, LANG, SPLIT, TEXT_A, TEXT_B, TRANSLATION_ID
from lingtrace.errors import LingtraceError

log = logging.getLogger(__name__)


FRAME_COLUMNS = [LANG, TRANSLATION_ID, TEXT_A, TEXT_B, LABEL, SPLIT]
SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "validation": "dev",
    "valid": "dev",
    "val": "dev",
    "test": "test",
}
LOCAL_COLUMNS = (TEXT_A, TEXT_B, LABEL, LANG, TRANSLATION_ID, SPLIT)
LOCAL_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")

XNLI_LABELS = {"entailment": 1, "neutral": 0, "contradiction": 0, "contradictory": 0}
INT_RE = re.compile(r"^\s*-?\d+(\.0+)?\s*$")


def check_root(path: str | Path | None, what: str) -> Path:
    if not path:
        raise LingtraceError(
            f"{what} needs data.path", "set data.path to the folder or file holding the data"
        )
    root = Path(path).expanduser()
    if not root.exists():
        raise LingtraceError(
            f"data.path {root} does not exist", f"set data.path to the folder holding the {what} files"
        )
    return root


def find_file(root: Path, candidates: list[str], what: str, fix: str) -> Path:
    """The first of ``root/candidate`` that exists, else a file with the same name up to 3 folders deep."""
    if root.is_file() and root.name == Path(candidates[0]).name:
        return root
    for c in candidates:
        p = root / c
        if p.is_file():
            return p
    name = Path(candidates[0]).name
    if root.is_dir():
        for pattern in (f"*/{name}", f"*/*/{name}", f"*/*/*/{name}"):
            hits = sorted(root.glob(pattern))
            if hits:
                return hits[0]
    raise LingtraceError(f"{what}: expected {root / candidates[0]} (or {name} below {root}), not found", fix)


def require_columns(found: Iterable[str], needed: Iterable[str], where: str) -> None:
    found = list(found)
    for col in needed:
        if col not in found:
            raise LingtraceError(
                f"column {col!r} missing in {where}; columns found: {', '.join(map(str, found)) or '(none)'}",
                "point data.path at the file as distributed, or map your columns with data.columns",
            )


def check_languages(languages: list[str], available: Iterable[str], task: str, where: str = "") -> None:
    available = sorted(set(available))
    for lang in languages:
        if lang not in available:
            raise LingtraceError(
                f"language {lang!r} is not available for task {task}{where}",
                f"choose data.languages from {', '.join(available) or '(none found)'}",
            )


def make_frame(
    lang: str | list, tid: Iterable, a: Iterable, b: Iterable | None, label: Iterable, split: str | list
) -> pd.DataFrame:
    df = pd.DataFrame({TRANSLATION_ID: list(tid), TEXT_A: list(a), LABEL: list(label)})
    df[TEXT_B] = "" if b is None else list(b)
    df[LANG] = lang
    df[SPLIT] = split
    return df[FRAME_COLUMNS]


def read_tsv_quote_none(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            dtype=str,
            keep_default_na=False,
            on_bad_lines="skip",
            encoding="utf-8",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise LingtraceError(
            f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
