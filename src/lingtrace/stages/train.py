"""``train``: fine-tune with a checkpoint per epoch into ``RUN/checkpoints/`` (``lingtrace.training``)."""

from __future__ import annotations

from typing import Any

from lingtrace.config import STAGE_SECTIONS
from lingtrace.stages.base import Stage, StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from lingtrace.training.trainer import train

    manifest = train(ctx.run, ctx.cfg, overwrite=ctx.overwrite, dist=ctx.dist)
    return {"final_epoch": manifest["final_epoch"], "epochs": len(manifest["epochs"]), "processes": ctx.dist.world}


STAGE = Stage(
    name="train",
    help="fine-tune with a checkpoint per epoch into RUN/checkpoints/ (resumes after an interruption)",
    sections=STAGE_SECTIONS["train"],
    inputs=lambda run: [run.split_path("train"), run.split_path("dev"), run.task_path],
    outputs=lambda run: [run.checkpoints_dir, run.manifest_path],
    run=run,
    distributed=True,
)
