"""The objectives' exceptions: plain messages saying what went wrong, no advice (the layers a user
talks to add the fix: the influence stage and ``TracIn`` through ``influence.advice``)."""

from __future__ import annotations


class ObjectiveError(Exception):
    """Base class of every error an objective raises on a model or examples it cannot read."""


class UnsupportedModel(ObjectiveError):
    """A model the objective (or an influence method) cannot read (e.g. no pooled representation)."""


class BadExamples(ObjectiveError):
    """Examples that cannot be tokenised (a missing column)."""
