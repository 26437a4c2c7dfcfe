"""``prepare``: sample the training, dev and test data into ``RUN/data/`` (and the task description). In an
experiment's sub-run, whose ``RUN/given/`` holds its derived data, it takes that data instead."""

from __future__ import annotations

import logging
from typing import Any

from lingtrace.config import STAGE_SECTIONS
from lingtrace.stages.base import Stage, StageContext

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    from lingtrace.data import schema
    from lingtrace.prepare.checks import check_training_labels, warn_rare_labels
    from lingtrace.prepare.readers import load_task
    from lingtrace.prepare.sampling import prepare_splits
    from lingtrace.run import read_given_data, write_split, write_task

    record: dict[str, Any] = {}
    if ctx.run.has_given_data():
        splits, task_record = read_given_data(ctx.run)
        record["given"] = "the data given by the experiment that made this sub-run (see experiment.json)"
    else:
        frames, task = load_task(ctx.cfg.data)
        rare = warn_rare_labels(frames, task)
        splits = prepare_splits(frames, ctx.cfg.data, task)
        check_training_labels(splits, task, frames[frames[schema.SPLIT] == "train"])
        if rare:
            record["rare_labels"] = rare
        task_record = {"task": task.name, "label_names": list(task.label_names), "parallel": bool(task.parallel), "pair": bool(task.pair)}
    # the data was read and checked without writing anything: only now do the old outputs go
    ctx.run.invalidate_after(STAGE.name)
    for name, frame in splits.items():
        write_split(ctx.run, name, frame)
    write_task(ctx.run, task_record)
    counts = {name: frame.groupby(schema.LANG).size().to_dict() for name, frame in splits.items()}
    log.info("prepared %s", ", ".join(f"{k}: {sum(v.values())}" for k, v in counts.items()))
    return {"counts": counts, **record}


STAGE = Stage(
    name="prepare",
    help="sample the training, dev and test data into RUN/data/",
    sections=STAGE_SECTIONS["prepare"],
    inputs=lambda run: [run.given_dir] if run.has_given_data() else [],
    outputs=lambda run: [run.split_path("train"), run.split_path("dev"), run.split_path("test"), run.task_path],
    run=run,
    self_invalidating=True,
)
