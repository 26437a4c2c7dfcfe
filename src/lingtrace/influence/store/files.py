"""The files of a score store: safetensors matrices written atomically or streamed, memory-mapped reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from lingtrace.errors import LingtraceError
from lingtrace.influence.plan import SCORES
from lingtrace.io import atomic_path, write_json

TRAIN_UIDS = "train_uids.json"
TEST_UIDS = "test_uids.json"
PARTS = "parts"

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


def part_file(directory: str | Path, epoch: int, chunk: int, shard: int) -> Path:
    return Path(directory) / PARTS / f"epoch-{epoch}.chunk-{chunk}.shard-{shard}.safetensors"


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


