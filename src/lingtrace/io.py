"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename.

A crash, Ctrl-C or a full disk in the middle of a write leaves the previous file (or none)
in place, never a truncated one.

Every file written through these helpers gets one mode, ``FILE_MODE`` (0666 less the umask: 0644
under the usual umask 022), and every folder ``DIR_MODE``, whatever the writer did: some writers
(``safetensors.save_file``, and ``save_pretrained`` through it) write to a private temporary file of
their own and rename it onto the path they were given, so the file ends up 0600. The mode is
therefore set just before the final rename, on whatever is at the temporary path by then.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lingtrace.errors import LingtraceError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
#: the mode of every file and folder a run writes
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _set_mode(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` unless it has it already (a hard-linked file is then left untouched)."""
    if (path.lstat().st_mode & 0o7777) != mode:
        os.chmod(path, mode)


def _set_modes(root: Path) -> None:
    """``DIR_MODE`` on ``root`` and every folder below it, ``FILE_MODE`` on every file. Symbolic links
    and files with several hard links (shared with a place outside the run, e.g. the checkpoints of
    ``lingtrace import``) are left alone: changing their mode would change the other place's."""
    _set_mode(root, DIR_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                _set_mode(Path(folder, name), DIR_MODE)
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink() and path.stat().st_nlink == 1:
                _set_mode(path, FILE_MODE)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes 0600 files, and a writer may have replaced ours with its own 0600 file
        _set_mode(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise LingtraceError(f"disk full while writing {path}", "free some space and rerun; completed outputs are intact") from e
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _set_modes(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise LingtraceError(f"disk full while writing {path}", "free some space and rerun; completed outputs are intact") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise LingtraceError(f"missing file {path}", "run the stage that writes it first") from e
    except json.JSONDecodeError as e:
        raise LingtraceError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})", "delete it and rerun the stage that writes it") from e


def write_parquet(path: str | os.PathLike, frame) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)


def disk_bytes(paths: Iterable[Path]) -> int:
    """Bytes of the files under ``paths``, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in paths:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON data (``json.dumps(..., allow_nan=False)`` takes it): NaN and inf -> None,
    numpy scalars -> Python, dict keys -> str, tuples -> lists. numpy is imported here, when called:
    this module sits below everything and needs it nowhere else."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in blocks (a checkpoint shard need not fit in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
