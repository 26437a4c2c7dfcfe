"""``select``: the final model's predictions on the test pool, and the test examples drawn from those it
predicts correctly (``lingtrace.selection``). In an experiment's sub-run, whose ``RUN/given/`` holds the
test examples, it evaluates the final model on them instead (``evaluate``)."""

from __future__ import annotations

from typing import Any

from lingtrace.config import STAGE_SECTIONS
from lingtrace.stages.base import Stage, StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    if ctx.run.has_given_test_examples():
        from lingtrace.stages.evaluate import evaluate_given

        return evaluate_given(ctx)
    from lingtrace.selection import select

    _, info = select(ctx.run, ctx.cfg)
    return info


STAGE = Stage(
    name="select",
    help="draw the test examples the final model predicts correctly into RUN/selection/",
    sections=STAGE_SECTIONS["select"],
    inputs=lambda run: [run.given_dir if run.has_given_test_examples() else run.split_path("test"), run.manifest_path, run.checkpoints_dir],
    outputs=lambda run: [run.predictions_path, run.selection_path],
    run=run,
)
