"""``tracin``: the paper's TracIn over the fine-tuning checkpoints (Pruthi et al. 2020; Choenni et al. 2023).

Per checkpoint e, then summed over checkpoints:

* ``cosine`` (default, the paper's): ``cos(g_e(z_test), g_e(z))``;
* ``dot`` (plain TracIn): ``g_e(z_test) . g_e(z)``, times the checkpoint's learning rate when
  ``lr_weighted`` (the checkpoint's ``lr``);
* ``train-normalised``: ``g_e(z_test) . g_e(z) / |g_e(z)|`` (RelatIF-style, divides by the training
  gradient's norm only).

Exact over every selected parameter (the word-embedding matrix by its sparse rows) unless
``projection_dim`` sketches the gradients (CountSketch; no breakdown then). Leaves out: the
learning-rate path between checkpoints (the sum over checkpoints stands for it) and any curvature.
"""

from __future__ import annotations

from lingtrace.influence.methods.base import cosine_, inverse
from lingtrace.influence.methods.gradient import GradientEstimator


class TracInEstimator(GradientEstimator):
    name = "tracin"
    projects = True
    factorable = True

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def lr_weighted(self) -> bool:
        return bool(self.options.lr_weighted)

    def prepare(self, ctx):
        super().prepare(ctx)
        lr = ctx.checkpoint.lr
        self.scale = float(lr) if (self.mode == "dot" and self.lr_weighted and lr is not None) else 1.0

    def normalise(self, matrix, train_norm, test_norm):
        if self.mode == "cosine":
            cosine_(matrix, train_norm, test_norm)
        elif self.mode == "train-normalised":
            matrix.mul_(inverse(train_norm).to(matrix.dtype)[:, None])
        elif self.scale != 1.0:
            matrix.mul_(self.scale)
