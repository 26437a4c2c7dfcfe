"""lingtrace inside other training code: ``LingtraceCallback``, a ``transformers.TrainerCallback`` that
makes a ``transformers.Trainer`` write a lingtrace run directory (checkpoints, second moments, manifest,
data, config and stage markers) as it trains, ready for ``lingtrace select/influence/analyze/report``.

This layer sits above ``importing`` (whose config, data and manifest writing it reuses) and below
``experiments``; importing it imports ``transformers``.
"""

from __future__ import annotations

from lingtrace.integrations.callback import LingtraceCallback

__all__ = ["LingtraceCallback"]
