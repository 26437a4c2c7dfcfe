"""``trak``: a TRAK-style estimator (Park et al. 2023) on the CountSketch projection.

At each checkpoint the per-example gradient of an output function is projected with the CountSketch
of ``projection.py`` to k = ``influence.projection_dim`` numbers (``DEFAULT_DIM`` when unset),
phi(z) = S grad f(z); the projected training gradients Phi [N x k] give the kernel K = Phi^T Phi, and

    score(z_test, z) = phi(z_test)^T (K + lambda I)^-1 phi(z) w(z),   lambda = damping * trace(K) / k

summed over checkpoints (TRAK averages over an ensemble of models; here the checkpoints stand in for
it). ``damping`` (``influence.trak_damping``, ``DAMPING`` = 1 by default) is relative to the mean
eigenvalue of K, trace(K) / k. The output function (``influence.trak_output``):

* ``loss`` (default): f the cross-entropy, w = 1 (the loss gradients the other methods use);
* ``margin``: TRAK's: f the correct-class margin log p / (1 - p) (what the LDS measures), and
  w(z) = 1 - p(z), TRAK's Q. grad CE = -(1 - p) grad f, so w(z) phi(z) is minus the loss gradient's
  sketch: the kernel and the test side use the margin gradient, the training side the loss gradient.
  1 - p = sigmoid(-margin) comes from a forward pass (``objective.batch_logits``).

Why the damping is 1 (measured on the embedded demo against its LDS bank of 16 retrained halves,
``benchmarks/bench_trak.py``, BENCHMARKS.md "trak"): with k = 2048 sketched numbers and N = 1,500
training examples, K has rank N < k and a spectrum spread over ten orders of magnitude; 400-570 of its
1,500 non-zero eigenvalues lie below 1e-3 of the mean. The damping of 1e-3 x the mean eigenvalue used
before issue 22 let (K + lambda I)^-1 weight those directions, which single training examples span
almost alone, up to 1e6 times more than the directions the training set shares: the scores become the
coefficients of a kernel regression that interpolates, and the LDS fell to 0.09 (chance, p = 0.08).
A ridge at the mean eigenvalue keeps the preconditioning of the dominant directions and stops the
amplification: LDS 0.43 (0.36 to 0.50). Neither the float precision (float32 products differ from
float64 by 5e-5 relative), the 1 - p weighting (worse here), per-checkpoint scaling nor a smaller k
was the cause.

Fitting K streams the training set once more per checkpoint: (2N + M) E gradient passes. The kernel,
its Cholesky factor and the products are float64 (k x k numbers; a zero damping is allowed only with
k < N, where K can be invertible). Leaves out TRAK's Gaussian projection (a CountSketch here), its
separate averaging of Q over the ensemble and the retrained models of the ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lingtrace.config.influence import TRAK_OUTPUTS, InfluenceOptions, Tuning
from lingtrace.influence.errors import InfluenceError, UnsupportedModel
from lingtrace.influence.methods.base import BlockScores, Resident
from lingtrace.influence.methods.gradient import GradientEstimator
from lingtrace.influence.plan import SCORES
from lingtrace.influence.terms import project
from lingtrace.objectives import correct_class_margin

DEFAULT_DIM = 2048
#: ridge damping, relative to the mean eigenvalue of the kernel (trace(K) / k): the default of
#: ``influence.trak_damping``, measured (module docstring)
DAMPING = InfluenceOptions.__dataclass_fields__["trak_damping"].default
OUTPUTS = TRAK_OUTPUTS
DEFAULT_OUTPUT = InfluenceOptions.__dataclass_fields__["trak_output"].default


@dataclass
class Sketched:
    """A batch's projected output-function gradients [B, k] (float64), the training-side weights w [B]
    (None: 1) and the squared norms of the loss gradients [B] (float64, the store's norms)."""

    phi: torch.Tensor
    weight: torch.Tensor | None
    sq: torch.Tensor


@dataclass
class TrakResident(Resident):
    #: [m, k] float64: the test sketches times the inverse kernel
    mat: torch.Tensor


class TrakEstimator(GradientEstimator):
    name = "trak"
    projects = True
    ignores = frozenset({"mode", "lr_weighted", "breakdown"})

    def __init__(self, options: InfluenceOptions, tuning: Tuning | None = None, *, damping: float | None = None, output: str | None = None):
        super().__init__(options, tuning)
        self.projection_dim = options.projection_dim or DEFAULT_DIM
        self._breakdown = False
        self.relative_damping = float(options.trak_damping if damping is None else damping)
        if not self.relative_damping >= 0:
            raise ValueError(f"trak damping must be at least 0, got {damping}")
        self.output = options.trak_output if output is None else output
        if self.output not in OUTPUTS:
            raise ValueError(f"trak output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.damping: dict[str, float] = {}
        self.factor: torch.Tensor | None = None

    @property
    def mode(self) -> str:
        return "preconditioned-dot"

    def describe(self):
        return {
            "kernel": "CountSketch-projected training gradients",
            "output": self.output,
            "relative_damping": self.relative_damping,
            "damping": self.damping,
        }

    def identity(self):
        # the damping and the output, even at their defaults: a store of the damping before issue 22
        # (1e-3, when no key named it) must not pass for one of the measured default
        return {"relative_damping": self.relative_damping, "output": self.output}

    def prepare(self, ctx):
        super().prepare(ctx)
        self.factor = None
        if self.output == "margin" and ctx.objective.no_batch_logits:
            raise UnsupportedModel(f"trak's margin output needs class logits of a batch: {ctx.objective.no_batch_logits}")
        if ctx.train is None:  # only planning
            return
        k = self.projection_dim
        kernel = torch.zeros((k, k), dtype=torch.float64, device=ctx.device)
        for _, batch in ctx.stream(ctx.train, f"epoch {ctx.epoch} TRAK kernel"):
            phi = self.featurise(batch).phi
            kernel.addmm_(phi.T, phi)
        damping = self.relative_damping * float(torch.diagonal(kernel).mean())
        self.damping[str(ctx.epoch)] = damping
        kernel.diagonal().add_(damping)
        factor, info = torch.linalg.cholesky_ex(kernel)
        if int(info) != 0 or (damping == 0 and len(ctx.train) < k):  # rank <= N < k: singular however it rounds
            raise InfluenceError(
                f"the TRAK kernel of checkpoint {ctx.epoch} is singular (damping {damping:g}): "
                "use a damping above 0 or a projection dimension below the number of training examples"
            )
        self.factor = factor

    def memory(self, avg_tokens):
        need = super().memory(avg_tokens)
        need.per_test = self.projection_dim * 8
        need.per_train += 2 * self.projection_dim * 8  # the projected batch in float64
        return need

    def featurise(self, batch):
        g = self.psg(batch)
        phi = project(self.sketch, g).double()
        weight = None
        if self.output == "margin":
            with torch.no_grad():
                logits = self.ctx.objective.batch_logits(self.ctx.model, batch)
            q = torch.sigmoid(-correct_class_margin(logits.double(), batch.labels))  # 1 - p(gold)
            # a certain prediction (1 - p below float64's range) has a zero loss gradient: keep it 0, not 0 / 0
            q = q.clamp_min(torch.finfo(torch.float64).tiny)
            phi = phi / -q[:, None]  # grad margin = grad CE / -(1 - p)
            weight = q
        return Sketched(phi, weight, g.sq_norms())

    def featurise_train(self, batch):
        return self.featurise(batch)

    def size_block(self, free_bytes):
        self.product_rows = None

    def resident(self, chunk, features):
        m, k = len(chunk), self.projection_dim
        phi = torch.zeros((m, k), dtype=torch.float64, device=self.ctx.device)
        sq = torch.zeros(m, dtype=torch.float64, device=self.ctx.device)
        for idx, f in features:
            phi[idx] = f.phi
            sq[idx] = f.sq
        mat = torch.cholesky_solve(phi.T.contiguous(), self.factor).T.contiguous()  # phi_test (K + lambda I)^-1
        return TrakResident(test_norm=sq.sqrt(), mat=mat)

    def score(self, resident, f):
        return self.score_many(resident, [f])

    def score_many(self, resident, fs):
        phi = torch.cat([f.phi for f in fs])
        scores = phi @ resident.mat.T  # [B, m]
        if fs[0].weight is not None:
            scores.mul_(torch.cat([f.weight for f in fs])[:, None])
        sq = torch.cat([f.sq for f in fs])
        return BlockScores({SCORES: scores.to(self.ctx.dtype)}, sq.sqrt())

    def normalise(self, matrix, train_norm, test_norm):
        pass  # the inverse kernel is the normalisation

    def finish(self):
        super().finish()
        self.factor = None

