"""The embedded default task: emoji names and keywords (Unicode CLDR, via emojibase-data) in 11 languages.

Each item is one emoji; its text is the CLDR name followed by the CLDR keywords in that language
("grinsendes Gesicht: froh, fröhlich, gesicht, ..."), its label the emoji group (9 classes), and its
translation id the emoji's hexcode, shared by every language. Built by ``scripts/extract_emojibase.py``.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from lingtrace.data.schema import LABEL, LANG, SPLIT, TEXT_A, TEXT_B, TRANSLATION_ID
from lingtrace.errors import LingtraceError

DATA_FILE = "emoji.jsonl.gz"
META_FILE = "meta.json"


def emoji_dir() -> Path:
    """Folder of the shipped extract."""
    return Path(str(resources.files("lingtrace.data") / "emojibase"))


def _file(name: str) -> Path:
    p = emoji_dir() / name
    if not p.is_file():
        raise LingtraceError(
            f"the embedded emoji data file {p} is missing",
            "reinstall lingtrace, or rebuild it with scripts/extract_emojibase.py",
        )
    return p


@lru_cache(maxsize=1)
def emoji_meta() -> dict:
    """label_names, locales, source and item count of the shipped extract."""
    return json.loads(_file(META_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _records() -> tuple[dict, ...]:
    with gzip.open(_file(DATA_FILE), "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def emoji_languages() -> list[str]:
    return list(emoji_meta()["locales"])


def emoji_label_names() -> list[str]:
    return list(emoji_meta()["label_names"])


def read_emoji(languages: list[str] | None = None) -> pd.DataFrame:
    """The emoji items of ``languages`` (default: all) as one pool (split ``train``).

    The data has no separate dev/test split; sampling carves disjoint dev/test pools out of the
    translation ids.
    """
    available = emoji_languages()
    langs = list(languages) if languages is not None else available
    missing = [lang for lang in langs if lang not in available]
    if missing:
        raise LingtraceError(
            f"language {missing[0]!r} is not available for task emoji",
            f"choose data.languages from {', '.join(available)}",
        )
    recs = _records()
    rows = {LANG: [], TRANSLATION_ID: [], TEXT_A: [], LABEL: []}
    for lang in langs:
        for r in recs:
            rows[LANG].append(lang)
            rows[TRANSLATION_ID].append(r["hexcode"])
            rows[TEXT_A].append(r["text"][lang])
            rows[LABEL].append(int(r["group"]))
    df = pd.DataFrame(rows)
    df[TEXT_B] = ""
    df[SPLIT] = "train"
    df[LABEL] = df[LABEL].astype("int64")
    return df[[LANG, TRANSLATION_ID, TEXT_A, TEXT_B, LABEL, SPLIT]]
