"""The config of an imported run: the YAML/preset/overrides given, the data source, and what the data
and the checkpoints determine where the config leaves it open."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lingtrace.config import Config, apply_overrides, config_file_dict, preset_dict, validate
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.importing.sources import Source
from lingtrace.io import read_json
from lingtrace.run import RunDir

log = logging.getLogger(__name__)


def _given_keys(raw: dict[str, Any], overrides: list[str]) -> set[str]:
    keys = {f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict) for key in values}
    return keys | {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def import_config(
    sources: list[Source],
    config_path: str | None,
    preset_name: str | None,
    overrides: list[str],
    data_path: str | None,
    data_from: RunDir | None,
    training_recipe: bool = False,
    model_name: str | None = None,
) -> Config:
    """The run's config: the YAML/preset/overrides given, the data source (local files or another run's
    data), and what the data and checkpoints determine where the config leaves it open (the languages
    and sizes of the data, the checkpoints' label names and location, ``model.kind`` from the checkpoints'
    architectures, a LoRA adapter's settings; ``model_name``: the default ``model.name``).

    A ``causal-lm``'s prompt is the data's text itself (``model.instruction`` defaults to empty): the
    text column holds the prompt, or the input text after the instruction given as ``model.instruction``;
    the label column holds the answer, whose distinct values become the label names and verbalisations."""
    if (data_path is None) == (data_from is None):
        raise LingtraceError("`lingtrace import` needs the data the model was trained on", "give --data PATH (local files) or --data-from RUN")
    raw = config_file_dict(config_path) if config_path else (preset_dict(preset_name) if preset_name else {})
    given = _given_keys(raw, overrides)
    if training_recipe and "model.name" not in given:
        raise LingtraceError(
            "--training-recipe declares how the checkpoints were trained, so it needs model.name (the pretrained model they were fine-tuned from)",
            "give it, and the train.* settings used, in --config or with --set model.name=...",
        )
    d = Config.from_dict(raw).to_dict()
    if "model.name" not in given:
        folder = sources[-1].path.parent if sources[-1].in_trainer_output else sources[-1].path
        d["model"]["name"] = model_name or sources[-1].base or str(folder)
    d["model"].update(_model_settings(sources[-1], raw, overrides, given))
    if data_from is not None:
        if any(k.startswith("data.") for k in given):
            raise LingtraceError("--data-from takes the data and its settings from that run", "drop the data.* settings, or use --data PATH")
        d["data"] = read_json(data_from.config_path)["data"] if data_from.config_path.exists() else None
        if d["data"] is None:
            raise LingtraceError(f"{data_from.root} is not a lingtrace run (no config.json)", "give --data-from a run directory")
    else:
        d["data"].update(source="local", path=str(Path(data_path).expanduser().resolve()))
        if "data.task" not in given:
            d["data"]["task"] = "local"
    cfg = apply_overrides(Config.from_dict(d), overrides)
    if data_from is None:
        cfg = _fit_to_data(cfg, given, sources[0])
    validate(cfg)
    return cfg


def _model_settings(source: Source, raw: dict[str, Any], overrides: list[str], given: set[str]) -> dict[str, Any]:
    """``model.*`` values the checkpoints determine: the kind (unless given), a LoRA adapter's settings,
    and an empty instruction for a causal LM (its prompt is the data's text)."""
    from lingtrace.importing.kinds import adapter_keys, infer_kind, lora_overrides

    kind = apply_overrides(Config.from_dict(raw), overrides).model.kind if "model.kind" in given else infer_kind(source)
    out: dict[str, Any] = {"kind": kind}
    if source.adapter is not None:
        out.update(lora_overrides(source, adapter_keys(source), kind))
    if kind == "causal-lm" and "model.instruction" not in given:
        out["instruction"] = ""
    return out


def _fit_to_data(cfg: Config, given: set[str], source: Source) -> Config:
    """Languages (all of the data's) and sizes (every example the sample can keep) where not given,
    and the label names of the checkpoints for a ``local`` task."""
    from lingtrace.data.tasks import get_task
    from lingtrace.prepare.readers import SPLITS, finalize_frames, read_local

    model_names, named = source.label_names, source.named_labels
    causal = cfg.model.kind == "causal-lm"  # its classes are the answers in the data, not a head's
    changes = []
    if cfg.data.task == "local" and cfg.data.label_names is None and named and not causal:
        changes.append(f"data.label_names={json.dumps(model_names)}")
    cfg = apply_overrides(cfg, changes)
    d = cfg.data
    languages = list(d.languages) if "data.languages" in given else None
    frames, spec = read_local(d.path, d.columns, languages, d.label_names, get_task(d.task), d.drop_invalid)
    languages = languages or sorted(frames[schema.LANG].astype(str).unique())
    frames = finalize_frames(frames, spec, languages, d.drop_invalid)
    if not causal:
        check_labels(spec.label_names, model_names, named, d.task, str(d.path), declared="data.label_names" in given)
    missing = [s for s in SPLITS if s not in set(frames[schema.SPLIT])]
    if missing:
        raise LingtraceError(
            f"the data in {d.path} has no {missing[0]} split: an imported model needs its training, dev and test data",
            "give train/dev/test files (or a split column), the training file being the one the model was trained on",
        )
    changes = [f"data.languages=[{','.join(languages)}]"] if "data.languages" not in given else []
    for split, key in (("train", "train_per_lang"), ("dev", "dev_per_lang"), ("test", "test_per_lang")):
        part = frames[frames[schema.SPLIT] == split]
        ids = [set(part.loc[part[schema.LANG] == lang, schema.TRANSLATION_ID]) for lang in languages]
        n = len(set.intersection(*ids)) if spec.parallel else min(len(i) for i in ids)
        if n == 0:
            short = languages[int(np.argmin([len(i) for i in ids]))]
            raise LingtraceError(
                f"the {split} split of the data in {d.path} has no example "
                + (f"whose translation id is in every language of {', '.join(languages)}" if spec.parallel else f"of {short}"),
                "give every language train, dev and test examples, or list fewer in data.languages",
            )
        if f"data.{key}" not in given:
            changes.append(f"data.{key}={n}")
            kept = n * len(languages)
            if kept < len(part):
                log.warning(
                    "%s: the %s sample keeps %d of the %d rows (%d per language%s)%s",
                    d.path, split, kept, len(part), n, ", translation ids present in every language" if spec.parallel else "",
                    "; influence is computed for those training examples only" if split == "train" else "",
                )
    return apply_overrides(cfg, changes)


def check_labels(data_names: list[str] | tuple[str, ...], model_names: list[str], named: bool, task: str, where: str, declared: bool = False) -> None:
    """Refuse data whose labels (``data_names``, read from ``where``) cannot be the checkpoints' classes
    (``declared``: the config lists the label names in class-index order, so unnamed classes are fine)."""
    data_names = list(data_names)
    if len(data_names) != len(model_names):
        raise LingtraceError(
            f"the checkpoints have {len(model_names)} classes ({', '.join(model_names)}) but the data in {where} has "
            f"{len(data_names)} ({', '.join(data_names)})",
            "give the data the model was trained on, or list its labels in data.label_names",
        )
    indices = data_names == [str(i) for i in range(len(data_names))]
    if task == "local" and named and not indices and data_names != model_names:
        raise LingtraceError(
            f"the checkpoints' classes are {', '.join(model_names)} (in index order), the data's {', '.join(data_names)}",
            f"set data.label_names=[{','.join(model_names)}] to map the data's labels onto the model's classes",
        )
    if task == "local" and not named and not indices and not declared:
        raise LingtraceError(
            f"the checkpoints' classes are unnamed ({', '.join(model_names)}) and the data's labels are names "
            f"({', '.join(data_names)}), so which name is which class is not known",
            "set data.label_names to the label names in class-index order (class 0 first)",
        )

