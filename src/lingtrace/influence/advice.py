"""What to tell the user about an engine error: the "fix" of each ``InfluenceError`` class.

The engine raises plain exceptions (``influence.errors``); the two entry points a user calls (the
``influence`` stage and the ``TracIn`` facade) pass them through ``user_error`` to get the one-line
``LingtraceError`` the CLI prints (exit 2). The fixes speak in config keys and commands, which the
engine does not know about.
"""

from __future__ import annotations

from lingtrace.errors import LingtraceError
from lingtrace.influence import errors

_RETRAIN = "retrain with `lingtrace train RUN --overwrite`"

FIXES: dict[type[Exception], str | None] = {
    errors.NoCheckpoints: "train the model first",
    errors.NoExamples: None,
    errors.BadExamples: "give text_a and label columns",
    errors.CheckpointLoadError: "retrain that epoch (`lingtrace train RUN --overwrite`) or check the checkpoint files",
    errors.MismatchedCheckpoints: "compute influence over checkpoints of one training run",
    errors.NoParametersSelected: "use parameter-name patterns (e.g. '*.attention.*') or the groups the message lists",
    errors.NoTrainableParameters: "unfreeze some parameters",
    errors.NotEnoughMemory: "lower influence.batch_size, select fewer parameters (influence.params) or set influence.projection_dim",
    errors.OutOfMemory: "lower influence.batch_size, set influence.test_chunk smaller, use influence.dtype=bfloat16 on a GPU, "
    "or influence.projection_dim; then rerun to resume",
    errors.MissingSecondMoments: f"{_RETRAIN} (training saves them with every checkpoint); for an imported run, import again from "
    "Trainer checkpoints that hold the AdamW optimizer.pt; or leave adam-cosine out of influence.methods",
    errors.BadSecondMoments: f"{_RETRAIN}, or leave adam-cosine out of influence.methods",
    errors.MissingDependency: 'pip install -e ".[ekfac]" && pip install --no-deps "kronfluence==1.0.1" (see the README), '
    "or leave ekfac out of influence.methods",
    errors.UnsupportedModel: "use a Hugging Face sequence classifier, or leave this method out of influence.methods",
}


def user_error(exc: Exception) -> LingtraceError:
    """The ``LingtraceError`` (problem and fix) for an engine error (one of ``errors.ENGINE_ERRORS``)."""
    fix = next((FIXES[cls] for cls in type(exc).__mro__ if cls in FIXES), None)
    return LingtraceError(str(exc), fix)
