"""The stages of a run and the pipeline that chains them, each skipped when already complete."""

from __future__ import annotations

import logging
from collections.abc import Callable

from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.distributed import SINGLE, Dist
from lingtrace.errors import LingtraceError
from lingtrace.io import write_json, write_parquet
from lingtrace.run import STAGES, RunDir

log = logging.getLogger(__name__)


def stage_prepare(run: RunDir, cfg: Config, overwrite: bool) -> dict:
    from lingtrace.data.readers import load_task
    from lingtrace.data.sampling import prepare_splits

    frames, task = load_task(cfg.data)
    splits = prepare_splits(frames, cfg.data, task)
    # the data was read and checked without writing anything: only now do the old outputs go
    run.invalidate_after("prepare")
    for name, frame in splits.items():
        write_parquet(run.split_path(name), frame[schema.EXAMPLE_COLUMNS])
    write_json(
        run.task_path,
        {"task": task.name, "label_names": list(task.label_names), "parallel": bool(task.parallel), "pair": bool(task.pair)},
    )
    counts = {name: frame.groupby(schema.LANG).size().to_dict() for name, frame in splits.items()}
    log.info("prepared %s", ", ".join(f"{k}: {sum(v.values())}" for k, v in counts.items()))
    return {"counts": counts}


def stage_train(run: RunDir, cfg: Config, overwrite: bool, dist: Dist = SINGLE) -> dict:
    from lingtrace.training.trainer import train

    manifest = train(run, cfg, overwrite=overwrite, dist=dist)
    return {"final_epoch": manifest["final_epoch"], "epochs": len(manifest["epochs"]), "processes": dist.world}


def stage_select(run: RunDir, cfg: Config, overwrite: bool) -> dict:
    from lingtrace.selection import select

    _, info = select(run, cfg)
    return info


def stage_influence(run: RunDir, cfg: Config, overwrite: bool, dist: Dist = SINGLE) -> dict:
    import math

    from lingtrace.influence.stage import run_influence
    from lingtrace.training.trainer import read_manifest

    if cfg.influence.lr_weighted:
        unknown = [e["epoch"] for e in (read_manifest(run) or {}).get("epochs", []) if not math.isfinite(float(e.get("lr_mean", math.nan)))]
        if unknown:
            raise LingtraceError(
                f"influence.lr_weighted needs each checkpoint's learning rate, unknown for epoch(s) {', '.join(map(str, unknown))} "
                "(imported without a trainer_state.json)",
                "set influence.lr_weighted=false, or import a transformers.Trainer output folder",
            )

    return run_influence(run, cfg, overwrite=overwrite, dist=dist) or {}


def stage_analyze(run: RunDir, cfg: Config, overwrite: bool) -> dict:
    from lingtrace.analysis.stage import run_analyze

    return run_analyze(run, cfg, overwrite=overwrite) or {}


def stage_report(run: RunDir, cfg: Config, overwrite: bool) -> dict:
    from lingtrace.report.stage import run_report

    return run_report(run, cfg) or {}


STAGE_FUNCS: dict[str, Callable[[RunDir, Config, bool], dict]] = {
    "prepare": stage_prepare,
    "train": stage_train,
    "select": stage_select,
    "influence": stage_influence,
    "analyze": stage_analyze,
    "report": stage_report,
}
assert list(STAGE_FUNCS) == list(STAGES)

#: stages whose work is split across the processes of a torchrun job; the others run on rank 0
DISTRIBUTED_STAGES = ("train", "influence")
#: stages that check their input before writing anything and remove the completion markers of
#: themselves and the later stages only then (bad input leaves the run directory as it was)
SELF_INVALIDATING = ("prepare",)


def run_stages(run: RunDir, cfg: Config, stages: list[str], overwrite: bool = False, dist: Dist = SINGLE) -> None:
    """Run ``stages`` in order; completed ones with the same config are skipped.

    All conflicts are checked before anything is written, so a refused run changes nothing; so does
    bad input found by ``prepare`` (it writes only once its input is read and checked), and
    ``config.json`` is written once the first stage succeeds (or, when every stage is skipped, at the
    end). Under torchrun (``dist``), rank 0 checks and writes the run directory's bookkeeping,
    ``train`` and ``influence`` run on every rank, the other stages on rank 0 while the others wait.
    """

    def check() -> dict[str, bool]:
        skip = {stage: run.check_stage(cfg, stage, overwrite) for stage in stages}
        names = list(STAGES)
        first = min(names.index(s) for s in stages)
        for earlier in names[:first]:
            if not run.is_complete(earlier):
                raise LingtraceError(f"stage {earlier!r} has not been run in {run.root}", f"run `lingtrace {earlier} {run.root}` first")
            run.check_stage(cfg, earlier, False)
        return skip

    if dist.enabled:
        decision: dict = {}
        if dist.is_main:
            try:
                decision = {"skip": check()}
            except LingtraceError as e:
                decision = {"error": [e.problem, e.fix]}
        decision = dist.broadcast(decision)
        if "error" in decision:
            raise LingtraceError(*decision["error"])
        skip = decision["skip"]
    else:
        skip = check()

    def save_config() -> None:
        if dist.is_main and (not run.config_path.exists() or run.config_difference(cfg) is not None):
            run.save_config(cfg)

    for stage in stages:
        if skip[stage]:
            log.info("%s: complete, skipped", stage)
            continue
        if dist.is_main and stage not in SELF_INVALIDATING:
            run.invalidate_after(stage)
        dist.barrier()
        log.info("%s: running", stage)
        if stage in DISTRIBUTED_STAGES and dist.enabled:
            info = STAGE_FUNCS[stage](run, cfg, overwrite, dist)
        elif dist.is_main:
            info = STAGE_FUNCS[stage](run, cfg, overwrite)
        dist.barrier()
        save_config()
        if dist.is_main:
            run.mark_complete(cfg, stage, info)
        log.info("%s: done", stage)
    save_config()
