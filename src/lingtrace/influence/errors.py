"""The influence engine's exceptions: plain messages saying what went wrong, no advice.

The layers a user talks to (``influence.stage`` for the CLI, the ``TracIn`` facade for the Python API)
turn them into ``LingtraceError`` with a fix through ``influence.advice.user_error``. The engine also
passes on the objectives' errors (``lingtrace.objectives.errors``: a model or examples the objective
cannot read); ``ENGINE_ERRORS`` is what those layers catch.
"""

from __future__ import annotations

from lingtrace.objectives.errors import BadExamples, ObjectiveError, UnsupportedModel


class InfluenceError(Exception):
    """Base class of every error the engine and its methods raise on bad input or resources."""


class NoCheckpoints(InfluenceError):
    pass


class NoExamples(InfluenceError):
    pass


class CheckpointLoadError(InfluenceError):
    """The model factory failed on a checkpoint."""


class MismatchedCheckpoints(InfluenceError):
    """Checkpoints whose selected parameters differ in names or shapes."""


class NoParametersSelected(InfluenceError):
    """``params`` patterns that match no trainable parameter."""


class NoTrainableParameters(InfluenceError):
    pass


class NotEnoughMemory(InfluenceError):
    """Not even one test example's features fit in the memory budget."""


class OutOfMemory(InfluenceError):
    """The device ran out of memory during the computation (finished parts are kept)."""


class MissingSecondMoments(InfluenceError):
    """A checkpoint without the optimizer's second moments (adam-cosine)."""


class BadSecondMoments(InfluenceError):
    """A second-moments file that does not fit the checkpoint or the agreed format."""


class MissingDependency(InfluenceError):
    """An optional package a method needs (ekfac: kronfluence) is missing or of another version."""


#: what the engine, its methods and the objectives raise on bad input or resources
ENGINE_ERRORS: tuple[type[Exception], ...] = (InfluenceError, ObjectiveError)

__all__ = [
    "ENGINE_ERRORS",
    "BadExamples",
    "BadSecondMoments",
    "CheckpointLoadError",
    "InfluenceError",
    "MismatchedCheckpoints",
    "MissingDependency",
    "MissingSecondMoments",
    "NoCheckpoints",
    "NoExamples",
    "NoParametersSelected",
    "NoTrainableParameters",
    "NotEnoughMemory",
    "ObjectiveError",
    "OutOfMemory",
    "UnsupportedModel",
]
