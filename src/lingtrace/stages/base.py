"""The stage protocol: what every stage of a run is.

A stage has a ``name``, the config ``sections`` its outputs depend on (its completion marker records
them, and a rerun with other values in them is refused unless ``overwrite``), the run-directory paths it
reads (``inputs``) and writes (``outputs``), and ``run(ctx)``, which does the work and returns the
record its marker keeps. The pipeline (``lingtrace.pipeline.run_stages``) checks, invalidates and marks;
a stage never writes a marker itself, its own or another's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lingtrace.config import Config
    from lingtrace.distributed import Dist
    from lingtrace.run import RunDir


@dataclass(frozen=True)
class StageContext:
    """What a stage runs on: the run directory, the resolved config, ``overwrite``, and this process's
    place in a torchrun job (rank 0 of 1 without one)."""

    run: RunDir
    cfg: Config
    overwrite: bool
    dist: Dist


@dataclass(frozen=True)
class Stage:
    name: str
    #: one line for ``lingtrace NAME --help``
    help: str
    #: the config sections the stage's outputs depend on (cumulative: a stage depends on its inputs' sections)
    sections: tuple[str, ...]
    #: the paths it reads, given the run directory
    inputs: Callable[[RunDir], list[Path]]
    #: the paths it writes
    outputs: Callable[[RunDir], list[Path]]
    #: does the work; returns the record kept in the stage's marker
    run: Callable[[StageContext], dict[str, Any]]
    #: split across the processes of a torchrun job (the others run on rank 0 while the rest wait)
    distributed: bool = False
    #: checks its input before writing anything and only then removes its own and the later stages'
    #: markers (bad input leaves the run directory as it was)
    self_invalidating: bool = False
