"""``influence``: every method of ``influence.methods`` scores every training example for every selected
test example, one store each in ``RUN/influence/METHOD/`` (``lingtrace.influence.stage``)."""

from __future__ import annotations

import math
from typing import Any

from lingtrace.config import STAGE_SECTIONS
from lingtrace.stages.base import Stage, StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from lingtrace.errors import LingtraceError
    from lingtrace.influence.stage import run_influence
    from lingtrace.run import read_manifest

    if ctx.cfg.influence.lr_weighted:
        unknown = [e["epoch"] for e in (read_manifest(ctx.run) or {}).get("epochs", []) if not math.isfinite(float(e.get("lr_mean", math.nan)))]
        if unknown:
            raise LingtraceError(
                f"influence.lr_weighted needs each checkpoint's learning rate, unknown for epoch(s) {', '.join(map(str, unknown))} "
                "(imported without a trainer_state.json)",
                "set influence.lr_weighted=false, or import a transformers.Trainer output folder",
            )
    return run_influence(ctx.run, ctx.cfg, overwrite=ctx.overwrite, dist=ctx.dist) or {}


STAGE = Stage(
    name="influence",
    help="TracIn scores of every training example for every selected test example into RUN/influence/",
    sections=STAGE_SECTIONS["influence"],
    inputs=lambda run: [run.split_path("train"), run.selection_path, run.manifest_path, run.checkpoints_dir],
    outputs=lambda run: [run.influence_root],  # one store per method: RUN/influence/METHOD/
    run=run,
    distributed=True,
)
