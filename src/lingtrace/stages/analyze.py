"""``analyze``: the paper's analyses of every method's scores into ``RUN/analysis/`` (``lingtrace.analysis.stage``)."""

from __future__ import annotations

from typing import Any

from lingtrace.config import STAGE_SECTIONS
from lingtrace.stages.base import Stage, StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from lingtrace.analysis.stage import run_analyze

    return run_analyze(ctx.run, ctx.cfg, overwrite=ctx.overwrite) or {}


STAGE = Stage(
    name="analyze",
    help="the paper's analyses (language shares, average influence, translation overlap, dynamics, ...) into RUN/analysis/",
    sections=STAGE_SECTIONS["analyze"],
    inputs=lambda run: [run.split_path("train"), run.selection_path, run.task_path, run.influence_root],
    outputs=lambda run: [run.analysis_dir],
    run=run,
)
