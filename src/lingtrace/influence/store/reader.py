"""Reading a score store: ``load_scores`` and the memory-mapped ``InfluenceScores`` view."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lingtrace.config.influence import DEFAULT_METHOD
from lingtrace.errors import LingtraceError
from lingtrace.influence.plan import GROUP_PREFIX, SCORES
from lingtrace.influence.store.files import TEST_UIDS, TRAIN_UIDS, epoch_file, mmap_tensor, tensor_names
from lingtrace.influence.store.meta import StoreMeta, read_meta
from lingtrace.io import read_json
from lingtrace.run import has_store

#: memory for one float64 block of rows when summing over checkpoints
BLOCK_BYTES = 64 << 20


@dataclass
class InfluenceScores:
    """A read view of a score store. Matrices are [test x train], memory-mapped float32."""

    directory: Path
    info: StoreMeta
    epochs: list[int]
    train_uids: list[str]
    test_uids: list[str]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        """``meta.json`` as a mapping (``info`` is the typed form)."""
        if "meta" not in self._cache:
            self._cache["meta"] = self.info.to_dict()
        return self._cache["meta"]

    @property
    def method(self) -> str:
        return self.info.method

    @property
    def mode(self) -> str:
        return self.info.mode

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.test_uids), len(self.train_uids)

    def epoch(self, e: int, name: str = SCORES) -> np.ndarray:
        """The [test x train] matrix of checkpoint ``e`` (``name``: "scores" or "group.<g>")."""
        if e not in self.epochs:
            raise LingtraceError(f"no influence scores for epoch {e}", f"available epochs: {self.epochs}")
        key = (e, name)
        if key not in self._cache:
            arr = mmap_tensor(epoch_file(self.directory, e), name)
            if name in (SCORES,) or name.startswith(GROUP_PREFIX):
                if arr.shape != self.shape:
                    raise LingtraceError(
                        f"{epoch_file(self.directory, e)}: {name} has shape {arr.shape}, expected {self.shape}",
                        "rerun `lingtrace influence RUN --overwrite`",
                    )
            self._cache[key] = arr
        return self._cache[key]

    @property
    def per_epoch(self) -> dict[int, np.ndarray]:
        return {e: self.epoch(e) for e in self.epochs}

    def blocks(self, name: str = SCORES, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float64 block of rows) of the matrix summed over checkpoints, one block in memory at a time.

        The blockwise reader for stores larger than memory: ``block_rows`` defaults to blocks of
        about 64 MiB.
        """
        n_test, n_train = self.shape
        step = block_rows or int(max(1, BLOCK_BYTES // (8 * max(1, n_train))))
        mats = [self.epoch(e, name) for e in self.epochs]
        for start in range(0, n_test, step):
            out = np.array(mats[0][start : start + step], dtype=np.float64)
            for m in mats[1:]:
                out += m[start : start + step]
            yield start, out

    def total(self, rows: slice | np.ndarray | None = None, *, dtype=np.float64, out: np.ndarray | None = None, name: str = SCORES) -> np.ndarray:
        """The summed score over checkpoints [test x train] (``rows``: some test rows only).

        Summed block by block in float64 into the result: the memory it takes is the result
        (``dtype``, float64 by default: 8 bytes per pair, twice one epoch file; ``np.float32`` halves
        it) plus one block. ``out`` writes into a given array instead, e.g. a memory-mapped file
        (``np.lib.format.open_memmap(path, "w+", np.float32, scores.shape)``), so nothing of the
        matrix's size is held in memory. ``blocks()`` reads the sum block by block without a result.
        """
        if rows is not None:
            part = None
            for e in self.epochs:
                block = np.asarray(self.epoch(e, name)[rows], dtype=np.float64)
                part = block.copy() if part is None else part + block
            if out is not None:
                out[...] = part
                return out
            return part.astype(dtype, copy=False)
        if out is None:
            out = np.empty(self.shape, dtype=dtype)
        elif tuple(out.shape) != self.shape:
            raise ValueError(f"total(out=...) needs shape {self.shape}, got {tuple(out.shape)}")
        for start, block in self.blocks(name):
            out[start : start + len(block)] = block
        return out

    @property
    def groups(self) -> list[str]:
        if not self.epochs:
            return []
        names = tensor_names(epoch_file(self.directory, self.epochs[0]))
        return sorted(n[len(GROUP_PREFIX):] for n in names if n.startswith(GROUP_PREFIX))

    def group_total(self, group: str, **kwargs) -> np.ndarray:
        """Summed (over checkpoints) contribution of one parameter group; float64 (see ``total``)."""
        return self.total(name=GROUP_PREFIX + group, **kwargs)


def _root(where) -> Path:
    return where.root if hasattr(where, "influence_dir") else Path(where)  # a RunDir, or a path


def store_directory(where, method: str | None = None) -> Path:
    """The store directory of ``where``: a run (``RunDir`` or its path; the store of ``method``, by
    default tracin's, see ``RunDir.influence_store``) or a store directory itself."""
    from lingtrace.run import RunDir

    root = _root(where)
    run_store = RunDir(root).influence_store(method or DEFAULT_METHOD)
    if has_store(run_store) or not has_store(root):
        return run_store
    return root


def load_scores(where, require_complete: bool = True, method: str | None = None) -> InfluenceScores:
    """Open a score store: of a run directory (``RunDir`` or path; ``method`` picks the method, default
    ``tracin``) or a store directory."""
    directory = store_directory(where, method)
    if not has_store(directory):
        which = f" of method {method!r}" if method else ""
        raise LingtraceError(f"no influence scores{which} in {_root(where)}", "run `lingtrace influence RUN` first")
    meta = read_meta(directory)
    if require_complete and not meta.complete:
        raise LingtraceError(f"the influence scores in {directory} are incomplete", "rerun `lingtrace influence RUN` to finish them")
    train_uids = read_json(directory / TRAIN_UIDS)
    test_uids = read_json(directory / TEST_UIDS)
    return InfluenceScores(directory, meta, meta.done_epochs, train_uids, test_uids)
