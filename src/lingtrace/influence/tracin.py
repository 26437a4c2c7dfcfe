"""TracIn over fine-tuning checkpoints at (N + M) * E per-example gradient passes.

For each checkpoint (the outermost loop; each is loaded once) the test examples' gradients are
computed once and kept resident (in chunks sized to the available memory when they do not all fit),
the training set is streamed in batches of per-example gradients, and a whole batch's scores against
every resident test example come from one matrix product per parameter group. The paper's
implementation recomputed the training gradients for every test example (N * M * E passes).

Modes (per checkpoint e, then summed over checkpoints):

* ``cosine`` (default, the paper's): ``cos(g_e(z_test), g_e(z))``;
* ``dot`` (plain TracIn): ``g_e(z_test) . g_e(z)``, times the checkpoint's learning rate when
  learning-rate weights are given;
* ``train-normalised``: ``g_e(z_test) . g_e(z) / |g_e(z)|`` (RelatIF-style, divides by the training
  gradient's norm only).

The breakdown splits every score into parameter groups (``word_embeddings``, ``embeddings``,
``layer.N``, ``head``) that sum to it: each group's inner product, normalised by the same full norms.

Public API::

    tracin = TracIn(load_model, ["ckpt/epoch-1", "ckpt/epoch-2"], mode="cosine")
    result = tracin.scores(train_examples, test_examples)   # Examples, or DataFrames + tokenizer
    result.total            # [test x train] summed over checkpoints
    result.per_epoch[1]     # [test x train] of the first checkpoint
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lingtrace.errors import LingtraceError
from lingtrace.influence.grads import Batch, BatchGrads, PerSampleGradients, collate
from lingtrace.influence.params import WORD_EMBEDDINGS, ParamSelection, select_params
from lingtrace.influence.projection import CountSketch
from lingtrace.influence.sparse import SparseRows, sparse_dots
from lingtrace.influence.store import GROUP_PREFIX, SCORES
from lingtrace.utils import progress, resolve_device

log = logging.getLogger(__name__)

MODES = ("cosine", "dot", "train-normalised")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------- examples


@dataclass
class Examples:
    """Tokenised examples: token ids (with special tokens) per example, integer labels, uids."""

    ids: list[np.ndarray]
    labels: np.ndarray
    uids: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.ids) == len(self.labels) == len(self.uids)):
            raise ValueError("Examples: ids, labels and uids differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    @classmethod
    def from_frame(cls, frame, tokenizer, max_length: int = 128, prefix: str = "") -> Examples:
        """Tokenise a frame with ``text_a``, optional ``text_b``, ``label`` and ``uid`` columns exactly as
        training does (``lingtrace.models.loading.encode``)."""
        from lingtrace.data import schema as S
        from lingtrace.models.loading import encode

        missing = [c for c in (S.TEXT_A, S.LABEL) if c not in frame.columns]
        if missing:
            raise LingtraceError(f"examples lack column {missing[0]!r}", "give text_a and label columns")
        uids = frame[S.UID].astype(str).tolist() if S.UID in frame.columns else [str(i) for i in range(len(frame))]
        text_b = frame[S.TEXT_B].tolist() if S.TEXT_B in frame.columns else None
        ids: list[np.ndarray] = []
        step = 512
        for start in range(0, len(frame), step):
            part_b = None if text_b is None else text_b[start : start + step]
            if part_b is not None and not any(part_b):
                part_b = None
            enc = encode(tokenizer, frame[S.TEXT_A].iloc[start : start + step].tolist(), part_b, max_length=max_length, prefix=prefix)
            mask = enc["attention_mask"].numpy().astype(bool)
            arr = enc["input_ids"].numpy()
            ids.extend(arr[i][mask[i]] for i in range(arr.shape[0]))
        return cls(ids=ids, labels=frame[S.LABEL].to_numpy(dtype=np.int64), uids=uids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Examples:
        idx = np.asarray(idx, dtype=np.int64)
        return Examples([self.ids[i] for i in idx], self.labels[idx], [self.uids[i] for i in idx])


def _batches(ex: Examples, batch_size: int, pad_id: int, sort: bool, pin: bool) -> Iterator[tuple[torch.Tensor, Batch]]:
    """(positions, batch) over ``ex``, shortest examples first when ``sort`` (less padding); the
    positions are an int64 tensor (pinned with the batch, for asynchronous copies to a GPU)."""
    order = np.argsort(ex.lengths, kind="stable") if sort else np.arange(len(ex))
    for start in range(0, len(order), batch_size):
        pos = order[start : start + batch_size]
        idx = torch.as_tensor(pos, dtype=torch.long)
        yield (idx.pin_memory() if pin else idx), collate([ex.ids[i] for i in pos], ex.labels[pos], pad_id, pin=pin)


# ---------------------------------------------------------------- plan and sinks


@dataclass
class Plan:
    """How the work is cut: test chunks (rows) and training shards (columns); each (checkpoint,
    chunk, shard) is one unit of work, written as one part and resumable on its own."""

    chunks: list[tuple[int, int]]
    shards: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"chunks": [list(c) for c in self.chunks], "shards": [list(s) for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls([tuple(c) for c in d["chunks"]], [tuple(s) for s in d["shards"]])

    @staticmethod
    def cut(n: int, size: int) -> list[tuple[int, int]]:
        size = max(1, int(size))
        return [(a, min(n, a + size)) for a in range(0, n, size)] or [(0, 0)]


@dataclass
class Part:
    """The scores of one unit: matrices [chunk rows x shard columns] and the gradient norms."""

    epoch: int
    chunk: int
    shard: int
    matrices: dict[str, np.ndarray]
    test_norm: np.ndarray
    train_norm: np.ndarray


class MemorySink:
    """Collects parts into in-memory matrices (the API without a store directory).

    The sink protocol (also implemented by the on-disk store): ``plan`` (a saved plan to follow, or
    None), ``begin(plan)``, ``is_done(epoch, chunk, shard)``, ``put(part)``, ``epoch_done(epoch)``.
    """

    def __init__(self, n_test: int, n_train: int):
        self.n_test, self.n_train = n_test, n_train
        self.plan: Plan | None = None
        self.mats: dict[int, dict[str, np.ndarray]] = {}
        self.test_norm: dict[int, np.ndarray] = {}
        self.train_norm: dict[int, np.ndarray] = {}

    def begin(self, plan: Plan) -> None:
        self.plan = plan

    def is_done(self, epoch: int, chunk: int, shard: int) -> bool:
        return False

    def put(self, part: Part) -> None:
        assert self.plan is not None
        (r0, r1), (c0, c1) = self.plan.chunks[part.chunk], self.plan.shards[part.shard]
        mats = self.mats.setdefault(part.epoch, {})
        for name, m in part.matrices.items():
            if name not in mats:
                mats[name] = np.zeros((self.n_test, self.n_train), dtype=m.dtype)
            mats[name][r0:r1, c0:c1] = m
        self.test_norm.setdefault(part.epoch, np.zeros(self.n_test))[r0:r1] = part.test_norm
        self.train_norm.setdefault(part.epoch, np.zeros(self.n_train))[c0:c1] = part.train_norm

    def epoch_done(self, epoch: int) -> None:
        pass


@dataclass
class TracInResult:
    """Scores of every test example (rows) for every training example (columns)."""

    per_epoch: dict[int, np.ndarray]
    groups: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    test_norm: dict[int, np.ndarray] = field(default_factory=dict)
    train_norm: dict[int, np.ndarray] = field(default_factory=dict)
    train_uids: list[str] = field(default_factory=list)
    test_uids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> np.ndarray:
        return sum(np.asarray(m, dtype=np.float64) for m in self.per_epoch.values())


# ---------------------------------------------------------------- memory


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device`` (CUDA: free memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


# ---------------------------------------------------------------- the scorer


@dataclass
class _Resident:
    """A test chunk's gradients kept on the device (or their sketches)."""

    dense: dict[str, torch.Tensor]  # parameter name -> [m, numel]
    emb: SparseRows | None  # sorted by token
    sketch: torch.Tensor | None  # [m, dim] when projecting
    sq_norm: torch.Tensor  # [m] float64
    slot: torch.Tensor | None = None  # vocab method: token id -> column block (U for tokens outside)
    vocab_mat: torch.Tensor | None = None  # vocab method: [m, U * H] word-embedding gradients


def _scatter_vocab(g: BatchGrads, slot: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width, H]: each example's position gradients summed into the block of their token's slot
    (slot width - 1 collects tokens outside the vocabulary and padding)."""
    b, t, h = g.emb_pos.shape
    slots = torch.where(g.mask.bool(), slot[g.ids], width - 1)
    flat = (torch.arange(b, device=slots.device)[:, None] * width + slots).reshape(-1)
    out = torch.zeros((b * width, h), dtype=g.emb_pos.dtype, device=g.emb_pos.device)
    out.index_add_(0, flat, g.emb_pos.reshape(-1, h))
    return out.view(b, width, h)


class TracIn:
    """TracIn influence of training examples on test examples over a list of checkpoints.

    ``model_factory(checkpoint)`` returns the model of a checkpoint (any Hugging Face sequence
    classifier; parameters with ``requires_grad=False`` are treated as frozen during training and
    left out unless ``trainable_only=False``). ``checkpoints`` are whatever the factory takes (paths,
    state dicts); ``epochs`` labels them (default 1..E). ``lr`` gives one learning rate per checkpoint
    for ``dot`` mode weighting.
    """

    def __init__(
        self,
        model_factory: Callable[[Any], torch.nn.Module],
        checkpoints: Sequence[Any],
        *,
        epochs: Sequence[int] | None = None,
        mode: str = "cosine",
        lr: Sequence[float] | None = None,
        params: Sequence[str] | None = None,
        trainable_only: bool = True,
        breakdown: bool = False,
        batch_size: int = 16,
        test_chunk: int | None = None,
        shard_size: int | None = None,
        device: str | torch.device = "auto",
        dtype: str = "float32",
        projection_dim: int | None = None,
        projection_seed: int = 0,
        sort_by_length: bool = True,
        embedding_method: str = "auto",
        profile: bool = False,
        memory_fraction: float | None = None,
        show_progress: bool = True,
    ):
        if mode not in MODES:
            raise LingtraceError(f"unknown influence mode {mode!r}", f"choose one of {', '.join(MODES)}")
        if dtype not in _DTYPES:
            raise LingtraceError(f"unknown influence dtype {dtype!r}", f"choose one of {', '.join(_DTYPES)}")
        if not checkpoints:
            raise LingtraceError("no checkpoints to compute influence over", "train the model first")
        self.model_factory = model_factory
        self.checkpoints = list(checkpoints)
        self.epochs = list(epochs) if epochs is not None else list(range(1, len(self.checkpoints) + 1))
        if len(self.epochs) != len(self.checkpoints):
            raise ValueError("epochs and checkpoints differ in length")
        self.lr = list(lr) if lr is not None else None
        if self.lr is not None and len(self.lr) != len(self.checkpoints):
            raise ValueError("lr needs one learning rate per checkpoint")
        self.mode = mode
        self.params = list(params or [])
        self.trainable_only = trainable_only
        self.breakdown = bool(breakdown) and projection_dim is None
        if breakdown and projection_dim is not None:
            log.warning("the per-group breakdown is not available with a random projection; storing totals only")
        self.batch_size = int(batch_size)
        self.test_chunk = test_chunk
        self.shard_size = shard_size
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype_name = dtype
        # bf16/fp16: autocast for the gradient passes on CUDA, float32 parameters and accumulation
        self.param_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.autocast = _DTYPES[dtype] if dtype in ("bfloat16", "float16") and self.device.type == "cuda" else None
        if dtype in ("bfloat16", "float16") and self.device.type != "cuda":
            log.warning("influence dtype %s needs a GPU; computing in float32 on %s", dtype, self.device)
        self.projection_dim = projection_dim
        self.projection_seed = projection_seed
        self.sort_by_length = sort_by_length
        if embedding_method not in ("auto", "pairs", "vocab"):
            raise ValueError("embedding_method must be auto, pairs or vocab")
        self.embedding_method = embedding_method
        # on a GPU, per-part timings need a synchronisation around each part (off by default: the
        # training-batch loop then never waits for the device)
        self.profile = profile
        # share of the free memory the resident test gradients may take (after the model is loaded):
        # a GPU is dedicated to the job, a CPU host's memory is shared with everything else
        self.memory_fraction = memory_fraction if memory_fraction is not None else (0.85 if self.device.type == "cuda" else 0.5)
        self.show_progress = show_progress
        self.stats: dict[str, Any] = {
            "gradient_passes": 0,
            "train_passes": 0,
            "test_passes": 0,
            "seconds": {},
            # on a GPU without profiling, the per-part seconds are host-side (kernels run asynchronously)
            "timing": "synchronised" if (profile or self.device.type != "cuda") else "host",
        }

    # -- models ------------------------------------------------------------
    def load(self, index: int) -> tuple[torch.nn.Module, ParamSelection]:
        try:
            model = self.model_factory(self.checkpoints[index])
        except LingtraceError:
            raise
        except Exception as e:  # a damaged checkpoint: one clear line
            raise LingtraceError(
                f"cannot load checkpoint {self.checkpoints[index]}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "retrain that epoch (`lingtrace train RUN --overwrite`) or check the checkpoint files",
            ) from e
        model = model.to(device=self.device, dtype=self.param_dtype)
        model.eval()
        if hasattr(model, "set_attn_implementation"):
            try:  # eager attention has vmap batching rules; sdpa falls back to a slow loop
                model.set_attn_implementation("eager")
            except Exception:  # noqa: BLE001 - not every model supports switching
                pass
        selection = select_params(model, self.params, self.trainable_only)
        return model, selection

    # -- planning ------------------------------------------------------------
    def plan(self, n_train: int, n_test: int, selection: ParamSelection, hidden: int, avg_len: float, world: int = 1) -> Plan:
        """Cut the test set into chunks that fit in memory and the training set into shards whose
        partial score matrices stay small (at least one shard per rank)."""
        itemsize = 8 if self.param_dtype == torch.float64 else 4
        dense = sum(selection.numel[n] for n in selection.dense_names)
        if self.projection_dim is not None:
            per_test = self.projection_dim * itemsize
        else:
            per_test = dense * itemsize + (avg_len * hidden * itemsize if selection.word_embedding else 0)
        # one training batch: its per-example gradients and the transient copies made around them
        per_train = dense * itemsize * (2 if self.device.type == "cuda" else 3) + (avg_len * hidden * itemsize * 2 if selection.word_embedding else 0)
        if self.test_chunk is not None:
            chunk = int(self.test_chunk)
        else:
            budget = self.memory_fraction * available_memory(self.device) - self.batch_size * per_train
            chunk = int(budget // max(per_test, 1))
            if chunk < 1:
                raise LingtraceError(
                    f"not enough memory on {self.device} for one test example's gradient ({per_test / 2**30:.2f} GiB)",
                    "lower influence.batch_size, select fewer parameters (influence.params) or set influence.projection_dim",
                )
        chunk = max(1, min(chunk, n_test))
        groups = len(selection.group_names) + 1 if self.breakdown else 1
        if self.shard_size is not None:
            shard = int(self.shard_size)
        else:
            # partial matrices of a shard: chunk x shard x groups float32, kept under ~256 MiB
            shard = max(self.batch_size, (256 << 20) // max(1, chunk * groups * 4))
            shard = min(shard, max(1, math.ceil(n_train / max(1, world))))
        shard = max(1, min(shard, n_train))
        return Plan(Plan.cut(n_test, chunk), Plan.cut(n_train, shard))

    def make_plan(self, train: Examples, test: Examples, world: int = 1) -> Plan:
        """The plan for these examples (loads the first checkpoint to size the gradients)."""
        model, selection = self.load(0)
        hidden = int(model.get_input_embeddings().weight.shape[1])
        avg_len = float(np.mean(np.r_[train.lengths, test.lengths]))
        del model
        return self.plan(len(train), len(test), selection, hidden, avg_len, world)

    # -- gradients ------------------------------------------------------------
    def _embedding_method(self, test: Examples, hidden: int, itemsize: int) -> str:
        """``vocab`` (dense over the test chunk's vocabulary: one more matrix product, no host
        synchronisation) on a GPU when it fits; ``pairs`` (token matching, memory-lean) otherwise."""
        if self.embedding_method != "auto":
            return self.embedding_method
        if self.device.type != "cuda":
            return "pairs"
        vocab = len(np.unique(np.concatenate(test.ids))) if len(test) else 0
        need = (len(test) + self.batch_size) * (vocab + 1) * hidden * itemsize
        return "vocab" if need <= 0.25 * available_memory(self.device) else "pairs"

    def _test_grads(self, psg: PerSampleGradients, test: Examples, pad_id: int, sketch: CountSketch | None, desc: str) -> _Resident:
        m = len(test)
        dense_names = psg.dense_names
        dense = {}
        sk = None
        method = None
        if sketch is None:
            dense = {n: torch.empty((m, psg.selection.numel[n]), dtype=self.param_dtype, device=self.device) for n in dense_names}
        else:
            sk = torch.zeros((m, sketch.dim), dtype=self.param_dtype, device=self.device)
        sq = torch.zeros(m, dtype=torch.float64, device=self.device)
        embs: list[tuple[torch.Tensor, SparseRows]] = []
        slot = vocab_mat = None
        hidden = int(psg.word_weight.shape[1])
        if psg.with_emb and sketch is None:
            method = self._embedding_method(test, hidden, torch.finfo(self.param_dtype).bits // 8)
            if method == "vocab":
                vocab = torch.as_tensor(np.unique(np.concatenate(test.ids)), device=self.device)
                slot = torch.full((psg.vocab_size,), int(vocab.numel()), dtype=torch.long, device=self.device)
                slot[vocab] = torch.arange(vocab.numel(), device=self.device)
                vocab_mat = torch.zeros((m, int(vocab.numel()) + 1, hidden), dtype=self.param_dtype, device=self.device)
        pin = self.device.type == "cuda"
        for idx, batch in progress(
            _batches(test, self.batch_size, pad_id, self.sort_by_length, pin),
            total=math.ceil(m / self.batch_size),
            desc=desc,
            leave=False,
            disable=None if self.show_progress else True,
        ):
            idx = idx.to(self.device, non_blocking=True)
            g = psg(batch.to(self.device, non_blocking=True))
            self.stats["gradient_passes"] += len(batch)
            self.stats["test_passes"] += len(batch)
            sq[idx] = g.sq_norms()
            if sketch is None:
                for n in dense_names:
                    dense[n][idx] = g.dense[n]
                if g.has_emb and method == "pairs":
                    embs.append((idx, g.rows()))
                elif g.has_emb:
                    vocab_mat[idx] = _scatter_vocab(g, slot, vocab_mat.shape[1]).to(vocab_mat.dtype)
            else:
                part = sketch.sketch_dense(g.dense)
                if g.has_emb:
                    sketch.sketch_sparse(g.rows(), out=part)
                sk[idx] = part.to(sk.dtype)
        emb = None
        if embs:
            emb = SparseRows(
                torch.cat([idx[e.owner] for idx, e in embs]),
                torch.cat([e.token for _, e in embs]),
                torch.cat([e.rows for _, e in embs]),
                m,
            ).sorted_by_token()
        if vocab_mat is not None:
            vocab_mat = vocab_mat[:, :-1].reshape(m, -1)  # drop the slot of tokens outside the vocabulary
        return _Resident(dense=dense, emb=emb, sketch=sk, sq_norm=sq, slot=slot, vocab_mat=vocab_mat)

    def _dense_dots(self, dense: dict[str, torch.Tensor], res: _Resident, groups: dict[str, list[str]]) -> dict[str, torch.Tensor]:
        """Inner products [rows x m] of training gradients with the resident test gradients over the
        dense parameters: per group when there is a breakdown, and their sum under ``scores``."""
        out: dict[str, torch.Tensor] = {}
        total = None
        for group, names in groups.items():
            acc = None
            for n in names:
                d = dense[n] @ res.dense[n].T
                acc = d if acc is None else acc.add_(d)
            if self.breakdown:
                out[group] = acc
            total = acc.clone() if total is None else total.add_(acc)
        if total is not None:
            out[SCORES] = total
        return out

    def _emb_dots(self, g: BatchGrads, res: _Resident) -> torch.Tensor | None:
        """Inner products [B x m] of the word-embedding gradients (exact, never dense over V)."""
        if not g.has_emb:
            return None
        if res.emb is not None:
            return sparse_dots(g.rows(), res.emb)
        if res.vocab_mat is not None:
            width = res.vocab_mat.shape[1] // g.emb_pos.shape[2] + 1
            return _scatter_vocab(g, res.slot, width)[:, :-1].reshape(len(g.loss), -1).to(res.vocab_mat.dtype) @ res.vocab_mat.T
        return None

    # -- the loop ------------------------------------------------------------
    def run(
        self,
        train: Examples,
        test: Examples,
        sink,
        pad_id: int,
        rank: int = 0,
        world: int = 1,
    ) -> Plan:
        """Compute every unit of ``plan`` this rank owns that ``sink`` does not hold yet.

        Units are (checkpoint, test chunk, training shard); rank r owns the shards s with
        s % world == r. ``sink.put(part)`` receives each finished unit, ``sink.epoch_done(epoch)`` is
        called after a checkpoint's units of this rank are done.
        """
        if len(train) == 0 or len(test) == 0:
            raise LingtraceError("influence needs at least one training and one test example")
        plan = sink.plan
        bar_epochs = progress(total=len(self.checkpoints), desc="checkpoints", disable=None if self.show_progress else True)
        for ci, epoch in enumerate(self.epochs):
            todo = None
            if plan is not None:
                todo = [
                    (c, s)
                    for c in range(len(plan.chunks))
                    for s in range(len(plan.shards))
                    if s % world == rank and not sink.is_done(epoch, c, s)
                ]
                if not todo:
                    bar_epochs.update(1)
                    sink.epoch_done(epoch)
                    continue
            t0 = time.perf_counter()
            model, selection = self.load(ci)
            self.stats["seconds"]["load"] = self.stats["seconds"].get("load", 0.0) + time.perf_counter() - t0
            self._check_selection(selection)
            hidden = int(model.get_input_embeddings().weight.shape[1])
            if plan is None:
                avg_len = float(np.mean(np.r_[train.lengths, test.lengths]))
                plan = self.plan(len(train), len(test), selection, hidden, avg_len, world)
                sink.begin(plan)
                todo = [(c, s) for c in range(len(plan.chunks)) for s in range(len(plan.shards)) if s % world == rank and not sink.is_done(epoch, c, s)]
            psg = PerSampleGradients(model, selection, autocast_dtype=self.autocast)
            sketch = None
            if self.projection_dim is not None:
                numel = {n: selection.numel[n] for n in selection.dense_names}
                sketch = CountSketch(self.projection_dim, self.projection_seed, numel)
            groups = selection.dense_groups()
            scale = self.lr[ci] if (self.mode == "dot" and self.lr is not None) else 1.0
            try:
                for c in sorted({c for c, _ in todo}):
                    r0, r1 = plan.chunks[c]
                    t0 = time.perf_counter()
                    res = self._test_grads(psg, test.subset(range(r0, r1)), pad_id, sketch, desc=f"epoch {epoch} test gradients")
                    self._add_time("test_gradients", t0)
                    for s in [s for cc, s in todo if cc == c]:
                        part = self._score_shard(psg, res, train, plan.shards[s], pad_id, groups, sketch, scale, epoch)
                        part.chunk, part.shard = c, s
                        t0 = time.perf_counter()
                        sink.put(part)
                        self._add_time("write", t0)
                    del res
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
                    raise
                raise LingtraceError(
                    f"out of memory on {self.device} computing influence (checkpoint {epoch}; finished parts are kept)",
                    "lower influence.batch_size, set influence.test_chunk smaller, use influence.dtype=bfloat16 on a GPU, "
                    "or influence.projection_dim; then rerun to resume",
                ) from e
            del psg, model
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            sink.epoch_done(epoch)
            bar_epochs.update(1)
        bar_epochs.close()
        return plan

    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _add_time(self, key: str, t0: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats["seconds"][key] = self.stats["seconds"].get(key, 0.0) + time.perf_counter() - t0

    def _check_selection(self, selection: ParamSelection) -> None:
        sig = (tuple(selection.names), tuple(selection.numel[n] for n in selection.names))
        prev = getattr(self, "_selection_sig", None)
        if prev is not None and prev != sig:
            raise LingtraceError(
                "the checkpoints have different parameters (names or shapes)",
                "compute influence over checkpoints of one training run",
            )
        self._selection_sig = sig
        self.selection = selection

    def _score_shard(self, psg, res: _Resident, train: Examples, shard: tuple[int, int], pad_id, groups, sketch, scale, epoch) -> Part:
        c0, c1 = shard
        sub = train.subset(range(c0, c1))
        n, m = len(sub), res.sq_norm.shape[0]
        names = [SCORES] + ([*groups] + ([WORD_EMBEDDINGS] if psg.with_emb else []) if self.breakdown else [])
        acc = {k: torch.zeros((n, m), dtype=self.param_dtype, device=self.device) for k in names}
        sq = torch.zeros(n, dtype=torch.float64, device=self.device)
        pin = self.device.type == "cuda"
        t_grad = t_dot = 0.0

        for idx, batch in progress(
            _batches(sub, self.batch_size, pad_id, self.sort_by_length, pin),
            total=math.ceil(n / self.batch_size),
            desc=f"epoch {epoch} training [{c0}:{c1}]",
            leave=False,
            disable=None if self.show_progress else True,
        ):
            idx = idx.to(self.device, non_blocking=True)
            self._sync()
            t0 = time.perf_counter()
            g = psg(batch.to(self.device, non_blocking=True))
            self._sync()
            t1 = time.perf_counter()
            b = len(batch)
            self.stats["gradient_passes"] += b
            self.stats["train_passes"] += b
            sq[idx] = g.sq_norms()
            if sketch is not None:
                part = sketch.sketch_dense(g.dense)
                if g.has_emb:
                    sketch.sketch_sparse(g.rows(), out=part)
                acc[SCORES].index_copy_(0, idx, (part.to(res.sketch.dtype) @ res.sketch.T).to(acc[SCORES].dtype))
            else:
                e = self._emb_dots(g, res)
                if e is not None:
                    acc[SCORES].index_add_(0, idx, e.to(acc[SCORES].dtype))
                    if self.breakdown:
                        acc[WORD_EMBEDDINGS].index_copy_(0, idx, e.to(acc[WORD_EMBEDDINGS].dtype))
                for k, d in self._dense_dots(g.dense, res, groups).items():
                    if k == SCORES:
                        acc[k].index_add_(0, idx, d.to(acc[k].dtype))
                    else:
                        acc[k].index_copy_(0, idx, d.to(acc[k].dtype))
            del g
            self._sync()
            t_grad += t1 - t0
            t_dot += time.perf_counter() - t1
        secs = self.stats["seconds"]
        secs["train_gradients"] = secs.get("train_gradients", 0.0) + t_grad
        secs["products"] = secs.get("products", 0.0) + t_dot
        test_norm = res.sq_norm.sqrt()
        train_norm = sq.sqrt()

        def inverse(x: torch.Tensor) -> torch.Tensor:
            return torch.where(x > 0, 1.0 / x, torch.zeros_like(x))

        mats = {}
        for k, a in acc.items():  # normalised in place, row and column scalings (no n x m temporaries)
            if self.mode == "cosine":
                a.mul_(inverse(train_norm).to(a.dtype)[:, None]).mul_(inverse(test_norm).to(a.dtype)[None, :])
            elif self.mode == "train-normalised":
                a.mul_(inverse(train_norm).to(a.dtype)[:, None])
            elif scale != 1.0:
                a.mul_(float(scale))
            mats[k if k == SCORES else GROUP_PREFIX + k] = a.T.contiguous().cpu().numpy()
        return Part(epoch, -1, -1, mats, test_norm.cpu().numpy(), train_norm.cpu().numpy())

    # -- convenience ------------------------------------------------------------
    def scores(self, train, test, tokenizer=None, max_length: int = 128, prefix: str = "", pad_id: int | None = None) -> TracInResult:
        """Scores in memory. ``train``/``test``: ``Examples``, or DataFrames tokenised with ``tokenizer``."""
        train_ex = train if isinstance(train, Examples) else Examples.from_frame(train, tokenizer, max_length, prefix)
        test_ex = test if isinstance(test, Examples) else Examples.from_frame(test, tokenizer, max_length, prefix)
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
            if pad_id is None:
                pad_id = 0
        sink = MemorySink(len(test_ex), len(train_ex))
        self.run(train_ex, test_ex, sink, pad_id)
        res = TracInResult(
            per_epoch={e: sink.mats[e][SCORES] for e in self.epochs},
            groups={e: {k[len(GROUP_PREFIX) :]: v for k, v in sink.mats[e].items() if k.startswith(GROUP_PREFIX)} for e in self.epochs},
            test_norm=dict(sink.test_norm),
            train_norm=dict(sink.train_norm),
            train_uids=list(train_ex.uids),
            test_uids=list(test_ex.uids),
            stats=dict(self.stats),
        )
        return res


def default_pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def checkpoint_factory(freeze_embeddings: bool = False) -> Callable[[Any], torch.nn.Module]:
    """A model factory for checkpoint directories written by ``save_pretrained``."""

    def load(path):
        from lingtrace.models.loading import load_checkpoint

        model, _ = load_checkpoint(Path(path))
        if freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    return load
