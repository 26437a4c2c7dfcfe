"""Shared pieces of the analyses: direction names, metadata alignment, language order, "not applicable",
and matrix views that read a (memory-mapped) score store block by block."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

#: the top-k most positively influential training examples (largest scores): "proponents"
POSITIVE = "positive"
#: the top-k most negatively influential training examples (smallest scores): "opponents"
NEGATIVE = "negative"
DIRECTIONS = (POSITIVE, NEGATIVE)
#: the value of a language column that aggregates over all languages
ALL = "all"
#: the ``epoch`` value of rows computed on the summed TracIn score (the sum over all checkpoints);
#: checkpoints themselves are numbered from 1
SUMMED = 0
#: how the two texts of a sentence-pair example are joined for display
PAIR_SEPARATOR = " [SEP] "


class NotApplicable(Exception):
    """An analysis that does not apply to this run (e.g. translation overlap on a non-parallel task).

    ``str(exc)`` is the plain-language note the stage records and the report shows.
    """


def language_order(preferred: Iterable[str] | None, *present: Iterable[str]) -> list[str]:
    """Languages in ``preferred`` order (config order) that are present, then the other present ones sorted."""
    seen: set[str] = set()
    for p in present:
        seen.update(str(x) for x in p)
    out = [lang for lang in (preferred or []) if lang in seen]
    return out + sorted(seen - set(out))


def as_lang_array(langs) -> np.ndarray:
    return np.asarray([str(x) for x in langs], dtype=object)


def example_text(text_a: str, text_b: str | None = None) -> str:
    """One display string for an example (``text_a [SEP] text_b`` for sentence pairs)."""
    a = "" if text_a is None else str(text_a)
    b = "" if text_b is None or (isinstance(text_b, float) and np.isnan(text_b)) else str(text_b)
    return f"{a}{PAIR_SEPARATOR}{b}" if b else a


class MatrixLike(Protocol):
    """What the analyses need of a [test x train] score matrix: its shape and row slicing."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, rows: slice) -> np.ndarray: ...


class SummedMatrix:
    """The element-wise sum of several [test x train] matrices, read lazily row block by row block.

    ``SummedMatrix([store.epoch(e) for e in store.epochs])`` is the summed TracIn score without ever
    holding more than one block of rows of it in memory (float64).
    """

    def __init__(self, parts: Sequence[MatrixLike]):
        if not parts:
            raise ValueError("SummedMatrix needs at least one matrix")
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"SummedMatrix: matrices of different shapes {sorted(shapes)}")
        self.parts = list(parts)
        self.shape = tuple(parts[0].shape)

    def __getitem__(self, rows) -> np.ndarray:
        out = np.array(self.parts[0][rows], dtype=np.float64)
        for p in self.parts[1:]:
            out += np.asarray(p[rows], dtype=np.float64)
        return out


#: memory for one float64 block of rows (the block size adapts to the number of training examples)
BLOCK_BYTES = 64 << 20


def block_rows_for(n_cols: int, budget: int = BLOCK_BYTES) -> int:
    """Rows per block so that one float64 block of ``n_cols`` columns stays within ``budget`` bytes (1 to 256)."""
    return int(max(1, min(256, budget // (8 * max(1, int(n_cols))))))


def row_blocks(matrix: MatrixLike, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float64 block) over the rows of a [test x train] matrix."""
    block_rows = block_rows or block_rows_for(matrix.shape[1])
    for start in range(0, matrix.shape[0], block_rows):
        yield start, np.asarray(matrix[start : start + block_rows], dtype=np.float64)


def one_hot(labels: Sequence[str], order: Sequence[str]) -> np.ndarray:
    """[len(labels) x len(order)] float64 indicator matrix of each label's position in ``order``."""
    pos = {v: i for i, v in enumerate(order)}
    out = np.zeros((len(labels), len(order)), dtype=np.float64)
    for i, v in enumerate(labels):
        j = pos.get(str(v))
        if j is not None:
            out[i, j] = 1.0
    return out


def sort_table(
    frame: pd.DataFrame, test_order: Sequence[str] | None = None, train_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows in a stable reading order: epoch, direction (positive first), test and training language order."""
    orders: dict[str, dict] = {"direction": {d: i for i, d in enumerate(DIRECTIONS)}}
    if test_order is not None:
        orders["test_lang"] = {v: i for i, v in enumerate(test_order)}
    if train_order is not None:
        orders["train_lang"] = {v: i for i, v in enumerate(train_order)}
    by = [c for c in ("measure", "epoch", "direction", "test_lang", "train_lang", "epoch_a", "epoch_b") if c in frame.columns]
    by = [c for c in by if c not in ("test_lang", "train_lang") or c in orders]
    if not by or frame.empty:
        return frame.reset_index(drop=True)

    def key(s: pd.Series) -> pd.Series:
        if s.name in orders:
            return s.map(orders[s.name]).fillna(len(orders[s.name]))
        return s

    return frame.sort_values(by, key=key, kind="stable").reset_index(drop=True)


def describe(values: np.ndarray) -> dict[str, float]:
    """mean, std (population), min, q25, median, q75, max of a non-empty array (float64)."""
    v = np.asarray(values, dtype=np.float64)
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "q25": float(q25),
        "median": float(median),
        "q75": float(q75),
        "max": float(v.max()),
    }
