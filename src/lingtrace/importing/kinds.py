"""What a checkpoint trained elsewhere is: its ``model.kind`` (from the architectures in its config, or
its peft adapter's task type), and, for a peft LoRA adapter, the LoRA settings of lingtrace's own LoRA
runs that rebuild it exactly (``models.decoder.apply_lora``) and the names its tensors take there."""

from __future__ import annotations

import math
from typing import Any

from lingtrace.errors import LingtraceError
from lingtrace.importing.sources import ADAPTER_CONFIG, HEAD_MODULES, Source

KIND_FIX = "set the kind with --set model.kind=encoder-classifier|decoder-classifier|causal-lm"
#: the prefix peft gives the wrapped model's names, and the adapter name lingtrace's LoRA layers carry
PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"


def _is_encoder(model_type: str | None) -> bool:
    """Whether a model type is an encoder (it has a masked-LM head in transformers: BERT, XLM-R, ...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def infer_kind(source: Source) -> str:
    """``model.kind`` of a checkpoint: lingtrace's own record, a peft adapter's task type (``SEQ_CLS``:
    decoder-classifier, ``CAUSAL_LM``: causal-lm), else the architectures of its config (``...ForCausalLM``:
    causal-lm; ``...ForSequenceClassification`` of a decoder: decoder-classifier; of an encoder, or
    anything else: encoder-classifier)."""
    record = source.config.get("lingtrace")
    if isinstance(record, dict) and record.get("kind"):
        return str(record["kind"])
    task = str((source.adapter or {}).get("task_type") or "").upper()
    if task == "SEQ_CLS":
        return "decoder-classifier"
    if task == "CAUSAL_LM":
        return "causal-lm"
    archs = [str(a) for a in source.config.get("architectures") or []]
    encoder = _is_encoder(source.config.get("model_type"))
    if any(a.endswith("ForCausalLM") for a in archs) and not encoder:
        return "causal-lm"
    if any(a.endswith("ForSequenceClassification") for a in archs) and not encoder:
        return "decoder-classifier"
    if source.adapter is not None and not encoder:
        return "causal-lm"  # adapters on a base language model without a task type
    return "encoder-classifier"


# ---------------------------------------------------------------- peft LoRA adapters

#: adapter settings lingtrace's LoRA layers cannot reproduce: (key, value that is fine, what it is)
_UNSUPPORTED = (
    ("use_dora", False, "DoRA (use_dora)"),
    ("rank_pattern", {}, "per-module ranks (rank_pattern)"),
    ("alpha_pattern", {}, "per-module alphas (alpha_pattern)"),
    ("bias", "none", "trained biases (bias)"),
    ("lora_bias", False, "LoRA biases (lora_bias)"),
    ("fan_in_fan_out", False, "fan_in_fan_out layers"),
    ("layer_replication", None, "layer replication"),
    ("trainable_token_indices", None, "trainable token indices"),
    ("target_parameters", None, "target_parameters"),
)


def lingtrace_name(key: str) -> str:
    """The parameter name in lingtrace's LoRA model of a tensor name of a peft adapter (as saved in
    ``adapter_model.safetensors``, or of a live ``PeftModel``): without peft's wrapper prefix, the
    adapter named ``default``, a fully trained module (``modules_to_save``) under its own name."""
    name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
    name = name.replace(f".modules_to_save.{ADAPTER_NAME}.", ".")
    for part in ("lora_A", "lora_B"):
        if f".{part}." in name and f".{part}.{ADAPTER_NAME}." not in name:
            name = name.replace(f".{part}.", f".{part}.{ADAPTER_NAME}.")
    return name


def lora_overrides(source: Source, keys: list[str], kind: str) -> dict[str, Any]:
    """The ``model.*`` settings of lingtrace's LoRA runs that rebuild ``source``'s adapters (``keys``: the
    tensor names in its ``adapter_model.safetensors``): rank, alpha, target modules, layers, and whether
    the classification head is trained (saved with the adapters). Settings lingtrace's LoRA layers cannot
    reproduce are refused."""
    config = source.adapter or {}
    where = source.path / ADAPTER_CONFIG
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise LingtraceError(f"{where} is a {config.get('peft_type')} adapter; lingtrace imports LoRA adapters only", "import a LoRA run, or merge the adapters into the model and import the merged checkpoints")
    for key, fine, what in _UNSUPPORTED:
        value = config.get(key)
        if value is not None and value != fine and bool(value):
            raise LingtraceError(f"{where}: the adapters use {what}, which lingtrace's LoRA layers do not reproduce", "merge the adapters into the model (merge_and_unload) and import the merged checkpoints")
    if kind == "encoder-classifier":
        raise LingtraceError(
            f"{source.path} holds LoRA adapters of an encoder classifier; lingtrace's LoRA runs are decoders",
            "merge the adapters into the model (merge_and_unload) and import the merged checkpoints, or set model.kind to a decoder kind",
        )
    r = int(config.get("r") or 0)
    if r <= 0:
        raise LingtraceError(f"{where} has no LoRA rank r", "give the adapter_config.json that peft saved with the adapters")
    alpha = float(config.get("lora_alpha") or r)
    if config.get("use_rslora"):
        alpha *= math.sqrt(r)  # rank-stabilised scaling alpha / sqrt(r) = (alpha sqrt(r)) / r
    lora = [k for k in keys if ".lora_A." in k or ".lora_B." in k]
    other = [k for k in keys if k not in lora]
    heads = [k for k in other if lingtrace_name(k).split(".")[0] in HEAD_MODULES]
    foreign = [k for k in other if k not in heads]
    if foreign:
        raise LingtraceError(f"{source.path}: the adapter file holds {foreign[0]}, neither a LoRA matrix nor the classification head", "merge the adapters into the model (merge_and_unload) and import the merged checkpoints")
    if heads and kind != "decoder-classifier":
        raise LingtraceError(f"{source.path}: the adapters train a classification head ({heads[0]}), but model.kind is {kind}", "set model.kind=decoder-classifier")
    if kind == "decoder-classifier" and not heads:
        raise LingtraceError(
            f"{source.path}: the adapters of a decoder classifier hold no trained classification head (modules_to_save)",
            "train the head with the adapters (peft task_type SEQ_CLS saves it), or merge them into the model and import the merged checkpoints",
        )
    targets = config.get("target_modules")
    if not isinstance(targets, list | tuple):  # a regular expression or "all-linear": the modules that have adapters
        targets = sorted({k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in lora if ".lora_A." in k})
    layers = config.get("layers_to_transform")
    layers = [] if layers is None else [int(layers)] if isinstance(layers, int) else [int(i) for i in layers]
    return {"lora_r": r, "lora_alpha": alpha, "lora_targets": sorted(str(t) for t in targets), "lora_layers": layers, "train_head": bool(heads)}


def adapter_keys(source: Source) -> list[str]:
    """The tensor names of a peft adapter checkpoint's weights."""
    from safetensors import safe_open

    from lingtrace.importing.sources import ADAPTER_WEIGHTS

    if source.adapter_names is not None:
        return list(source.adapter_names)
    with safe_open(str(source.path / ADAPTER_WEIGHTS), framework="pt") as f:
        return list(f.keys())
