"""Official distribution files: XNLI, PAWS-X and MARC as their authors distribute them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from lingtrace.errors import LingtraceError
from lingtrace.prepare.readers.common import (
    SPLITS,
    XNLI_LABELS,
    check_languages,
    check_root,
    find_file,
    make_frame,
    read_tsv_quote_none,
    require_columns,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- official files: XNLI


def _xnli_train_file(root: Path, lang: str) -> Path:
    name = f"multinli.train.{lang}.tsv"
    return find_file(
        root,
        [f"XNLI-MT-1.0/multinli/{name}", f"multinli/{name}", name],
        f"XNLI-MT training file for {lang!r}",
        "download XNLI-MT-1.0.zip from https://github.com/facebookresearch/XNLI, unzip it below data.path",
    )


def _xnli_eval_file(root: Path, split: str) -> Path:
    name = f"xnli.{split}.tsv"
    return find_file(
        root,
        [f"XNLI-1.0/{name}", name],
        f"XNLI {split} file",
        "download XNLI-1.0.zip from https://github.com/facebookresearch/XNLI, unzip it below data.path",
    )


def _xnli_train_languages(root: Path) -> list[str]:
    pat = re.compile(r"^multinli\.train\.([A-Za-z_-]+)\.tsv$")
    files = root.glob("**/multinli.train.*.tsv") if root.is_dir() else []
    return sorted({m.group(1) for p in files if (m := pat.match(p.name))})


def _xnli_label(value: str, where: str) -> int:
    key = value.strip().lower()
    if key not in XNLI_LABELS:
        raise LingtraceError(
            f"label {value!r} in {where} is outside the XNLI label set {sorted(XNLI_LABELS)}",
            "check that the file is an unmodified XNLI/XNLI-MT file",
        )
    return XNLI_LABELS[key]


def read_xnli_train_file(path: Path, lang: str) -> pd.DataFrame:
    """One XNLI-MT ``multinli.train.<lang>.tsv`` (premise, hypo, label; QUOTE_NONE); id = data row index.

    Lines with the wrong number of fields are skipped without shifting the ids of the other rows,
    so translation ids stay aligned across languages.
    """
    tids, a, b, labels = [], [], [], []
    skipped = 0
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        require_columns(header, ["premise", "hypo", "label"], str(path))
        ip, ih, il = header.index("premise"), header.index("hypo"), header.index("label")
        for i, line in enumerate(f):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != len(header):
                skipped += 1
                continue
            if not parts[ip].strip() or not parts[ih].strip():
                skipped += 1
                continue
            tids.append(str(i))
            a.append(parts[ip])
            b.append(parts[ih])
            labels.append(_xnli_label(parts[il], f"{path} line {i + 2}"))
    if skipped:
        log.info("%s: skipped %d malformed or empty lines", path, skipped)
    return make_frame(lang, tids, a, b, labels, "train")


def read_xnli_eval_file(path: Path, split: str, languages: list[str]) -> pd.DataFrame:
    """XNLI-1.0 ``xnli.dev.tsv``/``xnli.test.tsv`` (all languages in one file); id = pairID."""
    df = read_tsv_quote_none(path)
    require_columns(df.columns, ["language", "gold_label", "sentence1", "sentence2", "pairID"], str(path))
    check_languages(languages, df["language"].unique(), "xnli", f" in {path}")
    df = df[df["language"].isin(languages)]
    labels = [_xnli_label(v, str(path)) for v in df["gold_label"]]
    return make_frame(list(df["language"]), df["pairID"], df["sentence1"], df["sentence2"], labels, split)


def read_xnli_official(path: str | Path, languages: list[str]) -> pd.DataFrame:
    """XNLI as distributed: XNLI-MT-1.0 (machine-translated training data) and XNLI-1.0 (dev/test)."""
    root = check_root(path, "XNLI")
    available = _xnli_train_languages(root)
    if available:
        check_languages(languages, available, "xnli", f" in {root} (XNLI-MT training files)")
    parts = [read_xnli_train_file(_xnli_train_file(root, lang), lang) for lang in languages]
    for split in ("dev", "test"):
        parts.append(read_xnli_eval_file(_xnli_eval_file(root, split), split, languages))
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- official files: PAWS-X

PAWSX_FILES = {"train": "translated_train.tsv", "dev": "dev_2k.tsv", "test": "test_2k.tsv"}


def _pawsx_lang_dir(root: Path, lang: str) -> Path | None:
    for c in (root / "x-final" / lang, root / lang, root / "paws-x" / "x-final" / lang):
        if c.is_dir():
            return c
    if root.is_dir():
        for pattern in (f"*/x-final/{lang}", f"*/*/x-final/{lang}"):
            hits = sorted(p for p in root.glob(pattern) if p.is_dir())
            if hits:
                return hits[0]
    return None


def _pawsx_languages(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted({p.parent.name for p in root.glob("**/test_2k.tsv")})


def read_pawsx_file(path: Path, lang: str, split: str) -> pd.DataFrame:
    """One PAWS-X tsv (id, sentence1, sentence2, label); rows with an empty sentence are dropped."""
    df = read_tsv_quote_none(path)
    require_columns(df.columns, ["id", "sentence1", "sentence2", "label"], str(path))
    keep = (df["sentence1"].str.strip() != "") & (df["sentence2"].str.strip() != "")
    dropped = int((~keep).sum())
    if dropped:
        log.info("%s: dropped %d rows with an empty sentence", path, dropped)
    df = df[keep]
    bad = df[~df["label"].str.strip().isin(["0", "1"])]
    if len(bad):
        raise LingtraceError(
            f"label {bad['label'].iloc[0]!r} in {path} (id {bad['id'].iloc[0]}) is outside the PAWS-X label set {{0, 1}}",
            "check that the file is an unmodified PAWS-X file",
        )
    labels = df["label"].str.strip().astype(int)
    return make_frame(lang, df["id"].str.strip(), df["sentence1"], df["sentence2"], labels, split)


def read_pawsx_official(path: str | Path, languages: list[str]) -> pd.DataFrame:
    """PAWS-X as distributed: ``x-final/<lang>/{translated_train,dev_2k,test_2k}.tsv`` (English: train.tsv)."""
    root = check_root(path, "PAWS-X")
    parts = []
    for lang in languages:
        d = _pawsx_lang_dir(root, lang)
        if d is None:
            found = _pawsx_languages(root)
            if found:
                check_languages([lang], found, "pawsx", f" in {root}")
            raise LingtraceError(
                f"PAWS-X folder for {lang!r}: expected {root / 'x-final' / lang}, not found",
                "download x-final.tar.gz from https://github.com/google-research-datasets/paws/tree/master/pawsx "
                "and unpack it below data.path",
            )
        for split, name in PAWSX_FILES.items():
            names = ["train.tsv", name] if (split == "train" and lang == "en") else [name]
            p = next((d / n for n in names if (d / n).is_file()), None)
            if p is None:
                raise LingtraceError(
                    f"PAWS-X {split} file for {lang!r}: expected {d / names[0]}, not found",
                    "unpack the complete x-final.tar.gz below data.path",
                )
            parts.append(read_pawsx_file(p, lang, split))
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- official files: MARC


def marc_stars_to_label(stars: int) -> int | None:
    """1-2 stars -> 0 (negative), 4-5 -> 1 (positive), 3 -> None (dropped)."""
    if stars in (1, 2):
        return 0
    if stars in (4, 5):
        return 1
    if stars == 3:
        return None
    raise LingtraceError(f"star rating {stars!r} is outside 1-5", "check that the MARC file is unmodified")


def read_marc_file(path: Path, lang: str, split: str) -> pd.DataFrame:
    """One MARC ``dataset_<lang>_<split>.json`` (JSON lines); 3-star reviews are dropped."""
    tids, a, b, labels = [], [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise LingtraceError(
                    f"{path} line {n} is not valid JSON: {e.msg}",
                    "MARC files are JSON lines, one review per line",
                ) from e
            require_columns(
                rec.keys(), ["review_id", "stars", "review_body", "review_title"], f"{path} line {n}"
            )
            try:
                stars = int(rec["stars"])
            except (TypeError, ValueError) as e:
                raise LingtraceError(
                    f"star rating {rec['stars']!r} in {path} line {n} is not a number"
                ) from e
            label = marc_stars_to_label(stars)
            if label is None:
                continue
            tids.append(str(rec["review_id"]))
            a.append(str(rec["review_title"] or ""))
            b.append(str(rec["review_body"] or ""))
            labels.append(label)
    return make_frame(lang, tids, a, b, labels, split)


def _marc_languages(root: Path) -> list[str]:
    pat = re.compile(r"^dataset_([A-Za-z_-]+)_train\.json$")
    if root.is_file():
        root = root.parent
    return sorted({m.group(1) for p in root.glob("**/dataset_*_train.json") if (m := pat.match(p.name))})


def read_marc_official(path: str | Path, languages: list[str]) -> pd.DataFrame:
    """MARC as distributed: ``dataset_<lang>_{train,dev,test}.json`` (flat or in train/dev/test folders)."""
    root = check_root(path, "MARC")
    available = _marc_languages(root)
    if available:
        check_languages(languages, available, "marc", f" in {root}")
    parts = []
    for lang in languages:
        for split in SPLITS:
            name = f"dataset_{lang}_{split}.json"
            p = find_file(
                root,
                [f"{split}/{name}", name, f"json/{split}/{name}"],
                f"MARC {split} file for {lang!r}",
                "download the Multilingual Amazon Reviews Corpus JSON files and point data.path at their folder",
            )
            parts.append(read_marc_file(p, lang, split))
    return pd.concat(parts, ignore_index=True)


def read_official(task: str, path: str | Path, languages: list[str]) -> pd.DataFrame:
    readers = {"xnli": read_xnli_official, "pawsx": read_pawsx_official, "marc": read_marc_official}
    if task not in readers:
        raise LingtraceError(
            f"task {task!r} has no official distribution files",
            f"use data.source=official with {', '.join(readers)}",
        )
    return readers[task](path, languages)
