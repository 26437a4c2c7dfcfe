"""Decoder language models (Llama family): masks and positions that ``torch.func`` can trace, the
answer-only loss, the verbaliser scorer, LoRA through ``peft``, and loading decoder checkpoints.

Conventions
-----------
* A decoder is always fed an explicit 4-D additive float mask ``[B, 1, T, T]`` combining the causal
  and padding constraints. transformers 5 uses a 4-D mask as given, so none of its data-dependent
  mask creation runs (which ``vmap`` cannot trace), and eager attention adds it without any
  ``is_causal`` handling. Padding query rows attend to themselves, so no softmax row is fully masked.
* Position ids are ``cumsum(mask) - 1`` clamped at 0: the real tokens of a padded example are numbered
  0, 1, 2, ... exactly as if it were alone, on either padding side.
* Real tokens are moved to the right end of each row (left padding) before the model sees them
  (``left_order``): a sequence classifier over a decoder pools the last position when given
  ``inputs_embeds``, and with left padding every answer ends its row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lingtrace.errors import LingtraceError

#: label value of positions that carry no loss (prompt and padding)
IGNORE = -100
#: the key of config.json that records how lingtrace built a decoder checkpoint
CONFIG_KEY = "lingtrace"
DECODER_KINDS = ("decoder-classifier", "causal-lm")


# ---------------------------------------------------------------- masks and positions


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean ``[..., Tq, Tk]`` "may attend" -> additive float mask with a head axis ``[..., 1, Tq, Tk]``."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, blocked).unsqueeze(-3)


def causal_additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T]`` 0/1 mask -> ``[B, 1, T, T]``: query q sees key k iff k <= q and k is a real token
    (a padding query sees itself only)."""
    width = mask.shape[-1]
    lower = torch.ones(width, width, dtype=torch.bool, device=mask.device).tril()
    eye = torch.eye(width, dtype=torch.bool, device=mask.device)
    return additive_mask((lower & mask.bool()[..., None, :]) | eye, dtype)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens, whichever side the padding is on (padding positions are masked)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def left_order(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the column order that puts the padding first and the real tokens, in order, last."""
    return torch.argsort(mask.long(), dim=-1, stable=True)


def decoder_forward(forward, inputs_embeds: torch.Tensor, mask: torch.Tensor, **kwargs):
    """Call a decoder (``forward(**kwargs)``: the model or a functional call of it) on a batch of
    input embeddings ``[B, T, H]`` with its 0/1 ``mask`` [B, T], through the 4-D mask and the positions above."""
    return forward(
        inputs_embeds=inputs_embeds,
        attention_mask=causal_additive_mask(mask, inputs_embeds.dtype),
        position_ids=position_ids_from_mask(mask),
        **kwargs,
    )


# ---------------------------------------------------------------- the answer-only loss


def answer_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the answer tokens, per example.

    ``logits`` [B, K, V] are the logits of the last K positions, ``targets`` [B, K - 1] the tokens at
    the last K - 1 positions with ``IGNORE`` outside the answer (logit i predicts target i). Written
    with gather/where (no ``ignore_index`` control flow), so that it traces under ``vmap``."""
    head = logits[..., :-1, :]
    if head.dtype in (torch.float16, torch.bfloat16):
        head = head.float()
    logp = torch.log_softmax(head, dim=-1)
    valid = targets != IGNORE
    picked = logp.gather(-1, torch.where(valid, targets, torch.zeros_like(targets))[..., None])[..., 0]
    return -(picked * valid.to(picked.dtype)).sum(-1)


# ---------------------------------------------------------------- verbaliser scoring


def _packed_batch(prompts: Sequence[list[int]], answers: Sequence[list[int]], pad_id: int):
    """One row per example: padding + prompt + answer_1 + ... + answer_J, with a mask in which each
    answer sees the prompt and its own earlier tokens only, and positions that restart after the
    prompt for every answer (as if each answer followed the prompt alone)."""
    lengths = [len(a) for a in answers]
    total = sum(lengths)
    width = max(len(p) for p in prompts) + total
    tail = torch.tensor([t for a in answers for t in a], dtype=torch.long)
    group = torch.tensor([j for j, a in enumerate(answers) for _ in a])
    offset = torch.tensor([t for a in answers for t in range(len(a))])
    same_answer = (group[:, None] == group[None, :]) & (offset[None, :] <= offset[:, None])
    lower = torch.ones(width, width, dtype=torch.bool).tril()
    eye = torch.eye(width, dtype=torch.bool)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    allowed = torch.zeros((len(prompts), width, width), dtype=torch.bool)
    positions = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        start, end = width - total - len(prompt), width - total
        ids[i, start:end] = torch.tensor(prompt, dtype=torch.long)
        ids[i, end:] = tail
        positions[i, start:end] = torch.arange(len(prompt))
        positions[i, end:] = len(prompt) + offset
        prompt_keys = torch.zeros(width, dtype=torch.bool)
        prompt_keys[start:end] = True
        rows = (lower & prompt_keys[None, :]) | eye
        rows[end:, end:] = same_answer
        rows[end:, start:end] = True
        allowed[i] = rows
    # for answer j's token t: the kept-logit column that predicts it (0 = the last prompt token)
    columns = torch.zeros((len(answers), max(lengths)), dtype=torch.long)
    targets = torch.full((len(answers), max(lengths)), IGNORE, dtype=torch.long)
    cursor = 0
    for j, a in enumerate(answers):
        for t, token in enumerate(a):
            columns[j, t] = 0 if t == 0 else cursor + t
            targets[j, t] = token
        cursor += len(a)
    return ids, allowed, positions, columns, targets, total


@torch.no_grad()
def verbaliser_scores(model, prompts: Sequence[list[int]], answers: Sequence[list[int]], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """[N, J] float64: the total log-likelihood of each answer's tokens after each prompt, with one
    forward per example (all answers packed behind the prompt, see ``_packed_batch``)."""
    if not answers or any(not a for a in answers):
        raise ValueError("every verbalisation needs at least one token")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, allowed, positions, columns, targets, total = _packed_batch(prompts[start : start + batch_size], answers, pad_id)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=additive_mask(allowed, dtype).to(device),
            position_ids=positions.to(device),
            logits_to_keep=total + 1,
        ).logits
        logp = torch.log_softmax(logits.double(), dim=-1).cpu()  # [b, total + 1, V]
        valid = targets != IGNORE
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        picked = logp[:, columns, :].gather(-1, safe[None, ..., None].expand(logp.shape[0], -1, -1, 1))[..., 0]
        out.append((picked * valid).sum(-1))
    return torch.cat(out) if out else torch.zeros((0, len(answers)), dtype=torch.float64)


# ---------------------------------------------------------------- LoRA


def lora_settings(r: int, alpha: float, targets: Sequence[str], layers: Sequence[int], num_layers: int) -> dict[str, Any] | None:
    """The LoRA record stored in a checkpoint's config (None when ``r`` is 0: full fine-tuning);
    negative layer indices count from the top."""
    if r <= 0:
        return None
    chosen = sorted({i % num_layers for i in layers}) if layers else None
    return {"r": int(r), "alpha": float(alpha), "targets": list(targets), "layers": chosen}


def apply_lora(model, settings: dict[str, Any], train_head: bool = False):
    """Inject LoRA adapters (``peft``) into ``model`` in place; the adapters are its only trainable
    parameters, plus the classification head when ``train_head``. Returns ``model``."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:
        raise LingtraceError("LoRA (model.lora_r > 0) needs the peft package", "pip install 'lingtrace[llm]'") from e
    config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        target_modules=list(settings["targets"]),
        layers_to_transform=settings["layers"],
        lora_dropout=0.0,
    )
    try:
        inject_adapter_in_model(config, model)
    except ValueError as e:
        raise LingtraceError(f"cannot add LoRA adapters: {str(e).splitlines()[0]}", "set model.lora_targets to module names of this model (e.g. q_proj,v_proj)") from e
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name or (train_head and name.startswith("score.")))
    return model


def untie_word_embeddings(model) -> None:
    """Give the output projection its own copy of a tied input word-embedding matrix, so that the
    embedding's per-example gradient stays the sparse rows of the input tokens and the output
    projection is an ordinary dense parameter (both start from the same values)."""
    head = model.get_output_embeddings()
    if head is None or head.weight is not model.get_input_embeddings().weight:
        return
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
    model.config.tie_word_embeddings = False
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text_config is not None and text_config is not model.config:
        text_config.tie_word_embeddings = False


def prepare_decoder(model, tokenizer, mcfg, label_names: Sequence[str]) -> None:
    """Make a freshly loaded decoder ready for lingtrace (``mcfg``: the ``ModelConfig``): a padding token
    (the end-of-sequence token when the tokenizer has none; the tasks pad on the left themselves), LoRA adapters when
    ``model.lora_r`` > 0, trainable tied word embeddings untied, and the record in its config that
    ``load_checkpoint`` reads back."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LingtraceError(f"the tokenizer of {mcfg.name} has neither a padding nor an end-of-sequence token", "use a decoder whose tokenizer defines one")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    settings = lora_settings(mcfg.lora_r, mcfg.lora_alpha, mcfg.lora_targets, mcfg.lora_layers, int(model.config.num_hidden_layers))
    train_head = bool(mcfg.train_head) and mcfg.kind == "decoder-classifier"
    if settings is not None:
        apply_lora(model, settings, train_head=train_head)
    elif model.get_input_embeddings().weight.requires_grad:
        untie_word_embeddings(model)
    setattr(model.config, CONFIG_KEY, {"kind": mcfg.kind, "label_names": [str(n) for n in label_names], "lora": settings, "train_head": train_head})


# ---------------------------------------------------------------- checkpoints


def decoder_record(directory: Path) -> dict[str, Any] | None:
    """What lingtrace recorded about a decoder checkpoint (``config.json`` key ``lingtrace``), or None."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8")).get(CONFIG_KEY)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def model_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForCausalLM if kind == "causal-lm" else AutoModelForSequenceClassification


def load_lora_checkpoint(directory: Path, record: dict[str, Any]):
    """A LoRA checkpoint: the model built from its config, the adapters injected, then every stored
    tensor loaded (the base weights and the adapters, in either checkpoint layout)."""
    from transformers import AutoConfig

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights

    from lingtrace.models.checkpoints import checkpoint_tensors

    config = AutoConfig.from_pretrained(directory)
    with no_init_weights():
        model = model_class(record["kind"]).from_config(config, dtype=torch.float32)
    apply_lora(model, record["lora"], train_head=bool(record.get("train_head")))
    result = model.load_state_dict(checkpoint_tensors(directory), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise LingtraceError(
            f"checkpoint {directory} does not match its LoRA config ({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)",
            "retrain with `lingtrace train RUN --overwrite`",
        )
    model.tie_weights()
    return model
