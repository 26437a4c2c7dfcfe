"""Atomic writes: one file mode for every writer, and nothing left behind on failure."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from safetensors.numpy import save_file

from lingtrace.io import DIR_MODE, FILE_MODE, atomic_dir, atomic_path, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_modes_follow_the_umask():
    mask = os.umask(0)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask and DIR_MODE == 0o777 & ~mask


def test_safetensors_writer_gets_the_usual_mode(tmp_path):
    # safetensors writes a private temporary file of its own and renames it onto the path: 0600
    plain = tmp_path / "plain.safetensors"
    save_file({"a": np.zeros(3, dtype=np.float32)}, str(plain))
    assert _mode(plain) == 0o600  # the cause; if safetensors changes this the test below still holds

    target = tmp_path / "scores.safetensors"
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file({"a": np.zeros(3, dtype=np.float32)}, str(tmp))
    assert _mode(target) == FILE_MODE
    write_json(tmp_path / "x.json", {"a": 1})
    assert _mode(tmp_path / "x.json") == FILE_MODE


def test_atomic_dir_sets_every_mode(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        save_file({"a": np.zeros(3, dtype=np.float32)}, str(tmp / "model.safetensors"))
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "f.txt").write_text("x")
        os.chmod(tmp / "sub" / "f.txt", 0o600)
    assert _mode(target) == DIR_MODE and _mode(target / "sub") == DIR_MODE
    assert _mode(target / "model.safetensors") == FILE_MODE and _mode(target / "sub" / "f.txt") == FILE_MODE


def test_failed_block_leaves_the_old_file(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and "old" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
