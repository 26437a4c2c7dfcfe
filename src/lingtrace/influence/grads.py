"""Per-example gradients of the loss for a batch, with ``torch.func`` (``functional_call`` + ``vmap(grad)``).

Each example's loss is its own cross-entropy (never a batch mean), computed in ``model.eval()`` mode
(dropout off). The model is called with ``inputs_embeds`` looked up outside the vmapped function, so
the gradient with respect to the word-embedding matrix arrives as one gradient row per token position
and is kept sparse (``SparseRows``), never as a dense V x H matrix. The attention mask is passed as a
4-D additive float mask (transformers 5 builds 2-D masks with data-dependent control flow, which vmap
cannot trace). Position ids are computed from the token ids exactly as the model does in training.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from lingtrace.influence.params import ParamSelection
from lingtrace.influence.sparse import SparseRows


@dataclass
class Batch:
    """Padded token ids, attention mask and labels of a batch of examples."""

    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64
    labels: torch.Tensor  # [B] int64

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def collate(ids: list[np.ndarray], labels: np.ndarray, pad_id: int, pin: bool = False) -> Batch:
    """Right-pad a list of token-id arrays into a ``Batch``."""
    width = max((len(x) for x in ids), default=0)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if pin:
        input_ids, mask, lab = input_ids.pin_memory(), mask.pin_memory(), lab.pin_memory()
    return Batch(input_ids, mask, lab)


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


def _position_ids(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """Position ids as the model derives them from token ids (XLM-R counts from padding_idx + 1)."""
    base = getattr(model, "base_model", model)
    emb = getattr(base, "embeddings", None)
    fn = getattr(emb, "create_position_ids_from_input_ids", None)
    if fn is None:
        return None
    return fn(input_ids, emb.padding_idx)


class PerSampleGradients:
    """Callable computing ``BatchGrads`` for a ``Batch`` with one vmapped pass over the model.

    ``autocast_dtype`` (bfloat16/float16, CUDA only) runs the forward and backward under autocast;
    gradients of the float32 parameters stay float32.
    """

    def __init__(self, model: torch.nn.Module, selection: ParamSelection, autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.selection = selection
        self.autocast_dtype = autocast_dtype
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.dense_names = selection.dense_names
        self.with_emb = selection.word_embedding is not None
        named = dict(model.named_parameters())
        self.word_weight = model.get_input_embeddings().weight
        self.buffers = dict(model.named_buffers())
        # parameters that are not differentiated are passed as constants
        self.frozen = {n: p.detach() for n, p in named.items() if n not in set(self.dense_names)}
        argnums = (0, 1) if self.with_emb else 0

        def loss_one(params, embeds, mask, pos, label):
            dtype = embeds.dtype
            add_mask = (1.0 - mask.to(dtype))[None, None, None, :] * torch.finfo(dtype).min
            kwargs = {"inputs_embeds": embeds[None], "attention_mask": add_mask}
            if pos is not None:
                kwargs["position_ids"] = pos[None]
            out = functional_call(self.model, ({**self.frozen, **params}, self.buffers), args=(), kwargs=kwargs)
            logits = out.logits if hasattr(out, "logits") else out[0]
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            return torch.nn.functional.cross_entropy(logits, label[None], reduction="sum")

        self._grad = vmap(grad_and_value(loss_one, argnums=argnums), in_dims=(None, 0, 0, 0, 0))
        self._grad_nopos = vmap(grad_and_value(loss_one, argnums=argnums), in_dims=(None, 0, 0, None, 0))

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is not None and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def __call__(self, batch: Batch) -> BatchGrads:
        """Per-example gradients (and losses) of a batch already on the model's device."""
        params = {n: p.detach() for n, p in self.model.named_parameters() if n in set(self.dense_names)}
        ids, mask, labels = batch.input_ids, batch.attention_mask, batch.labels
        pos = _position_ids(self.model, ids)
        embeds = torch.nn.functional.embedding(ids, self.word_weight.detach())
        with self._autocast(ids.device):
            if pos is None:
                out, loss = self._grad_nopos(params, embeds, mask, None, labels)
            else:
                out, loss = self._grad(params, embeds, mask, pos, labels)
        if self.with_emb:
            g_params, g_embeds = out
        else:
            g_params, g_embeds = out, None
        b = len(batch)
        dense = {n: g_params[n].reshape(b, -1) for n in self.dense_names}
        return BatchGrads(dense=dense, emb_pos=g_embeds, ids=ids, mask=mask, loss=loss.detach(), vocab_size=self.vocab_size)
