"""The ``influence`` stage: TracIn scores of every training example for every selected test example.

Reads ``RUN/data/train.parquet``, ``RUN/selection/test.parquet`` and the checkpoints listed in
``RUN/checkpoints/manifest.json``; writes the score store ``RUN/influence/`` (see ``store.py``).
An interrupted run resumes at the first unfinished (checkpoint, test chunk, training shard).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import pandas as pd

from lingtrace.config import Config
from lingtrace.distributed import SINGLE, Dist
from lingtrace.errors import LingtraceError
from lingtrace.influence import store
from lingtrace.influence.tracin import Examples, Plan, TracIn, checkpoint_factory, default_pad_id
from lingtrace.run import RunDir, fingerprint
from lingtrace.training.trainer import read_manifest, read_split

log = logging.getLogger(__name__)


def influence_epochs(manifest: dict[str, Any], which: str) -> list[dict[str, Any]]:
    """The manifest records of the checkpoints TracIn sums over: the trajectory up to the final model
    (``trajectory``) or every saved epoch (``all``)."""
    epochs = manifest["epochs"]
    if which == "all":
        return list(epochs)
    final = manifest.get("final_epoch") or epochs[-1]["epoch"]
    return [e for e in epochs if e["epoch"] <= final]


def read_selected(run: RunDir) -> pd.DataFrame:
    path = run.selection_path
    if not path.exists():
        raise LingtraceError(f"missing {path}", "run `lingtrace select RUN` first")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise LingtraceError(f"cannot read {path}: {e}", "rerun `lingtrace select RUN --overwrite`") from e


def _uid_hash(uids: list[str]) -> str:
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:16]


def run_influence(run: RunDir, cfg: Config, overwrite: bool = False, dist: Dist = SINGLE) -> dict[str, Any]:
    """Compute (or finish) the score store. Under torchrun every rank takes the training shards
    ``s % world == rank`` of every (checkpoint, test chunk); rank 0 plans, merges and records."""
    from transformers import AutoTokenizer

    icfg = cfg.influence
    manifest = read_manifest(run)
    if not manifest or not manifest.get("complete"):
        raise LingtraceError(f"training in {run.root} is not complete", "run `lingtrace train RUN` first")
    records = influence_epochs(manifest, icfg.checkpoints)
    dirs = [run.checkpoints_dir / r["path"] for r in records]
    for d in dirs:
        if not d.is_dir():
            raise LingtraceError(f"checkpoint {d} is missing", "retrain with `lingtrace train RUN --overwrite`")
    train = read_split(run, "train")
    test = read_selected(run)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(dirs[-1]))
    except Exception as e:  # noqa: BLE001
        raise LingtraceError(f"cannot load the tokenizer of {dirs[-1]}: {e}", "retrain with `lingtrace train RUN --overwrite`") from e
    train_ex = Examples.from_frame(train, tokenizer, cfg.model.max_length, cfg.model.text_prefix)
    test_ex = Examples.from_frame(test, tokenizer, cfg.model.max_length, cfg.model.text_prefix)
    epochs = [int(r["epoch"]) for r in records]
    lrs = [float(r["lr_mean"]) for r in records]
    tracin = TracIn(
        checkpoint_factory(cfg.model.freeze_embeddings),
        dirs,
        epochs=epochs,
        mode=icfg.mode,
        lr=lrs if icfg.lr_weighted else None,
        params=icfg.params,
        breakdown=icfg.breakdown,
        batch_size=icfg.batch_size,
        test_chunk=icfg.test_chunk,
        device=dist.device(icfg.device),
        dtype=icfg.dtype,
        projection_dim=icfg.projection_dim,
        projection_seed=icfg.projection_seed,
    )
    fp = fingerprint(
        {
            "stage": run.stage_config(cfg, "influence"),
            "manifest": manifest.get("fingerprint"),
            "epochs": epochs,
            "train": _uid_hash(train_ex.uids),
            "test": _uid_hash(test_ex.uids),
        }
    )
    meta = {
        "mode": icfg.mode,
        "lr_weighted": icfg.lr_weighted,
        "lr": dict(zip([str(e) for e in epochs], lrs)) if icfg.lr_weighted else None,
        "epochs": epochs,
        "checkpoints": [str(d.relative_to(run.root)) for d in dirs],
        "params": list(icfg.params),
        "dtype": icfg.dtype,
        "breakdown": bool(icfg.breakdown and icfg.projection_dim is None),
        "projection": None if icfg.projection_dim is None else {"kind": "countsketch", "dim": icfg.projection_dim, "seed": icfg.projection_seed},
    }
    sink = None
    decision: dict[str, Any] = {}
    if dist.is_main:
        try:
            sink = store.StoreWriter(run.influence_dir, fp, meta, train_ex.uids, test_ex.uids, overwrite=overwrite, assemble=True)
            if sink.plan is None and dist.enabled:
                # every rank must follow one plan; a single process plans in `run` after its first load
                sink.begin(tracin.make_plan(train_ex, test_ex, world=dist.world))
            decision = {"plan": sink.plan.to_dict() if sink.plan else None}
        except LingtraceError as e:
            decision = {"error": [e.problem, e.fix]}
    decision = dist.broadcast(decision)
    if "error" in decision:
        raise LingtraceError(*decision["error"])
    if sink is None:
        sink = store.StoreWriter(run.influence_dir, fp, meta, train_ex.uids, test_ex.uids, overwrite=False, assemble=False)
        sink.plan = Plan.from_dict(decision["plan"])
    t0 = time.perf_counter()
    tracin.run(train_ex, test_ex, sink, default_pad_id(tokenizer), rank=dist.rank, world=dist.world)
    per_rank = dist.gather({**tracin.stats, "wall_seconds": time.perf_counter() - t0})
    dist.barrier()  # every rank's parts are written
    stats = _merge_stats(per_rank)
    if dist.is_main:
        for e in epochs:
            sink.epoch_done(e)
        if getattr(tracin, "selection", None) is not None:
            sink.meta["groups"] = tracin.selection.group_names
            sink.meta["n_params"] = tracin.selection.num_params()
        sink.finish(stats)
        if not sink.meta["complete"]:
            raise LingtraceError(f"the influence scores in {run.influence_dir} are incomplete after the run", "rerun `lingtrace influence RUN`")
    log.info(
        "influence: %d test x %d training examples over %d checkpoints, %d per-example gradient passes in %.1f s",
        len(test_ex),
        len(train_ex),
        len(epochs),
        stats["gradient_passes"],
        stats["wall_seconds"],
    )
    return {
        "epochs": epochs,
        "n_train": len(train_ex),
        "n_test": len(test_ex),
        "gradient_passes": stats["gradient_passes"],
        "seconds": round(stats["wall_seconds"], 2),
        "plan": {"chunks": len(sink.plan.chunks), "shards": len(sink.plan.shards)} if sink.plan else None,
        "processes": dist.world,
    }


def _merge_stats(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts summed over ranks; times as the slowest rank's (they ran in parallel)."""
    out: dict[str, Any] = {"processes": len(per_rank)}
    for key in ("gradient_passes", "train_passes", "test_passes"):
        out[key] = int(sum(r.get(key, 0) for r in per_rank))
    out["wall_seconds"] = max(r.get("wall_seconds", 0.0) for r in per_rank)
    keys = sorted({k for r in per_rank for k in r.get("seconds", {})})
    out["seconds"] = {k: max(r.get("seconds", {}).get(k, 0.0) for r in per_rank) for k in keys}
    return out
