"""The stages of a run, each one module implementing the protocol of ``base.Stage``: ``prepare``,
``train``, ``select``, ``influence``, ``analyze``, ``report``. ``PIPELINE`` is their order; the
pipeline (``lingtrace.pipeline``) and the CLI iterate over it. The config sections each stage's completion
marker records are declared in ``lingtrace.config.stages`` (the run directory, training and influence
fingerprint them too); each stage takes its own from there.
"""

from __future__ import annotations

from lingtrace.stages import analyze, influence, prepare, report, select, train
from lingtrace.stages.base import Stage, StageContext

#: pipeline order
PIPELINE: tuple[Stage, ...] = (prepare.STAGE, train.STAGE, select.STAGE, influence.STAGE, analyze.STAGE, report.STAGE)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in PIPELINE}

__all__ = ["BY_NAME", "PIPELINE", "Stage", "StageContext"]
