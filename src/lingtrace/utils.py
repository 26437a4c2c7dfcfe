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
