"""The objective of a kind of model: its per-example loss, model inputs, class scores and pooled
representation, used alike by training, prediction, influence and the report.

Training, evaluation, the influence engine and the per-example gradients (``influence/grads.py``)
call the model only through an ``Objective``, so another kind of model (a causal LM with an
answer-only loss, left padding, rotary positions) plugs in as another objective without touching
them. ``ClassificationObjective`` is the sequence classifier's cross-entropy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lingtrace.objectives.errors import UnsupportedModel


@dataclass
class Batch:
    """Padded token ids, attention mask and labels of a batch of examples."""

    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64
    labels: torch.Tensor  # [B] int64 (an objective may use [B, T] token labels)

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> Batch:
        return Batch(self.input_ids.pin_memory(), self.attention_mask.pin_memory(), self.labels.pin_memory())


def collate(ids: list[np.ndarray], labels: np.ndarray, pad_id: int, pin: bool = False) -> Batch:
    """Right-pad a list of token-id arrays into a ``Batch``."""
    width = max((len(x) for x in ids), default=0)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    batch = Batch(input_ids, mask, lab)
    return batch.pin_memory() if pin else batch


def position_ids(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """Position ids as the model derives them from token ids (XLM-R counts from padding_idx + 1);
    None for models that number positions 0..T-1 themselves."""
    base = getattr(model, "base_model", model)
    emb = getattr(base, "embeddings", None)
    fn = getattr(emb, "create_position_ids_from_input_ids", None)
    if fn is None:
        return None
    return fn(input_ids, emb.padding_idx)


def correct_class_margin(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example: the gold class's score minus the logsumexp of the other classes' scores (differentiable;
    the dtype of ``scores``). Equals log p(gold) - log(1 - p(gold)) under the softmax, without its rounding
    for confident models. The one definition of the margin: evaluation (float64, the prediction tables),
    the LDS and the ekfac method's measurement use it."""
    gold = torch.nn.functional.one_hot(labels, scores.shape[-1]).bool()
    return scores[gold] - scores.masked_fill(gold, -torch.inf).logsumexp(dim=-1)


class Objective(ABC):
    """The loss and inputs of one kind of model (``model.kind``), for training, prediction and influence.

    Per-example gradients are taken of ``example_loss`` under ``torch.func.vmap``: it sees one example
    (no batch dimension) and calls the model through ``forward`` (a functional call with the
    parameters being differentiated) with the example's input embeddings, which are looked up
    outside so that the word-embedding gradient arrives per position. Training minimises the batch
    mean of ``batch_losses``, the same per-example loss; prediction takes the argmax of ``class_scores``.
    """

    #: ``model.kind`` and the loss that is attributed, in words (the report names both)
    kind = "encoder-classifier"
    loss_name = "cross-entropy of the classification head"
    #: why ``batch_logits`` is not available for this objective (None: it is)
    no_batch_logits: str | None = "the objective defines no class logits of a batch"

    def examples(self, frame, tokenizer, max_length: int, prefix: str = ""):
        """Tokenised ``Examples`` of a frame, exactly as training feeds them."""
        from lingtrace.objectives.examples import Examples

        return Examples.from_frame(frame, tokenizer, max_length, prefix)

    def encode_rows(self, tokenizer, rows, max_length: int, prefix: str = "") -> Batch:
        """One training or prediction batch of frame rows (on the CPU)."""
        ex = self.examples(rows, tokenizer, max_length, prefix)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return self.collate(ex.ids, ex.labels, pad)

    @abstractmethod
    def batch_losses(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """[B] per-example losses of a batch with autograd (``model`` may be wrapped in DDP)."""

    @abstractmethod
    def class_scores(self, model: torch.nn.Module, tokenizer, rows, max_length: int, prefix: str = "") -> torch.Tensor:
        """[B, num_labels] scores of frame rows (their softmax is the predicted distribution), without gradients."""

    def pad_id(self, model: torch.nn.Module) -> int:
        """The padding token id when none is given: the model config's, else 0."""
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def collate(self, ids: list[np.ndarray], labels: np.ndarray, pad_id: int, pin: bool = False) -> Batch:
        return collate(ids, labels, pad_id, pin=pin)

    @abstractmethod
    def example_inputs(self, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-example tensors (batch dimension first) that ``example_loss`` receives, one example at a time."""

    @abstractmethod
    def example_loss(self, forward: Callable, inputs_embeds: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed loss of one example (a scalar): ``inputs_embeds`` [T, H], ``inputs`` one example's entries."""

    @abstractmethod
    def representation(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """[B, H] pooled representation of each example (the ``representation`` method)."""

    def batch_logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """[B, num_labels] class logits of a batch with autograd, whose cross-entropy with the batch's labels is
        ``batch_losses`` (what the ekfac method differentiates: the loss with sampled labels and the margin).
        An objective whose class scores cannot be read off one training batch raises ``UnsupportedModel``."""
        raise UnsupportedModel(f"{type(self).__name__} ({self.kind}): {self.no_batch_logits}")


class ClassificationObjective(Objective):
    """Sequence classification: the cross-entropy of a Hugging Face ``...ForSequenceClassification``.

    The attention mask goes in as a 4-D additive float mask (transformers 5 builds 2-D masks with
    data-dependent control flow, which vmap cannot trace); position ids are computed from the token
    ids exactly as the model does in training.
    """

    def encode_rows(self, tokenizer, rows, max_length, prefix=""):
        from lingtrace.data import schema
        from lingtrace.models.loading import encode

        text_b = rows[schema.TEXT_B].tolist() if schema.TEXT_B in rows.columns else []
        enc = encode(tokenizer, rows[schema.TEXT_A].tolist(), text_b if any(text_b) else None, max_length=max_length, prefix=prefix)
        labels = torch.tensor(rows[schema.LABEL].to_numpy(dtype=np.int64)) if schema.LABEL in rows.columns else torch.zeros(len(rows), dtype=torch.long)
        return Batch(enc["input_ids"], enc["attention_mask"], labels)

    no_batch_logits = None

    def batch_logits(self, model, batch):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

    def batch_losses(self, model, batch):
        logits = self.batch_logits(model, batch).float()
        return torch.nn.functional.cross_entropy(logits, batch.labels, reduction="none")

    @torch.no_grad()
    def class_scores(self, model, tokenizer, rows, max_length, prefix=""):
        device = next(model.parameters()).device
        batch = self.encode_rows(tokenizer, rows, max_length, prefix).to(device)
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()

    def example_inputs(self, model, batch):
        out = {"attention_mask": batch.attention_mask, "labels": batch.labels}
        pos = position_ids(model, batch.input_ids)
        if pos is not None:
            out["position_ids"] = pos
        return out

    def example_loss(self, forward, inputs_embeds, inputs):
        dtype = inputs_embeds.dtype
        add_mask = (1.0 - inputs["attention_mask"].to(dtype))[None, None, None, :] * torch.finfo(dtype).min
        kwargs = {"inputs_embeds": inputs_embeds[None], "attention_mask": add_mask}
        if "position_ids" in inputs:
            kwargs["position_ids"] = inputs["position_ids"][None]
        out = forward(**kwargs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return torch.nn.functional.cross_entropy(logits, inputs["labels"][None], reduction="sum")

    def representation(self, model, batch):
        """The encoder's last-layer hidden state at position 0 (``<s>`` / ``[CLS]``).

        For XLM-R/RoBERTa heads this is exactly the tensor the classification head reads (its
        dense + tanh + projection start from ``features[:, 0]``). A BERT classifier reads the pooler
        output ``tanh(W h_0 + b)`` instead; ``h_0`` is taken there too, so that both architectures give
        the encoder's representation at the same point (before the dense + tanh that the XLM-R head
        and the BERT pooler each apply) and it equals ``output_hidden_states``' last layer at position 0.
        """
        base = getattr(model, "base_model", None)
        if base is None or base is model:
            raise UnsupportedModel(f"{type(model).__name__} has no encoder (base_model) whose hidden states give a representation")
        out = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden[:, 0]
