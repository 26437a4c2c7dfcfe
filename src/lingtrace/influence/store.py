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

    parts/                  work in progress: one file per (epoch, test chunk, training shard), the
                            unit of resumption (and of distribution across ranks); merged into
                            epoch-K.safetensors when an epoch is complete, then deleted

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


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}


def write_streaming(path: str | Path, specs: dict[str, tuple[tuple[int, ...], Any]], fill) -> Path:
    """Atomically write a safetensors file whose tensors are produced block by block.

    ``specs`` maps each tensor name to (shape, numpy dtype); ``fill(name, write)`` must call
    ``write(array)`` with consecutive C-order pieces (e.g. row blocks) that together make the tensor.
    Nothing larger than one piece is held in memory.
    """
    path = Path(path)
    header: dict[str, Any] = {}
    offset = 0
    sizes = {}
    for name, (shape, dtype) in specs.items():
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        header[name] = {"dtype": _ST_DTYPES[dt], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        sizes[name] = (nbytes, dt)
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with atomic_path(path, suffix=".safetensors") as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in specs:
            nbytes, dt = sizes[name]
            written = [0]

            def write(arr, _dt=dt, _w=written):
                a = np.ascontiguousarray(arr, dtype=_dt)
                f.write(a.tobytes())
                _w[0] += a.nbytes

            fill(name, write)
            if written[0] != nbytes:
                raise ValueError(f"write_streaming: {name} got {written[0]} bytes, expected {nbytes}")
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
    root = where.root if hasattr(where, "influence_dir") else Path(where)  # a RunDir, or a path
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


# ---------------------------------------------------------------- writing (resumable)

PARTS = "parts"


def part_file(directory: str | Path, epoch: int, chunk: int, shard: int) -> Path:
    return Path(directory) / PARTS / f"epoch-{epoch}.chunk-{chunk}.shard-{shard}.safetensors"


class StoreWriter:
    """The on-disk sink of ``TracIn.run``: one part file per (epoch, chunk, shard), merged into
    ``epoch-K.safetensors`` once an epoch's parts are all there.

    A store made with the same ``fingerprint`` is resumed (its saved plan is followed and its finished
    parts are kept); one made with a different fingerprint is refused unless ``overwrite``, which
    clears it. ``assemble=False`` (ranks other than 0 in a distributed run) only writes parts.
    """

    def __init__(
        self,
        directory: str | Path,
        fingerprint: str,
        meta: dict[str, Any],
        train_uids: list[str],
        test_uids: list[str],
        overwrite: bool = False,
        assemble: bool = True,
    ):
        from lingtrace.influence.tracin import Plan

        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.assemble = assemble
        self.n_train, self.n_test = len(train_uids), len(test_uids)
        self.plan = None
        meta_path = self.directory / META
        old = read_json(meta_path) if meta_path.exists() else None
        if old is not None and old.get("fingerprint") != fingerprint:
            if not overwrite:
                raise LingtraceError(
                    f"{self.directory} holds influence scores made with a different config or data",
                    "use a new run directory, or pass --overwrite to recompute them",
                )
            if assemble:
                self.clear()
            old = None
        if old is not None and old.get("plan"):
            self.plan = Plan.from_dict(old["plan"])
            self.meta = old
        else:
            self.meta = {**meta, "fingerprint": fingerprint, "complete": False, "epochs_done": [], "n_train": self.n_train, "n_test": self.n_test}
        if assemble and old is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_axes(self.directory, train_uids, test_uids)
            write_json(meta_path, self.meta)

    def clear(self) -> None:
        import shutil

        if self.directory.exists():
            for p in self.directory.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    # -- the sink protocol ---------------------------------------------------------
    def begin(self, plan) -> None:
        self.plan = plan
        if self.assemble:
            self.meta["plan"] = plan.to_dict()
            write_json(self.directory / META, self.meta)

    def _epoch_complete(self, epoch: int) -> bool:
        return epoch in self.meta.get("epochs_done", []) and epoch_file(self.directory, epoch).exists()

    def is_done(self, epoch: int, chunk: int, shard: int) -> bool:
        if self._epoch_complete(epoch):
            return True
        path = part_file(self.directory, epoch, chunk, shard)
        if not path.exists():
            return False
        try:
            names = tensor_names(path)
            mmap_tensor(path, SCORES)
        except LingtraceError:
            path.unlink(missing_ok=True)  # damaged: recompute that unit
            return False
        return SCORES in names

    def put(self, part) -> None:
        tensors = dict(part.matrices)
        tensors["test_norm"] = np.asarray(part.test_norm, dtype=np.float64)
        tensors["train_norm"] = np.asarray(part.train_norm, dtype=np.float64)
        path = part_file(self.directory, part.epoch, part.chunk, part.shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))

    def parts_complete(self, epoch: int) -> bool:
        return all(
            part_file(self.directory, epoch, c, s).exists()
            for c in range(len(self.plan.chunks))
            for s in range(len(self.plan.shards))
        )

    def epoch_done(self, epoch: int) -> None:
        if not self.assemble or self._epoch_complete(epoch) or not self.parts_complete(epoch):
            return
        self.merge(epoch)

    def merge(self, epoch: int, block_rows: int = 256) -> None:
        """Merge an epoch's parts into ``epoch-K.safetensors`` (streamed, row blocks), then drop them."""
        plan = self.plan
        parts = {(c, s): part_file(self.directory, epoch, c, s) for c in range(len(plan.chunks)) for s in range(len(plan.shards))}
        names = [n for n in tensor_names(parts[(0, 0)]) if n not in ("test_norm", "train_norm")]
        dtype = mmap_tensor(parts[(0, 0)], SCORES).dtype
        specs: dict[str, tuple[tuple[int, ...], Any]] = {n: ((self.n_test, self.n_train), dtype) for n in names}
        specs["test_norm"] = ((self.n_test,), np.float64)
        specs["train_norm"] = ((self.n_train,), np.float64)

        def fill(name, write):
            if name == "test_norm":
                for c in range(len(plan.chunks)):
                    write(mmap_tensor(parts[(c, 0)], name))
                return
            if name == "train_norm":
                for s in range(len(plan.shards)):
                    write(mmap_tensor(parts[(0, s)], name))
                return
            for c, (r0, r1) in enumerate(plan.chunks):
                mats = [mmap_tensor(parts[(c, s)], name) for s in range(len(plan.shards))]
                for a in range(0, r1 - r0, block_rows):
                    write(np.concatenate([m[a : a + block_rows] for m in mats], axis=1))

        write_streaming(epoch_file(self.directory, epoch), specs, fill)
        done = sorted(set(self.meta.get("epochs_done", [])) | {epoch})
        self.meta["epochs_done"] = done
        self.meta["complete"] = all(e in done for e in self.meta.get("epochs", []))
        write_json(self.directory / META, self.meta)
        for p in parts.values():
            p.unlink(missing_ok=True)

    def finish(self, stats: dict[str, Any] | None = None) -> None:
        if not self.assemble:
            return
        if stats:
            self.meta["stats"] = stats
        self.meta["complete"] = all(e in self.meta.get("epochs_done", []) for e in self.meta.get("epochs", []))
        write_json(self.directory / META, self.meta)
        parts_dir = self.directory / PARTS
        if self.meta["complete"] and parts_dir.exists() and not any(parts_dir.iterdir()):
            parts_dir.rmdir()
