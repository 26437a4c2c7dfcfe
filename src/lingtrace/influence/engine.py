"""The influence engine: one loop for every method, at (N + M) * E per-example passes.

For each checkpoint (the outermost loop; each is loaded once) the test examples' features are
computed once and kept resident (in chunks sized to the available memory when they do not all fit),
the training set is streamed in batches, and each batch is scored against every resident test
example at once. The paper's implementation recomputed the training gradients for every test
example (N * M * E passes).

What the features are and how a batch is scored is the method's (``methods/base.py``); planning,
timing, progress, resumption through the sink, sharding across ranks and out-of-memory handling are
the engine's. The engine raises ``influence.errors`` exceptions, never ``LingtraceError``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence import errors
from lingtrace.influence.context import Checkpoint, CheckpointContext
from lingtrace.influence.memory import available_memory
from lingtrace.influence.methods.base import Estimator, Resident
from lingtrace.influence.params import TrackedParams, select_params
from lingtrace.influence.plan import Part, Plan, Sink
from lingtrace.objectives import ClassificationObjective, Examples, Objective, batches
from lingtrace.utils import progress, resolve_device

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Engine:
    """Runs one estimator over ``checkpoints`` (those the estimator selects).

    ``model_factory(checkpoint.source)`` returns the model of a checkpoint (any Hugging Face model the
    task can call; parameters with ``requires_grad=False`` are treated as frozen during training and
    left out unless ``tuning.trainable_only`` is false). ``device`` overrides ``options.device``.
    """

    def __init__(
        self,
        estimator: Estimator,
        model_factory: Callable[[Any], torch.nn.Module],
        checkpoints: Sequence[Checkpoint],
        options: InfluenceOptions,
        tuning: Tuning | None = None,
        objective: Objective | None = None,
        device: str | torch.device | None = None,
    ):
        if not checkpoints:
            raise errors.NoCheckpoints("no checkpoints to compute influence over")
        self.estimator = estimator
        self.model_factory = model_factory
        self.checkpoints = estimator.select_checkpoints(list(checkpoints))
        self.options = options
        self.tuning = tuning or Tuning()
        self.objective = objective or ClassificationObjective()
        device = options.device if device is None else device
        self.device = resolve_device(device) if isinstance(device, str) else device
        # bf16/fp16: autocast for the passes on CUDA, float32 parameters and accumulation
        self.param_dtype = torch.float64 if options.dtype == "float64" else torch.float32
        half = options.dtype in ("bfloat16", "float16")
        self.autocast = DTYPES[options.dtype] if half and self.device.type == "cuda" else None
        if half and self.device.type != "cuda":
            log.warning("influence dtype %s needs a GPU; computing in float32 on %s", options.dtype, self.device)
        # share of the free memory the resident test features may take (after the model is loaded):
        # a GPU is dedicated to the job, a CPU host's memory is shared with everything else
        fraction = self.tuning.memory_fraction
        self.memory_fraction = fraction if fraction is not None else (0.85 if self.device.type == "cuda" else 0.5)
        self.tracked: TrackedParams | None = None
        self._tracked_sig = None
        self.collate: Callable | None = None  # the objective's collate with the pad id bound (set at each load)
        self.avg_tokens: float | None = None  # of the examples being scored (set by run and make_plan)
        self.n_test: int | None = None  # test examples being scored (set by run and make_plan)
        kind = estimator.pass_kind
        self.stats: dict[str, Any] = {
            f"{kind}_passes": 0,
            "train_passes": 0,
            "test_passes": 0,
            "seconds": {},
            # on a GPU without profiling, the per-part seconds are host-side (kernels run asynchronously)
            "timing": "synchronised" if (self.tuning.profile or self.device.type != "cuda") else "host",
        }

    @property
    def epochs(self) -> list[int]:
        return [c.epoch for c in self.checkpoints]

    # -- models ------------------------------------------------------------
    def load(self, index: int, train: Examples | None = None, pad_id: int | None = None) -> CheckpointContext:
        """Load checkpoint ``index`` (of ``self.checkpoints``) and prepare the estimator at it (with
        the training examples ``train`` for methods fitted on them; None when only planning)."""
        ckpt = self.checkpoints[index]
        t0 = time.perf_counter()
        try:
            model = self.model_factory(ckpt.source)
        except errors.ENGINE_ERRORS:
            raise
        except Exception as e:  # a damaged checkpoint: one clear line
            first = str(e).splitlines()[0] if str(e) else ""
            raise errors.CheckpointLoadError(f"cannot load checkpoint {ckpt.source}: {type(e).__name__}: {first}") from e
        model = model.to(device=self.device, dtype=self.param_dtype)
        model.eval()
        if hasattr(model, "set_attn_implementation"):
            try:  # eager attention has vmap batching rules; sdpa falls back to a slow loop
                model.set_attn_implementation("eager")
            except Exception:  # noqa: BLE001 - not every model supports switching
                pass
        tracked = None
        if self.estimator.needs_parameters:
            tracked = select_params(model, self.options.params, self.tuning.trainable_only)
            self._check_tracked(tracked)
        self._add_time("load", t0)
        self.collate = partial(self.objective.collate, pad_id=self.objective.pad_id(model) if pad_id is None else int(pad_id))
        ctx = CheckpointContext(
            checkpoint=ckpt,
            model=model,
            tracked=tracked,
            objective=self.objective,
            device=self.device,
            dtype=self.param_dtype,
            autocast=self.autocast,
            hidden=int(model.get_input_embeddings().weight.shape[1]),
            batch_size=int(self.options.batch_size),
            train=train,
            stream=lambda ex, desc: self._device_batches(ex, desc, "train"),
            avg_tokens=self.avg_tokens,
            n_test=self.n_test,
        )
        t0 = time.perf_counter()
        self.estimator.prepare(ctx)
        self._add_time("prepare", t0)
        return ctx

    def _check_tracked(self, tracked: TrackedParams) -> None:
        sig = (tuple(tracked.names), tuple(tracked.numel[n] for n in tracked.names))
        if self._tracked_sig is not None and self._tracked_sig != sig:
            raise errors.MismatchedCheckpoints("the checkpoints have different parameters (names or shapes)")
        self._tracked_sig = sig
        self.tracked = tracked

    # -- planning ------------------------------------------------------------
    def plan(self, n_train: int, n_test: int, avg_tokens: float, world: int = 1) -> Plan:
        """Cut the test set into chunks that fit in memory and the training set into shards whose
        partial score matrices stay small (at least one shard per rank). Needs a prepared checkpoint."""
        need = self.estimator.memory(avg_tokens)
        batch = int(self.options.batch_size)
        if self.options.test_chunk is not None:
            chunk = int(self.options.test_chunk)
        else:
            budget = self.memory_fraction * available_memory(self.device) - batch * need.per_train
            chunk = int(budget // max(need.per_test, 1))
            if chunk < 1:
                raise errors.NotEnoughMemory(
                    f"not enough memory on {self.device} for one test example's features ({need.per_test / 2**30:.2f} GiB)"
                )
        chunk = max(1, min(chunk, n_test))
        outputs = len(self.estimator.outputs())
        if self.tuning.shard_size is not None:
            shard = int(self.tuning.shard_size)
        else:
            # partial matrices of a shard: chunk x shard x outputs float32, kept under ~256 MiB
            shard = max(batch, (256 << 20) // max(1, chunk * outputs * 4))
            shard = min(shard, max(1, math.ceil(n_train / max(1, world))))
        shard = max(1, min(shard, n_train))
        return Plan(Plan.cut(n_test, chunk), Plan.cut(n_train, shard))

    def make_plan(self, train: Examples, test: Examples, world: int = 1) -> Plan:
        """The plan for these examples (loads the first checkpoint to size the features)."""
        self.avg_tokens, self.n_test = _avg_tokens(train, test), len(test)
        self.load(0)
        plan = self.plan(len(train), len(test), _avg_tokens(train, test), world)
        self.estimator.finish()
        return plan

    # -- the loop ------------------------------------------------------------
    def run(self, train: Examples, test: Examples, sink: Sink, pad_id: int | None = None, rank: int = 0, world: int = 1) -> Plan:
        """Compute every unit of the plan this rank owns that ``sink`` does not hold yet.

        Units are (checkpoint, test chunk, training shard); rank r owns the shards s with
        s % world == r. ``sink.put(part)`` receives each finished unit, ``sink.epoch_done(epoch)`` is
        called after a checkpoint's units of this rank are done. ``pad_id`` defaults to the model's.
        """
        if len(train) == 0 or len(test) == 0:
            raise errors.NoExamples("influence needs at least one training and one test example")
        plan = sink.plan
        self.avg_tokens, self.n_test = _avg_tokens(train, test), len(test)
        bar = progress(total=len(self.checkpoints), desc="checkpoints", disable=None if self.tuning.show_progress else True)
        for index, ckpt in enumerate(self.checkpoints):
            epoch = ckpt.epoch
            todo = None
            if plan is not None:
                todo = [u for u in plan.units(rank, world) if not sink.is_done(epoch, *u)]
                if not todo:
                    bar.update(1)
                    sink.epoch_done(epoch)
                    continue
            ctx = self.load(index, train, pad_id)
            if plan is None:
                plan = self.plan(len(train), len(test), _avg_tokens(train, test), world)
                sink.begin(plan)
                todo = [u for u in plan.units(rank, world) if not sink.is_done(epoch, *u)]
            try:
                for c in sorted({c for c, _ in todo}):
                    r0, r1 = plan.chunks[c]
                    chunk = test.subset(range(r0, r1))
                    t0 = time.perf_counter()
                    res = self.estimator.resident(chunk, self._features(chunk, f"epoch {epoch} test {self.estimator.feature}"))
                    self._add_time(f"test_{self.estimator.feature}", t0)
                    self.estimator.size_block(self._free_for_block())
                    for s in [s for cc, s in todo if cc == c]:
                        part = self._score_shard(res, train, plan.shards[s], epoch)
                        part.chunk, part.shard = c, s
                        t0 = time.perf_counter()
                        sink.put(part)
                        self._add_time("write", t0)
                    del res
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
                    raise
                raise errors.OutOfMemory(f"out of memory on {self.device} computing influence (checkpoint {epoch}; finished parts are kept)") from e
            self.estimator.finish()
            del ctx
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            sink.epoch_done(epoch)
            bar.update(1)
        bar.close()
        return plan

    def _free_for_block(self) -> float:
        """Bytes an estimator may use for a product block once the test chunk is resident: the engine's
        memory share of what is free now (half of it on a GPU), less one training batch's transient
        features. The test chunk is planned first, so a block never costs another pass over the
        training set."""
        need = self.estimator.memory(self.avg_tokens or 1.0)
        share = self.memory_fraction * available_memory(self.device) * (0.5 if self.device.type == "cuda" else 1.0)
        return max(0.0, share - int(self.options.batch_size) * need.per_train)

    def _device_batches(self, ex: Examples, desc: str, side: str) -> Iterator[tuple[torch.Tensor, Any]]:
        """(positions, batch) on the device over ``ex`` in the engine's batches, counted as ``side`` passes."""
        pin = self.device.type == "cuda"
        size = int(self.options.batch_size)
        for idx, batch in progress(
            batches(ex, size, self.collate, self.tuning.sort_by_length, pin),
            total=math.ceil(len(ex) / size),
            desc=desc,
            leave=False,
            disable=None if self.tuning.show_progress else True,
        ):
            self.stats[f"{self.estimator.pass_kind}_passes"] += len(batch)
            self.stats[f"{side}_passes"] += len(batch)
            yield idx.to(self.device, non_blocking=True), batch.to(self.device, non_blocking=True)

    def _features(self, chunk: Examples, desc: str) -> Iterator[tuple[torch.Tensor, Any]]:
        for idx, batch in self._device_batches(chunk, desc, "test"):
            yield idx, self.estimator.featurise(batch)

    def _score_shard(self, res: Resident, train: Examples, shard: tuple[int, int], epoch: int) -> Part:
        c0, c1 = shard
        sub = train.subset(range(c0, c1))
        n = len(sub)
        acc: dict[str, torch.Tensor] = {}
        norms = torch.zeros(n, dtype=torch.float64, device=self.device)
        t_features = t_scores = 0.0
        size = int(self.options.batch_size)
        rows = max(size, int(self.estimator.product_rows or size))
        pending: list[tuple[torch.Tensor, Any]] = []

        def flush() -> float:
            # one scoring call for the gathered batches (a block of up to `rows` examples)
            self._sync()
            t0 = time.perf_counter()
            idx = pending[0][0] if len(pending) == 1 else torch.cat([i for i, _ in pending])
            block = self.estimator.score_many(res, [f for _, f in pending])
            for name, matrix in block.matrices.items():
                if name not in acc:
                    acc[name] = torch.zeros((n, matrix.shape[1]), dtype=matrix.dtype, device=self.device)
                acc[name].index_copy_(0, idx, matrix)
            norms[idx] = block.train_norm
            del block
            pending.clear()
            self._sync()
            return time.perf_counter() - t0

        for idx, batch in self._device_batches(sub, f"epoch {epoch} training [{c0}:{c1}]", "train"):
            self._sync()
            t0 = time.perf_counter()
            pending.append((idx, self.estimator.featurise_train(batch)))
            self._sync()
            t_features += time.perf_counter() - t0
            if sum(len(i) for i, _ in pending) + size > rows:  # the next batch would not fit in the block
                t_scores += flush()
        if pending:
            t_scores += flush()
        secs = self.stats["seconds"]
        key = f"train_{self.estimator.feature}"
        secs[key] = secs.get(key, 0.0) + t_features
        secs["products"] = secs.get("products", 0.0) + t_scores
        mats = {name: a.T.contiguous().cpu().numpy() for name, a in acc.items()}
        return Part(epoch, -1, -1, mats, res.test_norm.cpu().numpy(), norms.cpu().numpy())

    def _sync(self) -> None:
        if self.tuning.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _add_time(self, key: str, t0: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats["seconds"][key] = self.stats["seconds"].get(key, 0.0) + time.perf_counter() - t0


def _avg_tokens(train: Examples, test: Examples) -> float:
    return float(np.mean(np.r_[train.lengths, test.lengths]))
