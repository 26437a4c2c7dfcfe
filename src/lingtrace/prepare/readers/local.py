"""Generic local tables (CSV, TSV, JSONL, Parquet; one file with a split column or a folder of train/dev/test files) with a column mapping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lingtrace.data.schema import LABEL, LANG, SPLIT, TEXT_A, TEXT_B, TRANSLATION_ID
from lingtrace.data.tasks import TASKS, TaskSpec
from lingtrace.errors import LingtraceError
from lingtrace.prepare.readers.common import (
    FRAME_COLUMNS,
    INT_RE,
    LOCAL_COLUMNS,
    LOCAL_EXTENSIONS,
    SPLIT_ALIASES,
    SPLITS,
    XNLI_LABELS,
    check_languages,
    check_root,
)

log = logging.getLogger(__name__)


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
    if s.map(lambda v: bool(INT_RE.match(v))).all():
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
    root = check_root(path, "data.source=local")
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
        check_languages(
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
