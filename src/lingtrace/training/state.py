"""The trainer state that resuming needs, stored without pickle.

``RUN/checkpoints/trainer_state.safetensors`` is one safetensors file, written atomically after each
epoch while training is incomplete (and removed when it completes):

* tensors: ``optimizer/<parameter name>/<key>`` (AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``),
  ``rng/torch`` and ``rng/cuda/<device>`` (torch's generator states), and the same per rank under
  ``rng_ranks/<rank>/...`` when trained with torchrun;
* metadata ``format`` (``lingtrace-trainer-state-v1``) and ``state``, a JSON document holding everything
  else: ``epoch``, ``best``, ``bad_epochs``, the optimizer's ``param_groups`` (parameters by name), the
  scheduler's ``state_dict``, numpy's and Python's generator states, and the names of the tensors above.

Loading checks every part against the optimizer and scheduler it is loaded into (the same parameter
names, shapes and dtypes, the same scheduler keys) and rebuilds exactly the saved state. Anything else
(not a safetensors file, bad JSON, missing or extra keys, wrong shapes) is refused with a one-line
``LingtraceError``; no part of the file is ever unpickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from lingtrace.errors import LingtraceError
from lingtrace.models.checkpoints import save_safetensors
from lingtrace.run import LEGACY_TRAINER_STATE_FILE

FORMAT = "lingtrace-trainer-state-v1"
_ADAM_TENSORS = ("step", "exp_avg", "exp_avg_sq")


class _Invalid(ValueError):
    """The state file does not have the expected structure (the message says where)."""


# ---------------------------------------------------------------- random-number generators


def rng_state() -> dict[str, Any]:
    """This process's generator states: torch (and CUDA) as tensors, numpy and Python as JSON-able values."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": [int(x) for x in numpy_state["state"]["key"]],
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_to_file(state: dict[str, Any], prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    tensors[f"{prefix}/torch"] = state["torch"]
    doc = {"numpy": state["numpy"], "python": state["python"], "cuda": []}
    for i, s in enumerate(state.get("cuda", [])):
        tensors[f"{prefix}/cuda/{i}"] = s
        doc["cuda"].append(i)
    return doc


def _rng_from_file(doc: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    _expect(doc, dict, prefix)
    numpy_state, python_state = doc.get("numpy"), doc.get("python")
    _expect(numpy_state, dict, f"{prefix}.numpy")
    _expect(python_state, dict, f"{prefix}.python")
    key = numpy_state.get("key")
    internal = python_state.get("internal")
    if not (isinstance(key, list) and len(key) == 624 and all(isinstance(x, int) and 0 <= x < 2**32 for x in key)):
        raise _Invalid(f"{prefix}.numpy.key is not 624 32-bit integers")
    if not (isinstance(internal, list) and len(internal) == 625 and all(isinstance(x, int) and 0 <= x < 2**32 for x in internal)):
        raise _Invalid(f"{prefix}.python.internal is not 625 32-bit integers")
    state = {
        "torch": _tensor(tensors, f"{prefix}/torch", dtype=torch.uint8),
        "numpy": {k: numpy_state[k] for k in ("bit_generator", "key", "pos", "has_gauss", "gauss") if k in numpy_state},
        "python": {k: python_state[k] for k in ("version", "internal", "gauss_next") if k in python_state},
    }
    if len(state["numpy"]) != 5 or len(state["python"]) != 3:
        raise _Invalid(f"{prefix}: incomplete numpy or python generator state")
    cuda = doc.get("cuda", [])
    _expect(cuda, list, f"{prefix}.cuda")
    if cuda:
        state["cuda"] = [_tensor(tensors, f"{prefix}/cuda/{i}", dtype=torch.uint8) for i in cuda]
    return state


# ---------------------------------------------------------------- save / load


def save_trainer_state(
    path: Path,
    *,
    epoch: int,
    best: float,
    bad_epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler,
    model,
    rng: dict[str, Any],
    rng_ranks: list[dict[str, Any]] | None,
) -> None:
    """Atomically write the trainer state after ``epoch`` (see the module docstring)."""
    names = _param_names(model)
    tensors: dict[str, torch.Tensor] = {}
    optimizer_state: dict[str, dict[str, str]] = {}
    groups = []
    for group in optimizer.param_groups:
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": [names[id(p)] for p in group["params"]]})
        for p in group["params"]:
            entry = {}
            for key, value in optimizer.state.get(p, {}).items():
                if key not in _ADAM_TENSORS or not isinstance(value, torch.Tensor):
                    raise TypeError(f"unexpected optimizer state {key!r}: {type(value).__name__}")
                tensor_name = f"optimizer/{names[id(p)]}/{key}"
                tensors[tensor_name] = value.detach().cpu()
                entry[key] = tensor_name
            if entry:
                optimizer_state[names[id(p)]] = entry
    doc = {
        "epoch": int(epoch),
        "best": float(best),
        "bad_epochs": int(bad_epochs),
        "optimizer": {"param_groups": groups, "state": optimizer_state},
        "scheduler": scheduler.state_dict(),
        "rng": _rng_to_file(rng, "rng", tensors),
        "rng_ranks": None if rng_ranks is None else [_rng_to_file(s, f"rng_ranks/{r}", tensors) for r, s in enumerate(rng_ranks)],
    }
    save_safetensors(tensors, path, {"format": FORMAT, "state": json.dumps(doc, allow_nan=False)})


def load_trainer_state(
    path: Path, *, optimizer: torch.optim.Optimizer, scheduler, model, rank: int = 0, world: int = 1
) -> dict[str, Any]:
    """Restore ``optimizer``, ``scheduler`` and this process's random generators (rank ``rank`` of ``world``)
    from ``path``; returns ``epoch``, ``best`` and ``bad_epochs``.

    Raises ``LingtraceError`` (one line) when the file is missing, damaged, tampered with or from an older
    version, and when an old pickled ``trainer_state.pt`` lies beside it (which is never opened).
    """
    path = Path(path)
    fix = "pass --overwrite to retrain from scratch"
    legacy = path.with_name(LEGACY_TRAINER_STATE_FILE)
    if legacy.exists():
        raise LingtraceError(
            f"cannot resume: {legacy} is a pickled trainer state of an older lingtrace; it is not loaded, since unpickling a file can run code",
            fix + " (this deletes it)",
        )
    if not path.exists():
        raise LingtraceError(f"cannot resume: {path} is missing", fix)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged header
        raise LingtraceError(f"cannot resume: {path} is damaged (not a safetensors file: {_first_line(e)})", fix) from e
    try:
        if metadata.get("format") != FORMAT:
            raise _Invalid(f"format is {metadata.get('format')!r}, expected {FORMAT!r}")
        try:
            doc = json.loads(metadata.get("state", ""))
        except json.JSONDecodeError as e:
            raise _Invalid(f"its state is not valid JSON ({e.msg})") from e
        out = _restore(doc, tensors, optimizer, scheduler, model, rank, world)
    except _Invalid as e:
        raise LingtraceError(f"cannot resume: {path} is damaged or was altered ({e})", fix) from e
    return out


def _restore(doc: Any, tensors: dict[str, torch.Tensor], optimizer, scheduler, model, rank: int, world: int) -> dict[str, Any]:
    _expect(doc, dict, "state")
    _check_keys(doc, {"epoch", "best", "bad_epochs", "optimizer", "scheduler", "rng", "rng_ranks"}, "its state")
    if not isinstance(doc["epoch"], int) or not isinstance(doc["bad_epochs"], int) or not isinstance(doc["best"], int | float):
        raise _Invalid("epoch, best or bad_epochs has the wrong type")
    used: set[str] = set()
    optimizer_sd = _optimizer_state_dict(doc["optimizer"], tensors, optimizer, model, used)
    scheduler_sd = doc["scheduler"]
    _expect(scheduler_sd, dict, "scheduler")
    _check_keys(scheduler_sd, set(scheduler.state_dict()), "the scheduler state")
    rng = _rng_from_file(doc["rng"], "rng", tensors)
    ranks = doc["rng_ranks"]
    if ranks is not None:
        _expect(ranks, list, "rng_ranks")
        ranks = [_rng_from_file(s, f"rng_ranks/{r}", tensors) for r, s in enumerate(ranks)]
    used |= {k for k in tensors if k.startswith(("rng/", "rng_ranks/"))}
    if set(tensors) != used:
        raise _Invalid(f"unexpected tensors {sorted(set(tensors) - used)[:3]}")
    try:  # load_state_dict moves the moments to each parameter's device (and keeps ``step`` where AdamW wants it)
        optimizer.load_state_dict(optimizer_sd)
        scheduler.load_state_dict(scheduler_sd)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise _Invalid(f"it does not fit the optimizer: {_first_line(e)}") from e
    try:
        set_rng_state(ranks[rank] if ranks and len(ranks) == world else rng)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise _Invalid(f"its random-generator state is invalid: {_first_line(e)}") from e
    return {"epoch": doc["epoch"], "best": float(doc["best"]), "bad_epochs": doc["bad_epochs"]}


def _optimizer_state_dict(doc: Any, tensors: dict[str, torch.Tensor], optimizer, model, used: set[str]) -> dict[str, Any]:
    """The saved optimizer state as ``optimizer.state_dict()`` lays it out, checked against ``optimizer``."""
    _expect(doc, dict, "optimizer")
    groups, state = doc.get("param_groups"), doc.get("state")
    _expect(groups, list, "optimizer.param_groups")
    _expect(state, dict, "optimizer.state")
    current = optimizer.state_dict()["param_groups"]
    if len(groups) != len(current):
        raise _Invalid(f"{len(groups)} optimizer parameter groups, expected {len(current)}")
    names = _param_names(model)
    params_by_name = {names[id(p)]: p for g in optimizer.param_groups for p in g["params"]}
    index_by_name = {names[id(p)]: i for g, cg in zip(optimizer.param_groups, current) for p, i in zip(g["params"], cg["params"])}
    out_groups = []
    for saved, now, live in zip(groups, current, optimizer.param_groups):
        _expect(saved, dict, "optimizer.param_groups[]")
        _check_keys(saved, set(now), "an optimizer parameter group")
        if saved["params"] != [names[id(p)] for p in live["params"]]:
            raise _Invalid("the optimizer's parameters differ from the model's trained parameters")
        group = {k: (tuple(v) if isinstance(now[k], tuple) and isinstance(v, list) else v) for k, v in saved.items()}
        group["params"] = [index_by_name[n] for n in saved["params"]]
        out_groups.append(group)
    out_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, entry in state.items():
        if name not in params_by_name:
            raise _Invalid(f"optimizer state for unknown parameter {name!r}")
        _expect(entry, dict, f"optimizer.state[{name!r}]")
        _check_keys(entry, set(_ADAM_TENSORS), f"the optimizer state of {name!r}")
        shape = tuple(params_by_name[name].shape)
        out_state[index_by_name[name]] = {
            "step": _tensor(tensors, entry["step"], dtype=torch.float32, shape=()),
            "exp_avg": _tensor(tensors, entry["exp_avg"], dtype=torch.float32, shape=shape),
            "exp_avg_sq": _tensor(tensors, entry["exp_avg_sq"], dtype=torch.float32, shape=shape),
        }
        used.update(entry.values())
    return {"state": out_state, "param_groups": out_groups}


def _tensor(tensors: dict[str, torch.Tensor], name: Any, dtype: torch.dtype, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(name, str) or name not in tensors:
        raise _Invalid(f"tensor {name!r} is missing")
    t = tensors[name]
    if t.dtype != dtype or (shape is not None and tuple(t.shape) != shape):
        raise _Invalid(f"tensor {name!r} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape if shape is not None else ''}".rstrip())
    return t


def _check_keys(found: dict, expected: set[str], where: str) -> None:
    missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
    if missing or extra:
        raise _Invalid(f"{where} " + " and ".join(([f"lacks {missing}"] if missing else []) + ([f"has unexpected {extra}"] if extra else [])))


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise _Invalid(f"{where} is not a {kind.__name__}")


def _param_names(model) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
