"""The checkpoints to import, in training order: ``save_pretrained`` folders (in the order given), or
the ``checkpoint-N/`` subfolders of a ``transformers.Trainer`` output folder (ordered by the global step
in their ``trainer_state.json``). A folder is a full model (``config.json`` and weights) or a peft LoRA
adapter (``adapter_config.json`` and ``adapter_model.safetensors``) of a base model named by the
adapter config or by ``base_model``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingtrace.errors import LingtraceError

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
#: a peft adapter checkpoint: its settings and its weights (the trained parameters)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FOLDER_FIX = (
    "give save_pretrained folders (config.json and model.safetensors, or a peft adapter's adapter_config.json "
    "and adapter_model.safetensors) in training order, or a transformers.Trainer output folder with checkpoint-*/ subfolders"
)
BASE_FIX = "pass --base-model with the folder or hub name of the model the adapters were trained on"


@dataclass
class Source:
    """One checkpoint folder to import, with what its ``trainer_state.json`` says (if it has one)."""

    path: Path
    #: the model's config.json (an adapter's: its base model's)
    config: dict[str, Any]
    step: int | None
    trainer_epoch: float | None
    state: dict[str, Any] | None
    #: a peft adapter's adapter_config.json (None for a full model)
    adapter: dict[str, Any] | None = None
    #: an adapter's base model: a folder or a hub name
    base: str | None = None
    #: an adapter's classification head size (the rows of its trained ``score``/``classifier`` weight), if it has one
    head_rows: int | None = None
    #: a live adapter's trained tensor names (None: those of its ``adapter_model.safetensors``)
    adapter_names: list[str] | None = None

    @property
    def label_names(self) -> list[str]:
        id2label = self.config.get("id2label") or {}
        n = int(self.head_rows or self.config.get("num_labels") or len(id2label) or 2)
        return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]

    @property
    def named_labels(self) -> bool:
        """Whether the checkpoint names its classes (transformers' default names are LABEL_0, LABEL_1, ...)."""
        return self.label_names != [f"LABEL_{i}" for i in range(len(self.label_names))]

    @property
    def in_trainer_output(self) -> bool:
        """Whether the folder is a Trainer's ``checkpoint-N/`` (named by its global step)."""
        return CHECKPOINT_DIR.fullmatch(self.path.name) is not None

    def identity(self) -> list[Any]:
        """What the checkpoint is: its path and the size and time of its weight files."""
        files = sorted(f for f in self.path.iterdir() if f.is_file() and is_weights(f))
        base = [["base", self.base]] if self.base else []
        return [str(self.path.resolve())] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files] + base


def is_weights(f: Path) -> bool:
    return f.suffix == ".safetensors" or (f.name.startswith("pytorch_model") and f.suffix == ".bin")


def is_adapter(path: Path) -> bool:
    """Whether the folder is a peft adapter checkpoint (adapter settings and weights, no model config)."""
    return not (path / "config.json").is_file() and (path / ADAPTER_CONFIG).is_file()


def read_source(path: Path, base_model: str | None = None) -> Source:
    """The checkpoint folder ``path``: its config (an adapter's base model's) and, where it has one,
    its ``trainer_state.json``."""
    adapter, base, head_rows = None, None, None
    if is_adapter(path):
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise LingtraceError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS} (adapters saved as safetensors)", FOLDER_FIX)
        adapter = _read_json_file(path / ADAPTER_CONFIG)
        base = base_model or adapter.get("base_model_name_or_path")
        if not base:
            raise LingtraceError(f"{path / ADAPTER_CONFIG} names no base model (base_model_name_or_path)", BASE_FIX)
        config = base_config(str(base))
        head_rows = _adapter_head_rows(path / ADAPTER_WEIGHTS)
    elif not (path / "config.json").is_file():
        raise LingtraceError(f"{path} has no config.json, so it is not a Hugging Face checkpoint folder", FOLDER_FIX)
    elif not any(is_weights(f) for f in path.iterdir() if f.is_file()):
        raise LingtraceError(f"{path} has no model weights (model.safetensors or pytorch_model.bin)", FOLDER_FIX)
    else:
        config = _read_json_file(path / "config.json")
    state = _read_json_file(path / TRAINER_STATE) if (path / TRAINER_STATE).is_file() else None
    step = state.get("global_step") if state else None
    name = CHECKPOINT_DIR.fullmatch(path.name)
    if step is None and name:
        step = int(name.group(1))  # the Trainer names checkpoint folders by global step
    return Source(path, config, None if step is None else int(step), state.get("epoch") if state else None, state, adapter, None if base is None else str(base), head_rows)


def base_config(base: str) -> dict[str, Any]:
    """The config.json of an adapter's base model (a folder, or a hub name in the local cache)."""
    folder = Path(base).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise LingtraceError(f"the adapters' base model {folder} has no config.json", BASE_FIX)
        return _read_json_file(folder / "config.json")
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(base).to_dict()
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; all mean "cannot load"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise LingtraceError(f"cannot load the config of the adapters' base model {base!r}: {type(e).__name__}: {first}", BASE_FIX) from e


#: the module names peft keeps trained in full beside the adapters of a classifier (``modules_to_save``)
HEAD_MODULES = ("score", "classifier")


def _adapter_head_rows(path: Path) -> int | None:
    """The number of classes of the classification head saved with the adapters (None without one)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            parts = key.split(".")
            if len(parts) >= 2 and parts[-2] in HEAD_MODULES and parts[-1] == "weight":
                return int(f.get_slice(key).get_shape()[0])
    return None


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LingtraceError(f"cannot read {path}: {e}", "check that the checkpoint folder is complete") from e
    if not isinstance(out, dict):
        raise LingtraceError(f"{path} does not hold a JSON object", "check that the checkpoint folder is complete")
    return out


def find_checkpoints(paths: list[str | Path], base_model: str | None = None) -> tuple[list[Source], list[Path]]:
    """The checkpoints in training order, and the Trainer output folders among ``paths``.

    A folder with ``checkpoint-N/`` subfolders is a Trainer output folder and stands for them (a model
    saved at its top level, a copy of one of them, is not imported). Checkpoints that know their global
    step (all of a Trainer's) are ordered by it; ``save_pretrained`` folders without a
    ``trainer_state.json`` are taken in the order given. ``base_model`` is the base model of adapter
    checkpoints (default: the one their ``adapter_config.json`` names).
    """
    folders, trainer_dirs = _checkpoint_folders(paths)
    sources = _in_training_order([read_source(f, base_model) for f in folders])
    if len({s.adapter is None for s in sources}) > 1:
        raise LingtraceError("some checkpoints are peft adapters and some full models", "give the checkpoints of one fine-tuning run")
    labels = {tuple(s.label_names) for s in sources}
    if len(labels) > 1:
        raise LingtraceError(
            f"the checkpoints have different label sets ({'; '.join(', '.join(names) for names in sorted(labels))})",
            "give the checkpoints of one fine-tuning run",
        )
    return sources, trainer_dirs


def _checkpoint_folders(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """The checkpoint folders ``paths`` stand for (each once), and the Trainer output folders among them."""
    if not paths:
        raise LingtraceError("no checkpoint folder given", FOLDER_FIX)
    folders: list[Path] = []
    trainer_dirs: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.is_dir():
            raise LingtraceError(f"checkpoint folder {p} does not exist", FOLDER_FIX)
        subs = [d for d in p.iterdir() if d.is_dir() and CHECKPOINT_DIR.fullmatch(d.name)]
        if subs:
            trainer_dirs.append(p)
            folders += subs
        else:
            folders.append(p)
    resolved = [f.resolve() for f in folders]
    if len(set(resolved)) < len(resolved):
        dup = next(f for f in folders if resolved.count(f.resolve()) > 1)
        raise LingtraceError(f"checkpoint folder {dup} is given twice", "give each checkpoint once")
    return folders, trainer_dirs


def _in_training_order(sources: list[Source]) -> list[Source]:
    """``sources`` by global step where all know theirs, as given where none does."""
    known = [s.step is not None for s in sources]
    if all(known):
        sources.sort(key=lambda s: s.step)
        steps = [s.step for s in sources]
        if len(set(steps)) < len(steps):
            raise LingtraceError(
                f"two checkpoints have the same global step ({', '.join(str(s.path) for s in sources if steps.count(s.step) > 1)})",
                "give the checkpoints of one training run",
            )
    elif any(known) and len(sources) > 1:
        raise LingtraceError(
            "some checkpoints have a trainer_state.json (global step) and some do not, so their order is unclear",
            "give either one Trainer output folder or save_pretrained folders (in training order) alone",
        )
    return sources
