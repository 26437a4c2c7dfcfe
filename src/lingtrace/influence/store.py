"""The TracIn score store in ``RUN/influence/``.

Layout::

    meta.json               mode, epochs, parameter selection, groups, dtype, projection, sizes,
                            the fingerprint of the config that made it, and ``complete``
    train_uids.json         uid of every column (training example), in order
    test_uids.json          uid of every row (selected test example), in order
    epoch-K.safetensors     "scores": float32 [test x train] for checkpoint K (already mode-normalised:
                            cosine / dot / train-normalised, lr-weighted when asked);
                            "group.<name>": the same matrix restricted to one parameter group, so the
                            groups sum to "scores" (present when the breakdown was asked for);
                            "test_norm" [test], "train_norm" [train]: gradient norms at checkpoint K

The summed TracIn score is the sum of the per-epoch matrices. Files are written atomically; a reader
only trusts epochs listed in ``meta.json`` (``complete`` is true once every epoch is written).
Matrices are memory-mapped, so a store larger than memory can be read block by block.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from lingtrace.errors import LingtraceError
from lingtrace.io import atomic_path, read_json, write_json

META = "meta.json"
TRAIN_UIDS = "train_uids.json"
TEST_UIDS = "test_uids.json"
SCORES = "scores"
GROUP_PREFIX = "group."
#: parameter group of the word-embedding matrix in the breakdown
WORD_EMBEDDINGS = "word_embeddings"

_NP_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def epoch_file(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch}.safetensors"


def write_epoch(directory: str | Path, epoch: int, tensors: dict[str, np.ndarray]) -> Path:
    """Atomically write one checkpoint's matrices (``scores`` required)."""
    if SCORES not in tensors:
        raise ValueError("write_epoch needs a 'scores' matrix")
    path = epoch_file(directory, epoch)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp))
    return path


def write_axes(directory: str | Path, train_uids: list[str], test_uids: list[str]) -> None:
    write_json(Path(directory) / TRAIN_UIDS, [str(u) for u in train_uids])
    write_json(Path(directory) / TEST_UIDS, [str(u) for u in test_uids])


def _header(path: Path) -> tuple[dict[str, Any], int]:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except FileNotFoundError as e:
        raise LingtraceError(f"missing score file {path}", "rerun `lingtrace influence RUN`") from e
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise LingtraceError(f"{path} is not a readable safetensors file", "delete it and rerun `lingtrace influence RUN`") from e
    return header, 8 + n


def tensor_names(path: str | Path) -> list[str]:
    header, _ = _header(Path(path))
    return [k for k in header if k != "__metadata__"]


def mmap_tensor(path: str | Path, name: str) -> np.ndarray:
    """Memory-map one tensor of a safetensors file (read-only, no copy)."""
    path = Path(path)
    header, base = _header(path)
    if name not in header:
        raise LingtraceError(f"{path} has no tensor {name!r}", "rerun `lingtrace influence RUN` (with influence.breakdown=true for groups)")
    info = header[name]
    dtype = _NP_DTYPES.get(info["dtype"])
    if dtype is None:
        raise LingtraceError(f"{path}: unsupported dtype {info['dtype']}", "rerun `lingtrace influence RUN`")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if int(np.prod(shape)) * np.dtype(dtype).itemsize != end - start:
        raise LingtraceError(f"{path} is damaged ({name} has the wrong size)", "delete it and rerun `lingtrace influence RUN`")
    if path.stat().st_size < base + end:
        raise LingtraceError(f"{path} is truncated", "delete it and rerun `lingtrace influence RUN`")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=shape)


@dataclass
class InfluenceScores:
    """A read view of a score store. Matrices are [test x train], memory-mapped float32."""

    directory: Path
    meta: dict[str, Any]
    epochs: list[int]
    train_uids: list[str]
    test_uids: list[str]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def mode(self) -> str:
        return self.meta.get("mode", "cosine")

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

    def total(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """The summed TracIn score (over checkpoints), optionally for some test rows only; float64."""
        out = None
        for e in self.epochs:
            m = self.epoch(e)
            part = np.asarray(m if rows is None else m[rows], dtype=np.float64)
            out = part.copy() if out is None else out + part
        return out

    @property
    def groups(self) -> list[str]:
        if not self.epochs:
            return []
        names = tensor_names(epoch_file(self.directory, self.epochs[0]))
        return sorted(n[len(GROUP_PREFIX):] for n in names if n.startswith(GROUP_PREFIX))

    def group_total(self, group: str) -> np.ndarray:
        """Summed (over checkpoints) contribution of one parameter group; float64."""
        return sum(np.asarray(self.epoch(e, GROUP_PREFIX + group), dtype=np.float64) for e in self.epochs)


def load_scores(where, require_complete: bool = True) -> InfluenceScores:
    """Open the score store of a run directory (``RunDir`` or path) or a store directory."""
    root = Path(getattr(where, "root", where))
    directory = root / "influence" if (root / "influence" / META).exists() or not (root / META).exists() else root
    if not (directory / META).exists():
        raise LingtraceError(f"no influence scores in {root}", "run `lingtrace influence RUN` first")
    meta = read_json(directory / META)
    if require_complete and not meta.get("complete"):
        raise LingtraceError(f"the influence scores in {directory} are incomplete", "rerun `lingtrace influence RUN` to finish them")
    train_uids = read_json(directory / TRAIN_UIDS)
    test_uids = read_json(directory / TEST_UIDS)
    epochs = [int(e) for e in meta.get("epochs_done", meta.get("epochs", []))]
    return InfluenceScores(directory, meta, epochs, train_uids, test_uids)
