"""The objectives: what a model of each kind (``model.kind``) is trained on and what influence
attributes. ``Objective`` gives the per-example loss, the model inputs, the class scores and the pooled
representation; training, evaluation, the influence engine and the report use it alike.

Modules, bottom-up: ``errors``; ``examples`` (tokenised ``Examples`` and their batches); ``base``
(``Batch``, ``Objective``, ``ClassificationObjective``); ``decoder`` (``DecoderClassificationObjective``,
``CausalLMObjective``); ``kinds`` (``objective_for``: the objective of a config's ``model.kind``).
"""

from __future__ import annotations

from lingtrace.objectives.base import (
    Batch,
    ClassificationObjective,
    Objective,
    collate,
    correct_class_margin,
    position_ids,
)
from lingtrace.objectives.decoder import CausalLMObjective, DecoderClassificationObjective, DecoderObjective
from lingtrace.objectives.errors import BadExamples, ObjectiveError, UnsupportedModel
from lingtrace.objectives.examples import Examples, batches
from lingtrace.objectives.kinds import OBJECTIVES, attributed_loss, objective_for

__all__ = [
    "OBJECTIVES",
    "BadExamples",
    "Batch",
    "CausalLMObjective",
    "ClassificationObjective",
    "DecoderClassificationObjective",
    "DecoderObjective",
    "Examples",
    "Objective",
    "ObjectiveError",
    "UnsupportedModel",
    "attributed_loss",
    "batches",
    "collate",
    "correct_class_margin",
    "objective_for",
    "position_ids",
]
