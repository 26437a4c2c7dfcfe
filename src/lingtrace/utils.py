"""Small shared helpers: device choice, seeding, progress bars."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from lingtrace.errors import LingtraceError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LingtraceError(f"device {name!r} asked for but no CUDA GPU is visible", "use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise LingtraceError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from e


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress(iterable=None, **kwargs):
    """The one progress-bar helper: tqdm on stderr, silenced by LINGTRACE_NO_PROGRESS=1."""
    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = os.environ.get("LINGTRACE_NO_PROGRESS") == "1"
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, disable=disable, **kwargs)


#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_allocator() -> bool:
    """Keep large CPU buffers in the process heap (glibc only; the command line calls this).

    By default glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on
    free, so each batch's per-example gradients (hundreds of MB on the real model) are page-faulted
    and zeroed again. With ``M_MMAP_MAX = 0`` they come from the heap, and a trim threshold of 2 GiB
    keeps freed memory for the next batch. Measured on the demo's influence stage and training
    (BENCHMARKS.md, issue 11). ``LINGTRACE_MALLOC=system`` leaves the allocator as it is. Returns
    whether the settings were applied.
    """
    if os.environ.get("LINGTRACE_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
