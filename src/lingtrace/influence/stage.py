"""The ``influence`` stage: every method of ``influence.methods``, one score store each.

Reads ``RUN/data/train.parquet``, ``RUN/selection/test.parquet`` and the checkpoints listed in
``RUN/checkpoints/manifest.json``; writes ``RUN/influence/METHOD/`` per method (see ``store/``).
Each method's store is resumable on its own: an interrupted run resumes at the first unfinished
(checkpoint, test chunk, training shard), a method whose store is complete with the same fingerprint
is skipped, and a method that cannot run fails before any work without touching the other stores.
Engine errors become ``LingtraceError`` with a fix here (``advice.user_error``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from lingtrace.config import Config
from lingtrace.config.influence import InfluenceOptions, foreign_keys
from lingtrace.distributed import SINGLE, Dist, decide_on_main
from lingtrace.errors import LingtraceError
from lingtrace.influence.advice import user_error
from lingtrace.influence.context import Checkpoint
from lingtrace.influence.engine import Engine
from lingtrace.influence.errors import ENGINE_ERRORS
from lingtrace.influence.methods import estimator_class
from lingtrace.influence.methods.base import Estimator
from lingtrace.influence.plan import Plan
from lingtrace.influence.store import StoreMeta, StoreWriter
from lingtrace.influence.tracin import checkpoint_factory, default_pad_id
from lingtrace.models.checkpoints import check_weights
from lingtrace.objectives import Examples, Objective, objective_for
from lingtrace.run import RunDir, fingerprint, read_manifest, read_selection, read_split, read_task

log = logging.getLogger(__name__)


def influence_epochs(manifest: dict[str, Any], which: str) -> list[dict[str, Any]]:
    """The manifest records of the checkpoints TracIn sums over: the trajectory up to the final model
    (``trajectory``) or every saved epoch (``all``)."""
    epochs = manifest["epochs"]
    if which == "all":
        return list(epochs)
    final = manifest.get("final_epoch") or epochs[-1]["epoch"]
    return [e for e in epochs if e["epoch"] <= final]


def _uid_hash(uids: list[str]) -> str:
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:16]


@dataclass
class Inputs:
    """What every method of the stage shares: the checkpoints and the tokenised examples."""

    checkpoints: list[Checkpoint]
    train: Examples
    test: Examples
    pad_id: int
    manifest_fingerprint: str | None
    objective: Objective
    #: each checkpoint's weights identity (``models.checkpoints.weights_identity``), checked against the manifest
    weights: list[dict[str, Any]]


def _inputs(run: RunDir, cfg: Config) -> Inputs:
    from transformers import AutoTokenizer

    manifest = read_manifest(run)
    if not manifest or not manifest.get("complete"):
        raise LingtraceError(f"training in {run.root} is not complete", "run `lingtrace train RUN` first")
    records = influence_epochs(manifest, cfg.influence.checkpoints)
    final = manifest.get("final_epoch") or manifest["epochs"][-1]["epoch"]
    dirs = [run.checkpoints_dir / r["path"] for r in records]
    for d in dirs:
        if not d.is_dir():
            raise LingtraceError(f"checkpoint {d} is missing", "retrain with `lingtrace train RUN --overwrite`")
    weights = [check_weights(d, r.get("weights")) for d, r in zip(dirs, records)]
    train = read_split(run, "train")
    test = read_selection(run)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(dirs[-1]))
    except Exception as e:  # noqa: BLE001
        raise LingtraceError(f"cannot load the tokenizer of {dirs[-1]}: {e}", "retrain with `lingtrace train RUN --overwrite`") from e
    objective = objective_for(cfg, read_task(run)["label_names"])
    try:
        train_ex = objective.examples(train, tokenizer, cfg.model.max_length, cfg.model.text_prefix)
        test_ex = objective.examples(test, tokenizer, cfg.model.max_length, cfg.model.text_prefix)
    except ENGINE_ERRORS as e:
        raise user_error(e) from e
    checkpoints = [Checkpoint(d, int(r["epoch"]), float(r["lr_mean"]), int(r["epoch"]) == int(final)) for d, r in zip(dirs, records)]
    return Inputs(checkpoints, train_ex, test_ex, default_pad_id(tokenizer), manifest.get("fingerprint"), objective, weights)


def method_fingerprint(run: RunDir, cfg: Config, estimator: Estimator, epochs: list[int], inputs: Inputs) -> str:
    """What a method's store depends on: the config (less the influence keys the method ignores and
    the list of methods), the training run, the checkpoints summed and the examples. For ``tracin``
    this is the fingerprint stores had before several methods existed."""
    stage = run.stage_config(cfg, "influence")
    left_out = set(estimator.ignores) | {"methods"} | foreign_keys(estimator.name)
    stage["influence"] = {k: v for k, v in stage["influence"].items() if k not in left_out}
    parts = {
        "stage": stage,
        "manifest": inputs.manifest_fingerprint,
        "weights": [w for c, w in zip(inputs.checkpoints, inputs.weights) if c.epoch in epochs],
        "epochs": epochs,
        "train": _uid_hash(inputs.train.uids),
        "test": _uid_hash(inputs.test.uids),
    }
    if estimator.name != "tracin":
        parts["method"] = estimator.name
    if identity := estimator.identity():
        parts["method_identity"] = identity
    return fingerprint(parts)


def _store_meta(run: RunDir, cfg: Config, estimator: Estimator, checkpoints: list[Checkpoint]) -> StoreMeta:
    icfg = cfg.influence
    return StoreMeta(
        method=estimator.name,
        mode=estimator.mode,
        lr_weighted=estimator.lr_weighted,
        lr={str(c.epoch): c.lr for c in checkpoints} if estimator.lr_weighted else None,
        epochs=[c.epoch for c in checkpoints],
        checkpoints=[str(c.source.relative_to(run.root)) for c in checkpoints],
        params=list(icfg.params) if estimator.needs_parameters else [],
        dtype=icfg.dtype,
        breakdown=estimator.breakdown,
        projection=estimator.projection(),
        method_info=estimator.describe(),
    )


def _to_user(e: Exception) -> LingtraceError | None:
    return user_error(e) if isinstance(e, ENGINE_ERRORS) else None


def _guarded(dist: Dist, make):
    """Rank 0 runs ``make()``; its result, or its LingtraceError (an engine error with its fix), reaches every rank."""
    return decide_on_main(dist, make, _to_user)


def run_method(run: RunDir, cfg: Config, estimator: Estimator, inputs: Inputs, overwrite: bool, dist: Dist) -> dict[str, Any]:
    """Compute (or finish) one method's store. Under torchrun every rank takes the training shards
    ``s % world == rank`` of every (checkpoint, test chunk); rank 0 plans, merges and records."""
    icfg = cfg.influence
    directory = run.influence_store(estimator.name)
    try:
        engine = Engine(estimator, checkpoint_factory(cfg.model.freeze_embeddings), inputs.checkpoints, icfg, objective=inputs.objective, device=dist.device(icfg.device))
    except ENGINE_ERRORS as e:
        raise user_error(e) from e
    epochs = engine.epochs
    fp = method_fingerprint(run, cfg, estimator, epochs, inputs)
    estimator.bind_store(directory, fp)
    meta = _store_meta(run, cfg, estimator, engine.checkpoints)
    uids = (inputs.train.uids, inputs.test.uids)
    sink = None

    def open_store():
        nonlocal sink
        sink = StoreWriter(directory, fp, meta, *uids, overwrite=overwrite, assemble=True)
        if sink.plan is None and dist.enabled:
            # every rank must follow one plan; a single process plans in `run` after its first load
            sink.begin(engine.make_plan(inputs.train, inputs.test, world=dist.world))
        return sink.plan.to_dict() if sink.plan else None

    plan = _guarded(dist, open_store)
    if sink is None:
        sink = StoreWriter(directory, fp, meta, *uids, overwrite=False, assemble=False)
        sink.plan = Plan.from_dict(plan)
    t0 = time.perf_counter()
    try:
        engine.run(inputs.train, inputs.test, sink, inputs.pad_id, rank=dist.rank, world=dist.world)
    except ENGINE_ERRORS as e:
        raise user_error(e) from e
    per_rank = dist.gather({**engine.stats, "wall_seconds": time.perf_counter() - t0})
    dist.barrier()  # every rank's parts are written
    stats = _merge_stats(per_rank)
    if dist.is_main:
        for e in epochs:
            sink.epoch_done(e)
        if _computed(stats):  # a complete store rerun is left as it is (its stats are the run's that made it)
            # a resumed store keeps what the first process recorded about the method and adds this one's
            sink.meta.method_info = _merged(sink.meta.method_info, estimator.describe())
            if engine.tracked is not None:
                sink.meta.groups = engine.tracked.group_names
                sink.meta.n_params = engine.tracked.num_params()
            sink.finish(stats)
        if not sink.meta.complete:
            raise LingtraceError(f"the influence scores in {directory} are incomplete after the run", "rerun `lingtrace influence RUN`")
    passes = sum(v for k, v in stats.items() if k.endswith("_passes") and k not in ("train_passes", "test_passes"))
    log.info(
        "influence (%s): %d test x %d training examples over %d checkpoints, %d per-example passes in %.1f s",
        estimator.name,
        len(inputs.test),
        len(inputs.train),
        len(epochs),
        passes,
        stats["wall_seconds"],
    )
    return {
        "fingerprint": fp,
        "store": str(directory.relative_to(run.root)),
        "epochs": epochs,
        "passes": passes,
        "seconds": round(stats["wall_seconds"], 2),
        "plan": {"chunks": len(sink.plan.chunks), "shards": len(sink.plan.shards)} if sink.plan else None,
    }


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` updated by ``new``, mappings merged key by key."""
    out = dict(old)
    for key, value in new.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _computed(stats: dict[str, Any]) -> bool:
    """Whether this run computed any part."""
    return stats.get("train_passes", 0) + stats.get("test_passes", 0) > 0


def estimators(options: InfluenceOptions) -> list[Estimator]:
    return [estimator_class(name)(options) for name in options.methods]


def run_influence(run: RunDir, cfg: Config, overwrite: bool = False, dist: Dist = SINGLE) -> dict[str, Any]:
    """Compute (or finish) the store of every method in ``influence.methods``, in order.

    Every method is checked first (e.g. adam-cosine needs the optimizer's second moments), so a
    method that cannot run stops the stage before anything is computed.
    """
    inputs = _inputs(run, cfg)
    methods = estimators(cfg.influence)
    for estimator in methods:
        _guarded(dist, lambda estimator=estimator: estimator.check(estimator.select_checkpoints(list(inputs.checkpoints))))
    results = {m.name: run_method(run, cfg, m, inputs, overwrite, dist) for m in methods}
    first = results[methods[0].name]
    return {
        "epochs": first["epochs"],
        "n_train": len(inputs.train),
        "n_test": len(inputs.test),
        "gradient_passes": first["passes"],
        "seconds": round(sum(r["seconds"] for r in results.values()), 2),
        "plan": first["plan"],
        "processes": dist.world,
        "methods": results,
    }


def _merge_stats(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts summed over ranks; times as the slowest rank's (they ran in parallel)."""
    out: dict[str, Any] = {"processes": len(per_rank)}
    counts = sorted({k for r in per_rank for k in r if k.endswith("_passes")})
    for key in counts:
        out[key] = int(sum(r.get(key, 0) for r in per_rank))
    out["wall_seconds"] = max(r.get("wall_seconds", 0.0) for r in per_rank)
    keys = sorted({k for r in per_rank for k in r.get("seconds", {})})
    out["seconds"] = {k: max(r.get("seconds", {}).get(k, 0.0) for r in per_rank) for k in keys}
    if any("timing" in r for r in per_rank):
        out["timing"] = per_rank[0].get("timing")
    return out
