"""The pipeline: the stages of ``lingtrace.stages.PIPELINE`` in order, each skipped when already complete.

The pipeline alone checks a stage's configuration against its completion marker, removes the markers
of a stage it reruns and of the stages after it, and marks a stage complete with the record its
``run(ctx)`` returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lingtrace.config import Config
from lingtrace.distributed import SINGLE, Dist, decide_on_main
from lingtrace.errors import LingtraceError
from lingtrace.run import STAGES, RunDir
from lingtrace.stages import BY_NAME, PIPELINE, Stage, StageContext

log = logging.getLogger(__name__)


def _call(stage: Stage) -> Callable[..., dict[str, Any]]:
    def call(run: RunDir, cfg: Config, overwrite: bool, dist: Dist = SINGLE) -> dict[str, Any]:
        return stage.run(StageContext(run, cfg, overwrite, dist))

    return call


#: what the pipeline calls for each stage, ``(run, cfg, overwrite[, dist]) -> record`` (tests swap one in)
STAGE_FUNCS: dict[str, Callable[..., dict[str, Any]]] = {stage.name: _call(stage) for stage in PIPELINE}
assert list(STAGE_FUNCS) == list(STAGES)

#: stages whose work is split across the processes of a torchrun job; the others run on rank 0
DISTRIBUTED_STAGES = tuple(stage.name for stage in PIPELINE if stage.distributed)
#: stages that check their input before writing anything and remove the completion markers of
#: themselves and the later stages only then (bad input leaves the run directory as it was)
SELF_INVALIDATING = tuple(stage.name for stage in PIPELINE if stage.self_invalidating)


def run_stages(run: RunDir, cfg: Config, stages: list[str], overwrite: bool = False, dist: Dist = SINGLE) -> None:
    """Run ``stages`` in order; completed ones with the same config are skipped.

    All conflicts are checked before anything is written, so a refused run changes nothing; so does
    bad input found by ``prepare`` (it writes only once its input is read and checked), and
    ``config.json`` is written once the first stage succeeds (or, when every stage is skipped, at the
    end). Under torchrun (``dist``), rank 0 checks and writes the run directory's bookkeeping,
    ``train`` and ``influence`` run on every rank, the other stages on rank 0 while the others wait.
    """

    def check() -> dict[str, bool]:
        skip = {stage: run.check_stage(cfg, stage, overwrite) for stage in stages}
        names = list(BY_NAME)
        first = min(names.index(s) for s in stages)
        for earlier in names[:first]:
            if not run.is_complete(earlier):
                raise LingtraceError(f"stage {earlier!r} has not been run in {run.root}", f"run `lingtrace {earlier} {run.root}` first")
            run.check_stage(cfg, earlier, False)
        return skip

    skip = decide_on_main(dist, check)

    def save_config() -> None:
        if dist.is_main and (not run.config_path.exists() or run.config_difference(cfg) is not None):
            run.save_config(cfg)

    for stage in stages:
        if skip[stage]:
            log.info("%s: complete, skipped", stage)
            continue
        if dist.is_main and stage not in SELF_INVALIDATING:
            run.invalidate_after(stage)
        dist.barrier()
        log.info("%s: running", stage)
        if stage in DISTRIBUTED_STAGES and dist.enabled:
            info = STAGE_FUNCS[stage](run, cfg, overwrite, dist)
        elif dist.is_main:
            info = STAGE_FUNCS[stage](run, cfg, overwrite)
        dist.barrier()
        save_config()
        if dist.is_main:
            run.mark_complete(cfg, stage, info)
        log.info("%s: done", stage)
    save_config()
