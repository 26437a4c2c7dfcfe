"""``trak``: a TRAK-style estimator (Park et al. 2023) on the CountSketch projection.

At each checkpoint every per-example loss gradient is projected with the CountSketch of
``projection.py`` to k = ``influence.projection_dim`` numbers (2048 when unset), phi(z) = S g(z); the
projected training gradients Phi [N x k] give the kernel K = Phi^T Phi, and

    score(z, z_test) = phi(z_test)^T (K + lambda I)^-1 phi(z),   lambda = 1e-3 * trace(K) / k

summed over checkpoints (TRAK averages over an ensemble of models; here the checkpoints stand in for
it). Fitting K streams the training set once more per checkpoint: (2N + M) E passes. Leaves out
TRAK's output function (the margin log p / (1 - p) and its weighting by 1 - p: the loss gradient is
used as for the other methods), its Gaussian projection (a CountSketch here) and model retraining
for the ensemble.
"""

from __future__ import annotations

import torch

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence.methods.gradient import GradientEstimator
from lingtrace.influence.terms import SketchTerm, project

DEFAULT_DIM = 2048
#: ridge damping, relative to the mean diagonal of the kernel
DAMPING = 1e-3


class PreconditionedSketchTerm(SketchTerm):
    """The test sketches kept multiplied by the inverse kernel: products give phi_test^T K^-1 phi_train."""

    def __init__(self, m, sketch, inverse: torch.Tensor, dtype, device):
        super().__init__(m, sketch, dtype, device)
        self.inverse = inverse

    def add(self, idx, g):
        self.mat[idx] = (project(self.sketch, g).to(self.inverse.dtype) @ self.inverse).to(self.mat.dtype)


class TrakEstimator(GradientEstimator):
    name = "trak"
    projects = True
    ignores = frozenset({"mode", "lr_weighted", "breakdown"})

    def __init__(self, options: InfluenceOptions, tuning: Tuning | None = None):
        super().__init__(options, tuning)
        self.projection_dim = options.projection_dim or DEFAULT_DIM
        self._breakdown = False
        self.damping: dict[str, float] = {}

    @property
    def mode(self) -> str:
        return "preconditioned-dot"

    def describe(self):
        return {"kernel": "CountSketch-projected training gradients", "relative_damping": DAMPING, "damping": self.damping}

    def prepare(self, ctx):
        super().prepare(ctx)
        self.inverse = None
        if ctx.train is None:  # only planning
            return
        k = self.projection_dim
        kernel = torch.zeros((k, k), dtype=torch.float64, device=ctx.device)
        for _, batch in ctx.stream(ctx.train, f"epoch {ctx.epoch} TRAK kernel"):
            phi = project(self.sketch, self.featurise(batch)).double()
            kernel.addmm_(phi.T, phi)
        damping = DAMPING * float(torch.diagonal(kernel).mean())
        self.damping[str(ctx.epoch)] = damping
        kernel.diagonal().add_(damping)
        self.inverse = torch.linalg.inv(kernel)

    def memory(self, avg_tokens):
        need = super().memory(avg_tokens)
        need.per_train += 2 * self.projection_dim * 8  # the projected batch in float64 while fitting
        return need

    def _terms(self, chunk):
        return [PreconditionedSketchTerm(len(chunk), self.sketch, self.inverse, self.ctx.dtype, self.ctx.device)]

    def normalise(self, matrix, train_norm, test_norm):
        pass  # the inverse kernel is the normalisation

    def finish(self):
        super().finish()
        self.inverse = None
