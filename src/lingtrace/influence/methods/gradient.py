"""What the gradient-similarity methods share: per-example gradients, resident test gradients as
terms (``influence/terms.py``), one inner product per term, the breakdown, and normalisation.

A subclass chooses the normalisation (``normalise``) and may transform each batch's gradients
before they are used (``transform``: adam-cosine's preconditioner).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence.context import CheckpointContext
from lingtrace.influence.grads import BatchGrads, PerSampleGradients
from lingtrace.influence.memory import available_memory
from lingtrace.influence.methods.base import BlockScores, Estimator, Memory, Resident
from lingtrace.influence.params import WORD_EMBEDDINGS
from lingtrace.influence.plan import GROUP_PREFIX, SCORES
from lingtrace.influence.projection import CountSketch
from lingtrace.influence.terms import (
    DenseBlock,
    DenseTerm,
    FactoredTerm,
    PairsTerm,
    SketchTerm,
    Term,
    VocabTerm,
)
from lingtrace.objectives import Examples

log = logging.getLogger(__name__)


#: flops per byte above which a matrix product runs at the machine's multiply rate rather than its
#: memory bandwidth (this CPU: 142 GFLOP/s peak over about 14 GB/s; a GPU's is of the same order)
MACHINE_BALANCE = 10.0


def memory_bound(batch: int, n_test: int | None) -> bool:
    """Whether one batch's products with ``n_test`` resident test gradients are memory-bound: a
    [B, D] x [D, m] float32 product does 2 B m D flops on 4 (B + m) D bytes."""
    m = n_test if n_test else batch
    return batch * m / (2.0 * (batch + m)) < MACHINE_BALANCE


@dataclass
class GradientResident(Resident):
    terms: list[Term]


class GradientEstimator(Estimator):
    """Per-example gradient inner products over the selected parameters, exact unless a projection is set."""

    #: whether the method honours influence.projection_dim
    projects: bool = False
    #: whether its exact scores may keep nn.Linear gradients factored (``Tuning.linear_path``; not for
    #: elementwise transforms of the gradients, nor with a projection)
    factorable: bool = False

    def __init__(self, options: InfluenceOptions, tuning: Tuning | None = None):
        super().__init__(options, tuning)
        self.projection_dim = options.projection_dim if self.projects else None
        if options.projection_dim is not None and not self.projects:
            log.warning("%s is exact: influence.projection_dim applies to tracin only", self.name)
        self._breakdown = bool(options.breakdown) and self.projection_dim is None
        self.ctx: CheckpointContext | None = None
        self._block: DenseBlock | None = None

    @property
    def breakdown(self) -> bool:
        return self._breakdown

    def projection(self):
        if self.projection_dim is None:
            return None
        return {"kind": "countsketch", "dim": self.projection_dim, "seed": self.options.projection_seed}

    # -- hooks ----------------------------------------------------------------
    def transform(self, g: BatchGrads) -> BatchGrads:
        """Change a batch's gradients before they are kept or scored (default: unchanged)."""
        return g

    def normalise(self, matrix: torch.Tensor, train_norm: torch.Tensor, test_norm: torch.Tensor) -> None:
        """Turn [B x m] inner products into scores, in place."""
        raise NotImplementedError

    # -- the protocol -----------------------------------------------------------
    def prepare(self, ctx):
        self.ctx = ctx
        path = self.tuning.linear_path if (self.factorable and self.projection_dim is None) else "materialised"
        # product blocks: exact methods whose gradients are used as they are (no transform, no sketch),
        # when one batch's products would be memory-bound (or Tuning.product_rows asks for them); their
        # Linear weights leave the pass as factors and are materialised into the block
        rows = self.tuning.product_rows
        self.blocking = path != "materialised" and rows != 0 and (rows is not None or memory_bound(ctx.batch_size, ctx.n_test))
        self.psg = PerSampleGradients(
            ctx.model,
            ctx.tracked,
            autocast_dtype=ctx.autocast,
            objective=ctx.objective,
            linear_path=path,
            avg_tokens=ctx.avg_tokens,
            probe_all=self.blocking,
        )
        self.product_rows = None
        self.groups = ctx.tracked.dense_groups()
        self.sketch = None
        if self.projection_dim is not None:
            numel = {n: ctx.tracked.numel[n] for n in ctx.tracked.dense_names}
            self.sketch = CountSketch(self.projection_dim, self.options.projection_seed, numel)

    def memory(self, avg_tokens):
        ctx = self.ctx
        itemsize = ctx.itemsize
        dense = sum(ctx.tracked.numel[n] for n in ctx.tracked.dense_names)
        emb = avg_tokens * ctx.hidden * itemsize if ctx.tracked.word_embedding else 0.0
        if self.projection_dim is not None:
            per_test = self.projection_dim * itemsize
        else:
            per_test = dense * itemsize + emb
        # one training batch: its per-example gradients and the transient copies made around them; a
        # probed Linear weight leaves the pass as its positions' inputs and output gradients instead
        probed = {n: m.weight for n, m in self.psg.linears.items()} if self.blocking else {}
        passed = dense - sum(w.numel() for w in probed.values())
        factors = sum(avg_tokens * (w.shape[0] + w.shape[1]) for w in probed.values()) * itemsize
        per_train = passed * itemsize * (2 if ctx.device.type == "cuda" else 3) + 2 * emb + 2 * factors
        return Memory(per_test, per_train)

    def outputs(self):
        if not self.breakdown:
            return [SCORES]
        groups = [*self.groups] + ([WORD_EMBEDDINGS] if self.psg.with_emb else [])
        return [SCORES] + [GROUP_PREFIX + g for g in groups]

    def featurise(self, batch):
        return self.transform(self.psg(batch))

    # -- product blocks (terms.DenseBlock) ----------------------------------------
    def size_block(self, free_bytes):
        """Rows of the product block: as many whole batches as fit in ``free_bytes`` and the block this
        estimator already holds (at most ``Tuning.product_rows``, default 128: on the 2-core CPU the
        products run at 90-99 GFLOP/s there against 55 at one batch of 16, BENCHMARKS.md); no block when
        not even two batches fit or nothing is materialised. A block is allocated once and kept by the
        later checkpoints while it still fits (its first fill page-faults it: about 5 s for the demo's
        3.8 GB)."""
        self.product_rows = None
        if not self.blocking:
            return
        numel = self._block_numel()
        per_row = sum(numel.values()) * self.ctx.itemsize
        if not per_row:
            return
        batch = self.ctx.batch_size
        held = self._block.nbytes if self._block is not None else 0
        rows = min(int(self.tuning.product_rows or 128), int((free_bytes + held) // per_row)) // batch * batch
        if rows < 2 * batch:
            return
        block = self._block
        if block is None or block.capacity > rows or not block.serves(numel, self.ctx.dtype, self.ctx.device):
            self._block = None  # release before allocating the new one
            self._block = block = DenseBlock(rows, numel, self.ctx.dtype, self.ctx.device)
        block.clear()
        self.product_rows = block.capacity

    def _block_numel(self) -> dict[str, int]:
        """The dense products' parameters (tracked order): the pass's dense gradients and the probed
        Linear weights the cost model materialises."""
        names = {*self.psg.dense_names, *self.psg.materialised_factors}
        return {n: self.ctx.tracked.numel[n] for n in self.ctx.tracked.dense_names if n in names}

    def featurise_train(self, batch):
        g = self.featurise(batch)
        if self.product_rows is None:
            return g
        g.sq = g.sq_norms()
        self._block.write(g)
        # what the block now holds is dropped from the batch; the factored terms keep their factors
        kept = set(self.psg.factored or ())
        g.dense = {}
        g.factors = {n: f for n, f in g.factors.items() if n in kept}
        return g

    def _embedding_method(self, chunk: Examples) -> str:
        """``vocab`` on a GPU when it fits (no host synchronisation); ``pairs`` (memory-lean) otherwise."""
        if self.tuning.embedding_method != "auto":
            return self.tuning.embedding_method
        ctx = self.ctx
        if ctx.device.type != "cuda":
            return "pairs"
        need = VocabTerm.bytes_needed(len(chunk) + ctx.batch_size, chunk.ids, ctx.hidden, ctx.itemsize)
        return "vocab" if need <= 0.25 * available_memory(ctx.device) else "pairs"

    def _terms(self, chunk: Examples) -> list[Term]:
        ctx, m = self.ctx, len(chunk)
        if self.sketch is not None:
            return [SketchTerm(m, self.sketch, ctx.dtype, ctx.device)]
        terms: list[Term] = []
        if self.psg.with_emb:  # first: the scores add the dense terms to it (the order of the sums is fixed)
            if self._embedding_method(chunk) == "vocab":
                terms.append(VocabTerm(m, chunk.ids, self.psg.vocab_size, ctx.hidden, ctx.dtype, ctx.device))
            else:
                terms.append(PairsTerm(m))
        numel = self._block_numel()  # the pass's dense gradients and the probed weights materialised
        if numel:  # every selected parameter may be a factored Linear weight
            terms.append(DenseTerm(m, numel, self.groups, ctx.dtype, ctx.device))
        if self.psg.factored:
            terms.append(FactoredTerm(m, self.psg.factored, self.groups))
        return terms

    def resident(self, chunk: Examples, features: Iterator[tuple[torch.Tensor, BatchGrads]]) -> GradientResident:
        terms: list[Term] | None = None  # made at the first batch: its pass decides the factored layers
        sq = torch.zeros(len(chunk), dtype=torch.float64, device=self.ctx.device)
        for idx, g in features:
            if terms is None:
                terms = self._terms(chunk)
            sq[idx] = g.sq_norms()
            for term in terms:
                term.add(idx, g)
        for term in terms:
            term.seal()
        return GradientResident(test_norm=sq.sqrt(), terms=terms)

    def score(self, resident: GradientResident, g: BatchGrads) -> BlockScores:
        return self.score_many(resident, [g])

    def score_many(self, resident: GradientResident, gs: list[BatchGrads]) -> BlockScores:
        dtype = self.ctx.dtype
        blocked = self.product_rows is not None
        groups: dict[str, torch.Tensor] = {}
        scores = None
        for term in resident.terms:
            if blocked and isinstance(term, DenseTerm):
                per_group, total = term.block_dots(self._block)
            elif len(gs) == 1:
                per_group, total = term.dots(gs[0])
            else:
                parts = [term.dots(g) for g in gs]
                per_group = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
                total = torch.cat([p[1] for p in parts])
            for k, v in per_group.items():
                groups[k] = v if k not in groups else groups[k].add_(v)
            scores = total.to(dtype, copy=True) if scores is None else scores.add_(total.to(dtype))
        if blocked:
            self._block.clear()
        train_norm = (gs[0].sq_norms() if len(gs) == 1 else torch.cat([g.sq_norms() for g in gs])).sqrt()
        out = {SCORES: scores}
        if self.breakdown:
            out.update({GROUP_PREFIX + k: v.to(dtype) for k, v in groups.items()})
        for matrix in out.values():
            self.normalise(matrix, train_norm, resident.test_norm)
        return BlockScores(out, train_norm)

    def finish(self):
        # the product block is kept: the next checkpoint reuses its buffers (``size_block``)
        self.ctx = self.psg = self.sketch = None
        self.product_rows = None
