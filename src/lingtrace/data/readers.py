"""Readers: official distribution files, generic local tables, the Hugging Face hub, the embedded data.

Every reader returns one DataFrame with the columns ``lang, translation_id, text_a, text_b, label,
split`` (``translation_id`` and the texts as strings, ``text_b`` empty for single texts, ``label`` an
int class index, ``split`` one of train/dev/test). :func:`load_task` dispatches on ``data.task`` and
``data.source``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lingtrace.config import DataConfig
from lingtrace.data.emoji import emoji_label_names, read_emoji
from lingtrace.data.schema import LABEL, LANG, SPLIT, TEXT_A, TEXT_B, TRANSLATION_ID
from lingtrace.data.tasks import TASK_SOURCES, TASKS, TaskSpec, get_task
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
_INT_RE = re.compile(r"^\s*-?\d+(\.0+)?\s*$")


# ---------------------------------------------------------------- helpers


def _check_root(path: str | Path | None, what: str) -> Path:
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


def _find_file(root: Path, candidates: list[str], what: str, fix: str) -> Path:
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


def _require_columns(found: Iterable[str], needed: Iterable[str], where: str) -> None:
    found = list(found)
    for col in needed:
        if col not in found:
            raise LingtraceError(
                f"column {col!r} missing in {where}; columns found: {', '.join(map(str, found)) or '(none)'}",
                "point data.path at the file as distributed, or map your columns with data.columns",
            )


def _check_languages(languages: list[str], available: Iterable[str], task: str, where: str = "") -> None:
    available = sorted(set(available))
    for lang in languages:
        if lang not in available:
            raise LingtraceError(
                f"language {lang!r} is not available for task {task}{where}",
                f"choose data.languages from {', '.join(available) or '(none found)'}",
            )


def _frame(
    lang: str | list, tid: Iterable, a: Iterable, b: Iterable | None, label: Iterable, split: str | list
) -> pd.DataFrame:
    df = pd.DataFrame({TRANSLATION_ID: list(tid), TEXT_A: list(a), LABEL: list(label)})
    df[TEXT_B] = "" if b is None else list(b)
    df[LANG] = lang
    df[SPLIT] = split
    return df[FRAME_COLUMNS]


def _read_tsv_quote_none(path: Path) -> pd.DataFrame:
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


# ---------------------------------------------------------------- official files: XNLI


def _xnli_train_file(root: Path, lang: str) -> Path:
    name = f"multinli.train.{lang}.tsv"
    return _find_file(
        root,
        [f"XNLI-MT-1.0/multinli/{name}", f"multinli/{name}", name],
        f"XNLI-MT training file for {lang!r}",
        "download XNLI-MT-1.0.zip from https://github.com/facebookresearch/XNLI, unzip it below data.path",
    )


def _xnli_eval_file(root: Path, split: str) -> Path:
    name = f"xnli.{split}.tsv"
    return _find_file(
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
        _require_columns(header, ["premise", "hypo", "label"], str(path))
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
    return _frame(lang, tids, a, b, labels, "train")


def read_xnli_eval_file(path: Path, split: str, languages: list[str]) -> pd.DataFrame:
    """XNLI-1.0 ``xnli.dev.tsv``/``xnli.test.tsv`` (all languages in one file); id = pairID."""
    df = _read_tsv_quote_none(path)
    _require_columns(df.columns, ["language", "gold_label", "sentence1", "sentence2", "pairID"], str(path))
    _check_languages(languages, df["language"].unique(), "xnli", f" in {path}")
    df = df[df["language"].isin(languages)]
    labels = [_xnli_label(v, str(path)) for v in df["gold_label"]]
    return _frame(list(df["language"]), df["pairID"], df["sentence1"], df["sentence2"], labels, split)


def read_xnli_official(path: str | Path, languages: list[str]) -> pd.DataFrame:
    """XNLI as distributed: XNLI-MT-1.0 (machine-translated training data) and XNLI-1.0 (dev/test)."""
    root = _check_root(path, "XNLI")
    available = _xnli_train_languages(root)
    if available:
        _check_languages(languages, available, "xnli", f" in {root} (XNLI-MT training files)")
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
    df = _read_tsv_quote_none(path)
    _require_columns(df.columns, ["id", "sentence1", "sentence2", "label"], str(path))
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
    return _frame(lang, df["id"].str.strip(), df["sentence1"], df["sentence2"], labels, split)


def read_pawsx_official(path: str | Path, languages: list[str]) -> pd.DataFrame:
    """PAWS-X as distributed: ``x-final/<lang>/{translated_train,dev_2k,test_2k}.tsv`` (English: train.tsv)."""
    root = _check_root(path, "PAWS-X")
    parts = []
    for lang in languages:
        d = _pawsx_lang_dir(root, lang)
        if d is None:
            found = _pawsx_languages(root)
            if found:
                _check_languages([lang], found, "pawsx", f" in {root}")
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
            _require_columns(
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
    return _frame(lang, tids, a, b, labels, split)


def _marc_languages(root: Path) -> list[str]:
    pat = re.compile(r"^dataset_([A-Za-z_-]+)_train\.json$")
    if root.is_file():
        root = root.parent
    return sorted({m.group(1) for p in root.glob("**/dataset_*_train.json") if (m := pat.match(p.name))})


def read_marc_official(path: str | Path, languages: list[str]) -> pd.DataFrame:
    """MARC as distributed: ``dataset_<lang>_{train,dev,test}.json`` (flat or in train/dev/test folders)."""
    root = _check_root(path, "MARC")
    available = _marc_languages(root)
    if available:
        _check_languages(languages, available, "marc", f" in {root}")
    parts = []
    for lang in languages:
        for split in SPLITS:
            name = f"dataset_{lang}_{split}.json"
            p = _find_file(
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


# ---------------------------------------------------------------- generic local files


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".json":
            try:
                return pd.read_json(path, lines=True, dtype=False)
            except ValueError:
                return pd.read_json(path, dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except LingtraceError:
        raise
    except Exception as e:  # pandas/pyarrow raise many types for malformed files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LingtraceError(
            f"cannot read {path}: {msg}", "check the file's format matches its extension"
        ) from e
    raise LingtraceError(
        f"cannot read {path}: unknown file type {suffix or '(none)'}",
        f"use one of {', '.join(LOCAL_EXTENSIONS)}",
    )


def _local_files(root: Path) -> list[tuple[Path, str | None]]:
    """(file, split or None = from a split column / one pool)."""
    if root.is_file():
        return [(root, None)]
    found: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in LOCAL_EXTENSIONS and p.stem.lower() in SPLIT_ALIASES:
            split = SPLIT_ALIASES[p.stem.lower()]
            if split in found:
                raise LingtraceError(
                    f"two {split} files in {root}: {found[split].name} and {p.name}",
                    "keep one file per split",
                )
            found[split] = p
    if "train" not in found:
        raise LingtraceError(
            f"no training file in {root}: expected train.csv, train.tsv, train.jsonl or train.parquet "
            f"(and dev.*, test.*)",
            "put train/dev/test files in the folder, or point data.path at one file with a split column",
        )
    return [(found[s], s) for s in SPLITS if s in found]


def _blank(values: pd.Series) -> np.ndarray:
    """True where a cell is missing (None/NaN) or holds only whitespace."""
    return (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()


def drop_invalid_rows(
    frame: pd.DataFrame, label: str, texts: list[str], where: str, names: dict[str, str], drop: bool, row_numbers: bool
) -> pd.DataFrame:
    """``frame`` without the rows that have no label or no text at all; such rows stop ``prepare``
    with a one-line error unless ``drop`` (``data.drop_invalid``), which drops them and logs how many.

    ``label`` and ``texts`` are columns of ``frame`` (which also has ``lang`` and ``split``); ``names``
    gives the name each has in the user's data, ``where`` the file or data set; with ``row_numbers``
    the index is the 0-based data row of the file.
    """
    if frame.empty:
        return frame
    no_label = _blank(frame[label])
    no_text = np.logical_and.reduce([_blank(frame[c]) for c in texts])
    bad = no_label | no_text
    if not bad.any():
        return frame
    found = []
    for mask, what, cols in ((no_label, "an empty or missing label", [label]), (no_text, "no text", texts)):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            first = f"{frame[LANG].iloc[i]}, {frame[SPLIT].iloc[i]}"
            if row_numbers:
                first = f"data row {int(frame.index[i]) + 1}, {first}"
            columns = " and ".join(repr(names.get(c, c)) for c in cols)
            found.append(f"{int(mask.sum())} row(s) with {what} in column {columns} (first: {first})")
    problem = f"{where}: " + "; ".join(found)
    if not drop:
        raise LingtraceError(
            problem,
            "fill in or remove those rows, or set data.drop_invalid: true to drop them (the number dropped is logged)",
        )
    log.warning("%s; dropped %d row(s) (data.drop_invalid)", problem, int(bad.sum()))
    return frame[~bad]


def _labels_to_int(
    values: pd.Series, label_names: list[str] | None, aliases: dict[str, int] | None, where: str
) -> tuple[np.ndarray, list[str] | None]:
    """Class indices for ``values``; string labels mapped via ``label_names`` (or sorted distinct values)."""
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(int)
    if pd.api.types.is_numeric_dtype(values):
        arr = values.to_numpy()
        if values.isna().any() or not np.all(np.mod(arr, 1) == 0):
            raise LingtraceError(
                f"labels in {where} must be whole class indices or label names (found a missing or fractional one)",
                "fix the label column, or map another one with data.columns.label",
            )
        return arr.astype("int64"), label_names
    s = values.astype(str).str.strip()
    if s.map(lambda v: bool(_INT_RE.match(v))).all():
        return s.astype(float).astype("int64").to_numpy(), label_names
    mapping: dict[str, int] = {}
    if label_names is not None:
        mapping.update({str(n): i for i, n in enumerate(label_names)})
    if aliases:
        mapping.update(aliases)
    if not mapping:
        label_names = sorted(s.unique())
        mapping = {n: i for i, n in enumerate(label_names)}
    unknown = sorted(set(s.unique()) - set(mapping))
    if unknown:
        raise LingtraceError(
            f"label {unknown[0]!r} in {where} is outside the label set {sorted(mapping)}",
            "fix the labels or list every label in data.label_names",
        )
    return s.map(mapping).to_numpy().astype("int64"), label_names


def read_local(
    path: str | Path,
    columns: dict[str, str] | None,
    languages: list[str] | None,
    label_names: list[str] | None = None,
    task: TaskSpec | None = None,
    drop_invalid: bool = False,
) -> tuple[pd.DataFrame, TaskSpec]:
    """CSV/TSV/JSONL/Parquet: one file (with a split column, or one pool) or a folder of train/dev/test files.

    ``columns`` maps lingtrace names (text_a, text_b, label, lang, translation_id, split) to the file's
    columns; unmapped names are looked up under their own name. Returns the frame and the task spec with
    its labels (and ``parallel`` set when the data has translation ids, for the ``local`` task). A row
    with an empty label or no text is an error naming the file (dropped with ``drop_invalid``), so an
    empty cell never becomes a class. ``languages=None`` takes every language of the data (which then
    needs a language column).
    """
    task = task or TASKS["local"]
    columns = dict(columns or {})
    for key in columns:
        if key not in LOCAL_COLUMNS:
            raise LingtraceError(
                f"data.columns has unknown key {key!r}",
                f"map any of {', '.join(LOCAL_COLUMNS)} to your file's columns",
            )
    root = _check_root(path, "data.source=local")
    tables = []
    for file, split in _local_files(root):
        df = _read_table(file)
        found = [str(c) for c in df.columns]
        for key in (TEXT_A, LABEL):
            col = columns.get(key, key)
            if col not in found:
                how = (
                    f"mapped from {key}"
                    if key in columns
                    else f"needed for {key}; map yours with data.columns.{key}=NAME"
                )
                raise LingtraceError(
                    f"column {col!r} ({how}) not found in {file}; columns found: {', '.join(found)}",
                    f"set data.columns.{key} to one of the columns found",
                )
        for key in (TEXT_B, LANG, TRANSLATION_ID, SPLIT):
            if key in columns and columns[key] not in found:
                raise LingtraceError(
                    f"column {columns[key]!r} (mapped from {key}) not found in {file}; columns found: {', '.join(found)}",
                    f"set data.columns.{key} to one of the columns found, or remove it",
                )
        out = pd.DataFrame(index=df.index)
        out[TEXT_A] = df[columns.get(TEXT_A, TEXT_A)]
        out["_label"] = df[columns.get(LABEL, LABEL)]
        bcol = columns.get(TEXT_B, TEXT_B)
        out[TEXT_B] = df[bcol] if bcol in found else ""
        lcol = columns.get(LANG, LANG)
        if lcol in found:
            out[LANG] = df[lcol].astype(str).str.strip()
        elif languages is not None and len(languages) == 1:
            out[LANG] = languages[0]
        else:
            raise LingtraceError(
                f"no language column in {file} (looked for {lcol!r}); columns found: {', '.join(found)}",
                "map it with data.columns.lang=NAME (a file without one can only serve a single data.languages entry)",
            )
        tcol = columns.get(TRANSLATION_ID, TRANSLATION_ID)
        has_tid = tcol in found
        if has_tid:
            out[TRANSLATION_ID] = df[tcol].astype(str).str.strip()
        else:
            out[TRANSLATION_ID] = [f"{split or 'row'}-{i}" for i in range(len(df))]
        scol = columns.get(SPLIT, SPLIT)
        if split is not None:
            out[SPLIT] = split
        elif scol in found:
            raw = df[scol].astype(str).str.strip().str.lower()
            bad = sorted(set(raw.unique()) - set(SPLIT_ALIASES))
            if bad:
                raise LingtraceError(
                    f"split value {bad[0]!r} in {file} column {scol!r} is not train, dev/validation or test",
                    "use train, dev (or validation) and test as split values",
                )
            out[SPLIT] = raw.map(SPLIT_ALIASES)
        else:
            out[SPLIT] = "train"  # one pool: sampling carves disjoint dev/test pools out of it
        out["_file"] = str(file)
        # only the rows of data.languages are used (and checked); the others are dropped later
        names = {key: columns.get(key, key) for key in (TEXT_A, TEXT_B)} | {"_label": columns.get(LABEL, LABEL)}
        used = out[LANG].isin(languages) if languages is not None else pd.Series(True, index=out.index)
        checked = drop_invalid_rows(out[used], "_label", [TEXT_A, TEXT_B], str(file), names, drop_invalid, True)
        out = pd.concat([checked, out[~used]]).sort_index()
        tables.append((out, has_tid))
    df = pd.concat([t for t, _ in tables], ignore_index=True)
    if languages is not None:
        _check_languages(
            languages, df[LANG].unique(), task.name, f" in {root} (column {columns.get(LANG, LANG)!r})"
        )
    # translations can only be aligned through a translation id column
    parallel = all(h for _, h in tables) and (task.parallel or task.name == "local")

    if task.name == "local":
        names = list(label_names) if label_names is not None else None
        labels, names = _labels_to_int(df["_label"], names, None, str(root))
        if names is None:
            names = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
        spec = task.with_labels(names).replace(
            parallel=parallel, pair=bool((df[TEXT_B].fillna("").astype(str).str.strip() != "").any())
        )
    else:
        aliases = XNLI_LABELS if task.name == "xnli" else None
        labels, _ = _labels_to_int(df["_label"], list(task.label_names), aliases, str(root))
        spec = task.replace(parallel=parallel)
    df[LABEL] = labels
    return df[FRAME_COLUMNS], spec


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
        _require_columns(cols, ["premise", "hypothesis", "label"], where)
        df = df[df["label"].isin([0, 1, 2])]  # -1 marks unlabelled rows in some versions
        labels = (df["label"] == 0).astype(int)  # 0 = entailment in facebook/xnli
        tid = df.index.astype(str)  # row order is aligned across languages
        return _frame(lang, tid, df["premise"], df["hypothesis"], labels, split)
    if task == "pawsx":
        _require_columns(cols, ["id", "sentence1", "sentence2", "label"], where)
        df = df[
            (df["sentence1"].astype(str).str.strip() != "") & (df["sentence2"].astype(str).str.strip() != "")
        ]
        df = df[df["label"].isin([0, 1])]
        return _frame(
            lang, df["id"].astype(str), df["sentence1"], df["sentence2"], df["label"].astype(int), split
        )
    if task == "marc":
        if "stars" in cols:
            stars = df["stars"].astype(int)
        else:
            _require_columns(cols, ["label"], where)
            stars = df["label"].astype(int) + 1  # mteb/amazon_reviews_multi: label = stars - 1
        labels = stars.map(marc_stars_to_label)
        keep = labels.notna()
        df, labels = df[keep], labels[keep].astype(int)
        if "review_title" in cols and "review_body" in cols:
            a, b = df["review_title"].astype(str), df["review_body"].astype(str)
        else:
            _require_columns(cols, ["text"], where)
            # mteb joins title and body with a blank line
            parts = df["text"].astype(str).str.split("\n\n", n=1, expand=True)
            if parts.shape[1] == 1:
                parts[1] = None
            a, b = parts[0], parts[1].fillna("")
        idcol = "review_id" if "review_id" in cols else ("id" if "id" in cols else None)
        tid = df[idcol].astype(str) if idcol else df.index.astype(str)
        return _frame(lang, tid, a, b, labels, split)
    raise LingtraceError(f"task {task!r} has no hub dataset", "use data.source=local or official")


def read_hub(task: TaskSpec, languages: list[str]) -> pd.DataFrame:
    """``datasets.load_dataset(task.hub_name, lang)`` for each language, converted to the frame layout."""
    if not task.hub_name:
        raise LingtraceError(
            f"task {task.name!r} has no hub dataset", f"use data.source={task.default_source}"
        )
    if task.languages:
        _check_languages(languages, task.languages, task.name, f" on the hub ({task.hub_name})")
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


# ---------------------------------------------------------------- dispatch


def finalize_frames(
    frames: pd.DataFrame, task: TaskSpec, languages: list[str], drop_invalid: bool = False
) -> pd.DataFrame:
    """Normalise dtypes, keep ``languages``, and check labels, texts, splits and per-language counts."""
    _require_columns(frames.columns, FRAME_COLUMNS, "the task data")
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
