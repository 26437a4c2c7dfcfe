"""AdamW's second moments of a checkpoint trained elsewhere: read from the ``optimizer.pt`` a
``transformers.Trainer`` saves beside each checkpoint, written as lingtrace's own
``optimizer_second_moments.safetensors`` (``models.checkpoints.save_second_moments``, format
``adamw-exp_avg_sq-v1``), so that ``adam-cosine`` runs on the imported run.

``optimizer.pt`` is read with ``torch.load(..., weights_only=True)`` only: a file that needs more (any
Python object beyond tensors, numbers, strings and containers) is refused with a one-line error naming
it, and nothing in it runs. ``training_args.bin`` is never read (a pickle).

The optimizer's state holds parameter indices, not names. The Trainer builds two parameter groups from
the model's trainable parameters in ``model.named_parameters()`` order: those that get weight decay
(``Trainer.get_decay_parameter_names``, called here without a Trainer) and those that do not; index i is
the i-th parameter of the groups in that order. The model is rebuilt for this (on the meta device: no
weights are read) with the parameters trained as in the run (``model.freeze_embeddings`` freezes the word
embeddings; a LoRA run trains its adapters and a classifier's head), each index is checked against the
shape of its parameter, and any mismatch is an error: the moments are never assigned by guess.

Optimizers whose state has no AdamW ``exp_avg_sq`` per parameter (Adafactor's factored moments,
SGD's momentum, an 8-bit optimizer's quantised state, AMSGrad's maximum) are recognised by the keys of
their state and parameter groups: the import then records why there are no second moments, and
``adam-cosine`` refuses the run with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lingtrace.errors import LingtraceError

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
_UNSAFE_FIX = (
    "a transformers.Trainer's optimizer.pt holds tensors and numbers only: check where the file came from, "
    "or pass --no-second-moments to import without the optimizer's second moments"
)
_MISMATCH_FIX = (
    "import the checkpoints with the parameters trained as in the run (model.freeze_embeddings for frozen word embeddings), "
    "or pass --no-second-moments to import without the optimizer's second moments"
)


def load_optimizer_state(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` (memory-mapped where the file allows): tensors, numbers and
    containers only. Anything else is refused with a one-line ``LingtraceError`` naming the file."""
    import pickle

    for mmap in (True, False):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e):
                continue  # the legacy (non-zip) format cannot be memory-mapped: read it, still weights-only
            raise LingtraceError(f"cannot read {path}: {_first_line(e)}", _UNSAFE_FIX) from e
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as e:
            raise LingtraceError(f"{path} is not a plain state dict that torch.load(weights_only=True) reads: {_first_line(e)}", _UNSAFE_FIX) from e
    raise AssertionError("unreachable")


def _first_line(e: BaseException) -> str:
    """The informative line of a (multi-line) torch.load error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    telling = [ln for ln in lines if any(w in ln for w in ("GLOBAL", "Unsupported", "WeightsUnpickler error:", "Expected", "Unpickler"))]
    line = (telling or lines or [type(e).__name__])[0]
    return line if len(line) <= 200 else line[:197] + "..."


# ---------------------------------------------------------------- which optimizer


def optimizer_problem(state: Any) -> tuple[str, str | None]:
    """(the optimizer's name, why its state gives no AdamW second moments, or None when it does),
    recognised by the keys of the per-parameter state and of the parameter groups."""
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list) or not isinstance(state.get("state"), dict):
        return "unknown", "it does not hold an optimizer state dict (state and param_groups)"
    groups = [g for g in state["param_groups"] if isinstance(g, dict)]
    group_keys = set().union(*(g.keys() for g in groups)) if groups else set()
    state_keys = set().union(*(s.keys() for s in state["state"].values() if isinstance(s, dict))) if state["state"] else set()
    if {"state1", "qmap1", "absmax1"} & state_keys or "optim_bits" in group_keys:
        return "8-bit optimizer (bitsandbytes)", "its moments are quantised to 8 bits, not AdamW's exp_avg_sq"
    if {"exp_avg_sq_row", "exp_avg_sq_col"} & state_keys or {"clip_threshold", "decay_rate", "relative_step"} & group_keys:
        return "Adafactor", "it keeps factored second moments (row and column averages), not AdamW's exp_avg_sq per parameter"
    if "momentum_buffer" in state_keys or {"momentum", "dampening", "nesterov"} <= group_keys:
        return "SGD", "it keeps no second moments"
    adam = "betas" in group_keys and "eps" in group_keys and "amsgrad" in group_keys
    if not adam or not state_keys <= {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}:
        return "unknown", (
            "it is not AdamW's (per-parameter state keys " + ", ".join(sorted(state_keys)) + "; parameter-group keys "
            + ", ".join(sorted(k for k in group_keys if k != "params")) + ")"
        )
    if any(g.get("amsgrad") for g in groups):
        return "AdamW (AMSGrad)", "AMSGrad preconditions by the running maximum max_exp_avg_sq, not exp_avg_sq"
    if not state["state"]:
        return "AdamW", "the optimizer had taken no step"
    decoupled = all(g.get("decoupled_weight_decay", True) for g in groups) or all(float(g.get("weight_decay", 0)) == 0 for g in groups)
    return ("AdamW" if decoupled else "Adam"), None


# ---------------------------------------------------------------- which parameter


class TrainedParameters:
    """The parameters an optimizer trained, by name, in the order the Trainer gave them to it: what
    ``models.checkpoints.second_moments`` reads (``named_parameters``). ``groups``: the Trainer's two
    parameter groups (indices into ``names``), weight decay first."""

    def __init__(self, named: list[tuple[str, tuple[int, ...]]], decay: set[str]):
        self.names = [n for n, _ in named]
        self.shapes = [tuple(int(d) for d in s) for _, s in named]
        with_decay = [i for i, n in enumerate(self.names) if n in decay]
        self.groups = [with_decay, [i for i in range(len(self.names)) if i not in set(with_decay)]]

    @classmethod
    def of(cls, model) -> TrainedParameters:
        """The trainable parameters of ``model`` (on any device, the meta device included) and the
        Trainer's weight-decay rule applied to it."""
        from transformers import Trainer

        decay = set(Trainer.get_decay_parameter_names(None, model))  # uses no Trainer state (transformers 5)
        return cls([(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad], decay)

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        return iter(zip(self.names, self._params))

    def layout(self, state: dict[str, Any], path: Path) -> list[list[int]]:
        """The parameter groups of ``state`` as indices into ``names``, checked by count and shape: the
        Trainer's two groups (weight decay first), or one group of every trained parameter in order."""
        sizes = [len(g.get("params", [])) for g in state["param_groups"]]
        if sizes == [len(g) for g in self.groups]:
            layout = self.groups
        elif sizes == [len(self.names)]:
            layout = [list(range(len(self.names)))]
        else:
            raise LingtraceError(
                f"{path} holds {len(sizes)} parameter group(s) of {'+'.join(map(str, sizes))} parameters, but the model "
                f"trains {len(self.names)} ({len(self.groups[0])} with weight decay + {len(self.groups[1])} without, as the Trainer groups them)",
                _MISMATCH_FIX,
            )
        for group, indices in zip(state["param_groups"], layout):
            for index, i in zip(group["params"], indices):
                held = state["state"].get(index, {}).get("exp_avg_sq")
                if held is not None and tuple(held.shape) != self.shapes[i]:
                    raise LingtraceError(
                        f"{path}: the optimizer state of parameter {index} has shape {tuple(held.shape)}, but the "
                        f"{i + 1}-th trained parameter, {self.names[i]}, has shape {self.shapes[i]}",
                        _MISMATCH_FIX,
                    )
        return layout

    def optimizer(self, state: dict[str, Any], path: Path) -> torch.optim.Optimizer:
        """A ``torch.optim.AdamW`` over stand-in parameters of the trained shapes, holding ``state``."""
        layout = self.layout(state, path)
        self._params = [torch.nn.Parameter(torch.empty(shape), requires_grad=False) for shape in self.shapes]
        optimizer = torch.optim.AdamW([{"params": [self._params[i] for i in indices]} for indices in layout])
        optimizer.load_state_dict(state)
        return optimizer


def import_second_moments(source_dir: Path, target: Path, trained: TrainedParameters) -> dict[str, Any]:
    """Write ``target/optimizer_second_moments.safetensors`` from ``source_dir/optimizer.pt``; returns the
    manifest's record of where they came from (``source``, ``optimizer``, ``step``), or of why there are
    none (``reason``)."""
    from lingtrace.models.checkpoints import SECOND_MOMENTS, save_second_moments

    path = source_dir / OPTIMIZER_FILE
    if not path.is_file():
        return {"source": None, "reason": f"{source_dir} has no {OPTIMIZER_FILE} (the Trainer saves it with every checkpoint unless save_only_model)"}
    state = load_optimizer_state(path)
    name, problem = optimizer_problem(state)
    if problem is not None:
        log.warning("%s: no AdamW second moments (%s: %s); adam-cosine will not run on this checkpoint", path, name, problem)
        return {"source": str(path), "optimizer": name, "reason": f"{path} is the state of {name}: {problem}"}
    optimizer = trained.optimizer(state, path)
    save_second_moments(optimizer, trained, target)
    steps = [int(s["step"]) for s in state["state"].values() if "step" in s]
    del optimizer, state
    trained._params = []
    return {"source": str(path), "optimizer": name, "step": max(steps, default=0), "file": SECOND_MOMENTS}


def live_second_moments(optimizer, model, target: Path) -> dict[str, Any]:
    """Write ``target/optimizer_second_moments.safetensors`` from a live optimizer (the Trainer's, possibly
    wrapped by accelerate); returns the manifest's record as ``import_second_moments`` does."""
    from lingtrace.models.checkpoints import SECOND_MOMENTS, save_second_moments

    inner = getattr(optimizer, "optimizer", optimizer)
    name, problem = optimizer_problem(inner.state_dict())
    if problem is not None:
        return {"source": None, "optimizer": name, "reason": f"the Trainer's optimizer is {name}: {problem}"}
    save_second_moments(inner, model, target)
    steps = [int(s["step"]) for s in inner.state.values() if "step" in s]
    return {"source": "the Trainer's optimizer (LingtraceCallback)", "optimizer": name, "step": max(steps, default=0), "file": SECOND_MOMENTS}


def skeleton(source_path: Path, kind: str, freeze_embeddings: bool):
    """The model of a full checkpoint folder on the meta device (no weights read), with the word
    embeddings frozen when ``freeze_embeddings``: the parameters in the order and with the flags of training."""
    from transformers import AutoConfig

    from lingtrace.models.decoder import model_class
    from lingtrace.models.loading import freeze_word_embeddings

    config = AutoConfig.from_pretrained(str(source_path))
    with torch.device("meta"):
        model = model_class(kind).from_config(config)
    if freeze_embeddings:
        freeze_word_embeddings(model)
    return model
