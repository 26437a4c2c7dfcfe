"""Per-example gradients of a task's loss for a batch, with ``torch.func`` (``functional_call`` + ``vmap(grad)``).

Each example's loss is its own (``Task.example_loss``, summed over the example, never a batch mean),
computed in ``model.eval()`` mode (dropout off). The model is called with ``inputs_embeds`` looked up
outside the vmapped function, so the gradient with respect to the word-embedding matrix arrives as
one gradient row per token position and is kept sparse (``SparseRows``), never as a dense V x H
matrix.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad_and_value, vmap

from lingtrace.influence.params import TrackedParams
from lingtrace.influence.sparse import SparseRows
from lingtrace.influence.task import Batch, ClassificationTask, Task, collate

__all__ = ["Batch", "BatchGrads", "PerSampleGradients", "collate"]


@dataclass
class BatchGrads:
    """Per-example gradients of a batch: dense parameters flattened to [B, numel], and the gradients
    with respect to the input word embeddings at each position (``emb_pos`` [B, T, H], with the token
    ``ids`` and ``mask`` of the positions; ``None`` when the word embeddings are not selected). The
    gradient of the word-embedding matrix is their sum per token: ``rows()`` gives it sparse."""

    dense: dict[str, torch.Tensor]
    emb_pos: torch.Tensor | None
    ids: torch.Tensor
    mask: torch.Tensor
    loss: torch.Tensor  # [B]
    vocab_size: int = 0

    @property
    def has_emb(self) -> bool:
        return self.emb_pos is not None

    def rows(self) -> SparseRows:
        """The word-embedding gradients as one row per distinct (example, token)."""
        assert self.emb_pos is not None
        return SparseRows.from_positions(self.emb_pos, self.ids, self.mask, self.vocab_size or None)

    def emb_sq_norms(self) -> torch.Tensor:
        """Squared norm of each example's word-embedding gradient [B] (float64), without grouping by
        token: |sum_u row_u|^2 = sum over position pairs holding the same token of g_t . g_s."""
        assert self.emb_pos is not None
        m = self.mask.to(self.emb_pos.dtype)
        g = self.emb_pos * m[..., None]
        same = (self.ids[:, :, None] == self.ids[:, None, :]).to(g.dtype)
        gram = torch.bmm(g, g.transpose(1, 2))
        return (gram * same).sum((1, 2)).double()

    def sq_norms(self) -> torch.Tensor:
        """Squared gradient norm per example over every selected parameter [B] (float64)."""
        b = int(self.loss.shape[0])
        out = torch.zeros(b, dtype=torch.float64, device=self.loss.device)
        for g in self.dense.values():
            # a float32 norm (cascade-summed by torch) squared in float64; no float64 copy of g
            out += torch.linalg.vector_norm(g, dim=1).double().pow(2)
        if self.emb_pos is not None:
            out += self.emb_sq_norms()
        return out


class PerSampleGradients:
    """Callable computing ``BatchGrads`` for a ``Batch`` with one vmapped pass over the model.

    ``task`` gives the loss and the model inputs (default: sequence classification).
    ``autocast_dtype`` (bfloat16/float16, CUDA only) runs the forward and backward under autocast;
    gradients of the float32 parameters stay float32.
    """

    def __init__(self, model: torch.nn.Module, tracked: TrackedParams, autocast_dtype: torch.dtype | None = None, task: Task | None = None):
        self.model = model
        self.tracked = tracked
        self.task = task or ClassificationTask()
        self.autocast_dtype = autocast_dtype
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.dense_names = tracked.dense_names
        self.with_emb = tracked.word_embedding is not None
        named = dict(model.named_parameters())
        self.word_weight = model.get_input_embeddings().weight
        self.buffers = dict(model.named_buffers())
        # parameters that are not differentiated are passed as constants
        self.frozen = {n: p.detach() for n, p in named.items() if n not in set(self.dense_names)}
        argnums = (0, 1) if self.with_emb else 0

        def loss_one(params, embeds, inputs):
            def forward(**kwargs):
                return functional_call(self.model, ({**self.frozen, **params}, self.buffers), args=(), kwargs=kwargs)

            return self.task.example_loss(forward, embeds, inputs)

        self._grad = vmap(grad_and_value(loss_one, argnums=argnums), in_dims=(None, 0, 0))

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is not None and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def __call__(self, batch: Batch) -> BatchGrads:
        """Per-example gradients (and losses) of a batch already on the model's device."""
        params = {n: p.detach() for n, p in self.model.named_parameters() if n in set(self.dense_names)}
        ids = batch.input_ids
        inputs = self.task.example_inputs(self.model, batch)
        embeds = torch.nn.functional.embedding(ids, self.word_weight.detach())
        with self._autocast(ids.device):
            out, loss = self._grad(params, embeds, inputs)
        if self.with_emb:
            g_params, g_embeds = out
        else:
            g_params, g_embeds = out, None
        b = len(batch)
        dense = {n: g_params[n].reshape(b, -1) for n in self.dense_names}
        return BatchGrads(dense=dense, emb_pos=g_embeds, ids=ids, mask=batch.attention_mask, loss=loss.detach(), vocab_size=self.vocab_size)
