"""The objectives of decoder models (``model.kind``): ``decoder-classifier`` and ``causal-lm``.

Both feed the model input embeddings with the 4-D causal + padding mask and mask-derived positions
of ``models/decoder.py``, in training, prediction and influence alike, so that the loss TracIn
differentiates is the loss that was trained. Each row's real tokens are moved to its right end inside
the loss (a gather, which ``vmap`` traces and whose gradient lands on the original positions), so a
batch may be padded on either side; batches are left-padded by default.

``causal-lm`` examples are prompt + answer token sequences (``models/prompts.py``); their
``Examples.labels`` hold the number of answer tokens at the end of each sequence, and their batches'
``labels`` are token labels [B, T] (``IGNORE`` on the prompt and the padding).
"""

from __future__ import annotations

import numpy as np
import torch

from lingtrace.models.decoder import IGNORE, answer_nll, decoder_forward, left_order, verbaliser_scores
from lingtrace.models.prompts import PromptFormat
from lingtrace.objectives.base import Batch, Objective
from lingtrace.objectives.errors import UnsupportedModel


def _gather_rows(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``x`` [..., T] or [..., T, H] with its T axis reordered by ``order`` [..., T]."""
    if x.dim() == order.dim():
        return x.gather(-1, order)
    return x.gather(-2, order[..., None].expand_as(x))


def _pad(seqs: list, pad_id, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D sequences to [B, T] (on the left or the right) and their 0/1 mask."""
    width = max((len(x) for x in seqs), default=0)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        n = len(x)
        cols = slice(width - n, width) if left else slice(0, n)
        out[i, cols] = torch.as_tensor(np.asarray(x, dtype=np.int64))
        mask[i, cols] = 1
    return out, mask


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel


class DecoderObjective(Objective):
    """What both decoder kinds share: padding, the reordering to left padding, and the loss that one
    function computes for a batch (training) and for one example (influence, under vmap)."""

    def __init__(self, padding_side: str = "left"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        self.padding_side = padding_side

    # the loss of left-ordered inputs: embeds [B, T, H], mask [B, T], the objective's extra inputs
    def _losses(self, forward, embeds, mask, inputs) -> torch.Tensor:
        raise NotImplementedError

    def _inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-example inputs of the loss: the order that left-pads each row, the mask, the objective's targets."""
        return {"order": left_order(batch.attention_mask), "attention_mask": batch.attention_mask}

    def example_inputs(self, model, batch):
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        word = model.get_input_embeddings().weight
        if head is not None and head.weight is word and word.requires_grad:
            raise UnsupportedModel(
                "the trainable word embeddings are tied to the output projection; their per-example gradient would miss "
                "the output side (load the model with lingtrace, which unties them, or freeze them)"
            )
        return self._inputs(batch)

    def example_loss(self, forward, inputs_embeds, inputs):
        one = {k: v[None] for k, v in inputs.items()}
        order = one["order"]
        return self._losses(forward, _gather_rows(inputs_embeds[None], order), _gather_rows(one["attention_mask"], order), one)[0]

    def batch_losses(self, model, batch):
        inputs = self._inputs(batch)
        order = inputs["order"]
        embeds = _unwrapped(model).get_input_embeddings()(batch.input_ids)
        return self._losses(model, _gather_rows(embeds, order), _gather_rows(batch.attention_mask, order), inputs)

    def _last_hidden(self, model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's last hidden states [B, T, H] of the left-ordered batch, and the order."""
        order = left_order(batch.attention_mask)
        ids = _gather_rows(batch.input_ids, order)
        mask = _gather_rows(batch.attention_mask, order)
        base = model.base_model
        embeds = model.get_input_embeddings()(ids)
        out = decoder_forward(base, embeds, mask)
        return (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]), order


class DecoderClassificationObjective(DecoderObjective):
    """A classification head on a causal LM (``...ForSequenceClassification`` of a decoder): the
    cross-entropy of the head's logits at the last real token (the last position once left-ordered)."""

    kind = "decoder-classifier"
    loss_name = "cross-entropy of the classification head on the last token"

    def collate(self, ids, labels, pad_id, pin=False):
        input_ids, mask = _pad(ids, pad_id, self.padding_side == "left")
        batch = Batch(input_ids, mask, torch.tensor(np.asarray(labels, dtype=np.int64)))
        return batch.pin_memory() if pin else batch

    def _inputs(self, batch):
        return {**super()._inputs(batch), "labels": batch.labels}

    def _losses(self, forward, embeds, mask, inputs):
        logits = decoder_forward(forward, embeds, mask).logits
        return torch.nn.functional.cross_entropy(logits.float(), inputs["labels"], reduction="none")

    no_batch_logits = None

    def batch_logits(self, model, batch):
        order = left_order(batch.attention_mask)
        embeds = _unwrapped(model).get_input_embeddings()(_gather_rows(batch.input_ids, order))
        return decoder_forward(model, embeds, _gather_rows(batch.attention_mask, order)).logits

    @torch.no_grad()
    def class_scores(self, model, tokenizer, rows, max_length, prefix=""):
        device = next(model.parameters()).device
        batch = self.encode_rows(tokenizer, rows, max_length, prefix).to(device)
        return self.batch_logits(model, batch).float()

    def representation(self, model, batch):
        """The last layer's hidden state at the last real token: what the classification head reads."""
        hidden, _ = self._last_hidden(model, batch)
        return hidden[:, -1]


class CausalLMObjective(DecoderObjective):
    """A causal LM answering with the label's verbalisation: the per-example loss is the summed
    next-token cross-entropy of the answer tokens only; the prediction is the verbalisation with the
    highest total log-likelihood (``class_scores``, whose softmax is the confidence).

    ``verbalisations``: ``{lang: [answer text of label 0, ...]}`` (``prompts.resolve_verbalisations``).
    """

    kind = "causal-lm"
    loss_name = "summed cross-entropy of the answer tokens (the label's verbalisation) after the prompt"
    no_batch_logits = (
        "a causal LM's class scores are the log-likelihoods of every label's verbalisation after the prompt, "
        "and a training batch holds the gold answer only"
    )

    def __init__(self, prompt: PromptFormat, verbalisations: dict[str, list[str]], padding_side: str = "left"):
        super().__init__(padding_side)
        self.prompt = prompt
        self.verbalisations = verbalisations

    def _answers(self, tokenizer, lang: str) -> list[list[int]]:
        if lang not in self.verbalisations:
            from lingtrace.errors import LingtraceError

            raise LingtraceError(f"no verbalisations for language {lang!r}", "set model.verbalisations (or data.languages)")
        return self.prompt.answer_ids(tokenizer, self.verbalisations[lang])

    def _prompts(self, tokenizer, rows, max_length: int, prefix: str) -> tuple[list[list[int]], dict[str, list[list[int]]]]:
        """Prompt ids per row (cut so that its language's longest answer fits ``max_length``) and the answers per language."""
        from lingtrace.data import schema

        langs = rows[schema.LANG].astype(str).tolist()
        answers = {lang: self._answers(tokenizer, lang) for lang in sorted(set(langs))}
        room = [max_length - max(len(a) for a in answers[lang]) for lang in langs]
        text_b = rows[schema.TEXT_B].tolist() if schema.TEXT_B in rows.columns else None
        text_a = [prefix + str(t) for t in rows[schema.TEXT_A].tolist()]
        return self.prompt.prompt_ids(tokenizer, text_a, text_b, room), answers

    def examples(self, frame, tokenizer, max_length, prefix=""):
        from lingtrace.data import schema
        from lingtrace.objectives.examples import Examples

        prompts, answers = self._prompts(tokenizer, frame, max_length, prefix)
        labels = frame[schema.LABEL].to_numpy(dtype=np.int64)
        langs = frame[schema.LANG].astype(str).tolist()
        chosen = [answers[lang][y] for lang, y in zip(langs, labels)]
        ids = [np.asarray(p + a, dtype=np.int64) for p, a in zip(prompts, chosen)]
        uids = frame[schema.UID].astype(str).tolist() if schema.UID in frame.columns else [str(i) for i in range(len(frame))]
        return Examples(ids=ids, labels=np.asarray([len(a) for a in chosen], dtype=np.int64), uids=uids)

    def collate(self, ids, labels, pad_id, pin=False):
        """``labels``: the number of answer tokens ending each sequence -> token labels [B, T]."""
        left = self.padding_side == "left"
        input_ids, mask = _pad(ids, pad_id, left)
        token_labels = torch.full_like(input_ids, IGNORE)
        width = input_ids.shape[1]
        for i, (x, n) in enumerate(zip(ids, labels)):
            end = width if left else len(x)
            token_labels[i, end - int(n) : end] = input_ids[i, end - int(n) : end]
        batch = Batch(input_ids, mask, token_labels)
        return batch.pin_memory() if pin else batch

    def _inputs(self, batch):
        inputs = super()._inputs(batch)
        labels = _gather_rows(batch.labels, inputs["order"])
        keep = int((labels != IGNORE).sum(-1).max()) + 1  # the answers end every left-ordered row
        inputs["targets"] = labels[:, labels.shape[1] - keep + 1 :]
        return inputs

    def _losses(self, forward, embeds, mask, inputs):
        targets = inputs["targets"]
        logits = decoder_forward(forward, embeds, mask, logits_to_keep=targets.shape[-1] + 1).logits
        return answer_nll(logits, targets)

    @torch.no_grad()
    def class_scores(self, model, tokenizer, rows, max_length, prefix=""):
        """[B, num_labels] float64 total log-likelihood of each label's answer after the row's prompt."""
        from lingtrace.data import schema

        prompts, answers = self._prompts(tokenizer, rows, max_length, prefix)
        langs = np.asarray(rows[schema.LANG].astype(str).tolist())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = torch.zeros((len(rows), len(next(iter(answers.values())))), dtype=torch.float64)
        for lang, answer_ids in answers.items():
            idx = np.flatnonzero(langs == lang)
            out[idx] = verbaliser_scores(model, [prompts[i] for i in idx], answer_ids, pad, batch_size=max(1, len(idx)))
        return out

    def representation(self, model, batch):
        """The last layer's hidden state at the last prompt token (the one that predicts the answer's first token)."""
        hidden, order = self._last_hidden(model, batch)
        answer = (batch.labels != IGNORE).sum(-1)
        last_prompt = hidden.shape[1] - 1 - answer
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_prompt]
