"""``report``: one self-contained HTML page, ``RUN/report/index.html`` (``lingtrace.report.stage``)."""

from __future__ import annotations

from typing import Any

from lingtrace.config import STAGE_SECTIONS
from lingtrace.stages.base import Stage, StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from lingtrace.report.stage import run_report

    return run_report(ctx.run, ctx.cfg) or {}


STAGE = Stage(
    name="report",
    help="the HTML report with figures, tables and an example browser into RUN/report/ (one self-contained page)",
    sections=STAGE_SECTIONS["report"],
    inputs=lambda run: [run.config_path, run.split_path("train"), run.selection_path, run.manifest_path, run.analysis_dir, run.experiments_dir],
    outputs=lambda run: [run.report_page],
    run=run,
)
