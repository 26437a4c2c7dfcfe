"""The on-disk layout of one checkpoint (a training epoch's), with the weights that do not change stored once per run.

``save_checkpoint`` writes what ``save_pretrained`` writes (same tensor names, bytes and header metadata,
so tied and renamed weights are handled by transformers itself), split into two shards of a standard
Hugging Face sharded checkpoint when the model has frozen tensors::

    epoch-K/config.json, tokenizer files          as save_pretrained writes them
    epoch-K/model.safetensors.index.json          {"metadata": {...}, "weight_map": {tensor name: shard file}}
    epoch-K/model-trained.safetensors             the tensors of trainable parameters (this epoch's)
    epoch-K/model-frozen.safetensors              parameters with requires_grad False and saved buffers
    epoch-K/optimizer_second_moments.safetensors  AdamW's exp_avg_sq per trained parameter (see below)

``model-frozen.safetensors`` is a hard link to the previous epoch's when its tensors are byte-identical
(so the run holds one copy, made at the first epoch), and a copy where the file system has no hard links.
Every other file byte-identical to the previous epoch's file of the same name (the tokenizer, the config)
is linked the same way. A model without frozen tensors keeps save_pretrained's single ``model.safetensors``.
Either layout loads with ``AutoModelForSequenceClassification.from_pretrained(epoch-K)``.

Hard-linked files are shared between epochs: copy one before editing it in place.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lingtrace.errors import LingtraceError
from lingtrace.io import atomic_path, file_sha256
from lingtrace.models.hf import quiet_transformers

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TRAINED_SHARD = "model-trained.safetensors"
FROZEN_SHARD = "model-frozen.safetensors"
SECOND_MOMENTS = "optimizer_second_moments.safetensors"
#: ``format`` of the second-moment file's metadata (the contract with the adam-cosine influence method)
SECOND_MOMENTS_FORMAT = "adamw-exp_avg_sq-v1"


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file with the run directory's usual file mode."""
    with atomic_path(path, suffix=".safetensors") as tmp:
        mode = tmp.stat().st_mode  # safetensors replaces the file with a 0600 one: keep atomic_path's mode
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, mode)


def frozen_tensor_names(model) -> set[str]:
    """State-dict names of the tensors training does not change: frozen parameters and buffers."""
    return {
        name
        for name, value in model.state_dict(keep_vars=True).items()
        if not (isinstance(value, torch.nn.Parameter) and value.requires_grad)
    }


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _shard_matches(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> bool:
    """True when the safetensors file ``path`` holds exactly ``tensors`` (same names and bytes) and ``metadata``."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as other:
            if set(other.keys()) != set(tensors) or other.metadata() != metadata:
                return False
            return all(_same_bytes(other.get_tensor(k), t) for k, t in tensors.items())
    except Exception:  # noqa: BLE001 - an unreadable previous shard is simply not reused
        return False


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` (falling back to a copy where links fail); returns ``"linked"`` or ``"copied"``."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        shutil.copyfile(src, dst)
        shutil.copymode(src, dst)
        return "copied"


def save_checkpoint(model, tokenizer, directory: Path, previous: Path | None = None) -> dict[str, Any]:
    """Write ``model`` and ``tokenizer`` to the (new, empty) ``directory`` in the layout above.

    ``previous``: the previous epoch's checkpoint directory, whose identical files are hard-linked.
    Returns what was stored: ``{"layout": "single" | "sharded", "frozen": "written" | "linked" | "copied" | None}``.
    """
    directory = Path(directory)
    with quiet_transformers():  # no "Writing model shards" bar of its own
        model.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
    single = directory / SINGLE_FILE
    if (directory / INDEX_FILE).exists() or not single.exists():  # save_pretrained sharded it itself (huge model)
        return {"layout": "save_pretrained", "frozen": None}
    info: dict[str, Any] = {"layout": "single", "frozen": None}
    frozen_names = frozen_tensor_names(model)
    with safe_open(str(single), framework="pt") as saved:
        metadata = saved.metadata()
        names = list(saved.keys())
        frozen = {k: saved.get_tensor(k) for k in names if k in frozen_names}
        trained = {k: saved.get_tensor(k) for k in names if k not in frozen_names}
    if frozen and trained:
        save_safetensors(trained, directory / TRAINED_SHARD, metadata)
        shared = previous / FROZEN_SHARD if previous is not None else None
        if shared is not None and _shard_matches(shared, frozen, metadata):
            info["frozen"] = link_or_copy(shared, directory / FROZEN_SHARD)
        else:
            if shared is not None and shared.exists():
                log.warning("the frozen tensors differ from %s: this checkpoint stores its own copy", shared)
            save_safetensors(frozen, directory / FROZEN_SHARD, metadata)
            info["frozen"] = "written"
        index = {
            "metadata": {
                "total_parameters": int(model.num_parameters()),
                "total_size": sum(t.numel() * t.element_size() for t in (*frozen.values(), *trained.values())),
            },
            "weight_map": {k: (FROZEN_SHARD if k in frozen else TRAINED_SHARD) for k in sorted(names)},
        }
        with atomic_path(directory / INDEX_FILE) as tmp:
            tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        info["layout"] = "sharded"
    if info["layout"] == "sharded":
        single.unlink()
    else:
        os.chmod(single, (directory / "config.json").stat().st_mode)  # safetensors writes 0600 files
    if previous is not None:
        _link_identical(directory, previous, exclude=(TRAINED_SHARD, FROZEN_SHARD, SINGLE_FILE, SECOND_MOMENTS))
    return info


def _link_identical(directory: Path, previous: Path, exclude: Iterable[str]) -> None:
    """Replace each file of ``directory`` byte-identical to ``previous``'s file of the same name by a hard link to it."""
    skip = set(exclude)
    for path in sorted(directory.iterdir()):
        old = previous / path.name
        if path.name in skip or not path.is_file() or not old.is_file() or path.stat().st_size != old.stat().st_size:
            continue
        if filecmp.cmp(path, old, shallow=False):
            path.unlink()
            link_or_copy(old, path)


def weights_identity(directory: Path) -> dict[str, Any]:
    """What identifies a checkpoint's weights, cheap to check before every load: the size of each weight file
    (``files``: name -> bytes; the second moments are not weights) and the SHA-256 of the trained weights
    (``sha256``: the trained shard, else the single file, else every weight file in name order: the frozen
    shard, identical in every epoch, is identified by its size). Recorded per epoch in the manifest when the
    checkpoint is written, and part of every influence store's fingerprint."""
    directory = Path(directory)
    files = sorted(p for p in directory.glob("*.safetensors") if p.name != SECOND_MOMENTS)
    if not files:
        raise LingtraceError(f"{directory} holds no model weights", "retrain with `lingtrace train RUN --overwrite`")
    trained = next(([directory / name] for name in (TRAINED_SHARD, SINGLE_FILE) if (directory / name).is_file()), files)
    digest = hashlib.sha256()
    for path in trained:
        digest.update(file_sha256(path).encode())
    return {"files": {p.name: p.stat().st_size for p in files}, "sha256": digest.hexdigest()}


def check_weights(directory: Path, recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The weights' identity now (``weights_identity``), after checking it against the one ``recorded`` when the
    checkpoint was written (None: a run made before identities were recorded; nothing to check against).
    A changed or damaged checkpoint raises ``LingtraceError`` naming the file."""
    directory = Path(directory)
    fix = "retrain with `lingtrace train RUN --overwrite` (or restore the checkpoint files)"
    if recorded:
        for name, size in recorded.get("files", {}).items():
            path = directory / name
            if not path.is_file():
                raise LingtraceError(f"checkpoint {directory} lacks its weight file {name}", fix)
            if path.stat().st_size != int(size):
                raise LingtraceError(
                    f"checkpoint weight file {path} has changed since it was written ({path.stat().st_size} bytes, {size} recorded)", fix
                )
    now = weights_identity(directory)
    if recorded and now != recorded:
        changed = "its weight files" if now["files"] != recorded.get("files") else "its trained weights (SHA-256)"
        raise LingtraceError(f"checkpoint {directory} has changed since it was written: {changed} differ from the manifest's record", fix)
    return now


def checkpoint_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor stored in a checkpoint directory of either layout, by name (as loaded from disk)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.exists():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (directory / SINGLE_FILE).exists():
        files = [SINGLE_FILE]
    else:
        raise LingtraceError(f"{directory} holds no model weights", "retrain with `lingtrace train RUN --overwrite`")
    out: dict[str, torch.Tensor] = {}
    for name in files:
        out.update(load_file(str(directory / name)))
    return out


# ---------------------------------------------------------------- AdamW second moments


def second_moments(optimizer: torch.optim.Optimizer, model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """AdamW's raw ``exp_avg_sq`` of every trained parameter, keyed by its ``model.named_parameters()`` name,
    and the safetensors metadata of the file (``step``, ``beta1``, ``beta2``, ``eps``, ``lr``, ``weight_decay``,
    ``format``).

    A parameter that has had no optimizer step yet has AdamW's initial state, zeros. ``weight_decay`` is
    the first parameter group's (the decayed weights; biases and LayerNorm parameters have 0).
    """
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    steps: set[int] = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" in state:
                tensors[names[id(p)]] = state["exp_avg_sq"].detach().to("cpu", torch.float32).contiguous()
                steps.add(int(state["step"]))
            else:
                tensors[names[id(p)]] = torch.zeros(p.shape, dtype=torch.float32)
    if len(steps) > 1:
        log.warning("parameters have different AdamW step counts %s; recording the largest", sorted(steps))
    first = optimizer.param_groups[0]
    beta1, beta2 = first["betas"]
    metadata = {
        "step": str(max(steps, default=0)),
        "beta1": repr(float(beta1)),
        "beta2": repr(float(beta2)),
        "eps": repr(float(first["eps"])),
        "lr": repr(float(first["lr"])),
        "weight_decay": repr(float(first["weight_decay"])),
        "format": SECOND_MOMENTS_FORMAT,
    }
    return tensors, metadata


def save_second_moments(optimizer: torch.optim.Optimizer, model, directory: Path) -> None:
    """Write ``directory/optimizer_second_moments.safetensors`` (see ``second_moments``)."""
    tensors, metadata = second_moments(optimizer, model)
    save_safetensors(tensors, Path(directory) / SECOND_MOMENTS, metadata)
