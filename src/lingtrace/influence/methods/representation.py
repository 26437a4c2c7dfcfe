"""``representation``: cosine of the final model's pooled representations, the similarity baseline of
Rajani et al. (2020) that the paper discusses.

score(z, z_test) = cos(h(z_test), h(z)) with h the objective's pooled representation
(``Objective.representation``; for sequence classifiers the last layer's hidden state at position 0,
``<s>`` / ``[CLS]``) of the final model only. One forward pass per example, no gradients: cheap, and
a floor for the gradient methods. Leaves out everything about training: no gradients, no
checkpoints but the final one, no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lingtrace.influence.methods.base import BlockScores, Estimator, Memory, Resident, cosine_
from lingtrace.influence.plan import SCORES


@dataclass
class RepresentationResident(Resident):
    mat: torch.Tensor  # [m, H]


class RepresentationEstimator(Estimator):
    name = "representation"
    ignores = frozenset({"mode", "lr_weighted", "params", "breakdown", "projection_dim", "projection_seed", "checkpoints"})
    needs_parameters = False
    feature = "representations"
    pass_kind = "forward"

    def select_checkpoints(self, checkpoints):
        final = [c for c in checkpoints if c.final]
        return final[-1:] or checkpoints[-1:]

    def describe(self):
        return {"representation": "last hidden layer at position 0 (<s>/[CLS]) of the final model"}

    def prepare(self, ctx):
        self.ctx = ctx

    def memory(self, avg_tokens):
        ctx = self.ctx
        layers = int(getattr(getattr(ctx.model, "config", None), "num_hidden_layers", 12) or 12)
        # a forward pass without gradients: the hidden states of a few layers at a time
        return Memory(per_test=ctx.hidden * ctx.itemsize, per_train=4 * layers * avg_tokens * ctx.hidden * ctx.itemsize)

    @torch.no_grad()
    def featurise(self, batch):
        return self.ctx.objective.representation(self.ctx.model, batch).to(self.ctx.dtype)

    def resident(self, chunk, features):
        mat = None
        for idx, h in features:
            if mat is None:
                mat = torch.empty((len(chunk), h.shape[1]), dtype=h.dtype, device=h.device)
            mat[idx] = h
        return RepresentationResident(test_norm=torch.linalg.vector_norm(mat, dim=1).double(), mat=mat)

    def score(self, resident, h):
        train_norm = torch.linalg.vector_norm(h, dim=1).double()
        scores = h @ resident.mat.T
        cosine_(scores, train_norm, resident.test_norm)
        return BlockScores({SCORES: scores}, train_norm)

    def finish(self):
        self.ctx = None

