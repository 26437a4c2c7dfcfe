"""Evaluate: the predictions of a run's final model on given examples.

This is what ``select`` does in an experiment's sub-run, whose ``RUN/given/`` holds the base run's
selected test examples (``test_examples.parquet``: never a new draw) and the examples whose predictions
are kept (``evaluate.parquet``: those, or the whole test pool). It writes ``selection/predictions.parquet``
(``pred``, ``confidence``, ``p_label``, ``margin``, ``logits`` per example) and ``selection/test.parquet``
(the given test examples with their ``pred``, ``confidence``, ``p_label`` and ``margin``), so the
``influence`` stage and the experiments read a sub-run as they read any run. The marker is ``select``'s,
written by the pipeline; its record names the given examples (``eval_id``).
"""

from __future__ import annotations

from typing import Any

from lingtrace.stages.base import StageContext

#: the record's description of the selection
GIVEN_SELECTION = "the base run's selected test examples (experiment sub-run)"


def evaluate_given(ctx: StageContext) -> dict[str, Any]:
    from lingtrace.data import schema
    from lingtrace.evaluation import MARGIN, P_LABEL, predict_frame
    from lingtrace.run import (
        given_tests_identity,
        read_given_test_examples,
        write_predictions,
        write_selection,
    )

    test_examples, evaluate = read_given_test_examples(ctx.run)
    preds = predict_frame(ctx.run, ctx.cfg, evaluate[schema.EXAMPLE_COLUMNS])
    write_predictions(ctx.run, preds)
    by_uid = preds.set_index(schema.UID)
    chosen = test_examples[schema.EXAMPLE_COLUMNS].reset_index(drop=True).copy()
    for col in (schema.PRED, schema.CONFIDENCE, P_LABEL, MARGIN):
        chosen[col] = by_uid.loc[chosen[schema.UID], col].to_numpy()
    write_selection(ctx.run, chosen)
    return {"selection": GIVEN_SELECTION, "n": len(chosen), "eval_id": given_tests_identity(test_examples, evaluate)}
