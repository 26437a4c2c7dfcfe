"""``lingtrace import``: a run directory from checkpoints trained elsewhere.

Inputs: Hugging Face checkpoint folders (``save_pretrained`` output, given in training order) or a
``transformers.Trainer`` output folder (its ``checkpoint-*/`` subfolders, ordered by the global step
in their ``trainer_state.json``, not by name), and the data the model was trained on: local files read
by the ``local`` reader with the usual column mapping (``data.columns``), or the ``data/`` of an
existing run.

Output: an ordinary run directory. ``data/`` comes from the normal ``prepare`` stage; every
checkpoint becomes ``checkpoints/epoch-K/`` (K = 1, 2, ... in training order), loadable with
``AutoModelForSequenceClassification.from_pretrained``: its files are hard-linked from the source when
they are on the same file system (a link keeps the source's file mode), copied otherwise; the source is
never modified. Trainer bookkeeping (optimizer, scheduler, RNG state, ``training_args.bin``: pickles) is
not carried over. ``checkpoints/manifest.json`` has the keys of a native run plus per epoch the source
and the sources of its numbers, and an ``imported`` record; the ``prepare`` and ``train`` stage markers
are written through the normal run-directory API, so ``select``, ``influence``, ``analyze`` and
``report`` then run (and check the config) as on a native run.

Per checkpoint: epoch, global step, learning rates (first, last, mean of those logged within the
epoch) and train loss (mean of the logged losses) come from ``trainer_state.json``'s ``log_history``
where there is one (learning rates are NaN and the loss null otherwise); the dev accuracy is computed
by evaluating the checkpoint on ``data/dev.parquet`` (``dev_accuracy="evaluate"``, the default) or taken
from the logged ``eval_accuracy`` (``"trainer-state"``). The manifest says which.

An imported run has no training recipe unless ``training_recipe`` is set (the config's ``model.name``
and ``train.*`` are then declared to be how the checkpoints were trained); the retraining experiments
refuse to run without one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lingtrace.config import Config, apply_overrides, config_file_dict, preset_dict, validate
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.io import atomic_dir, read_json
from lingtrace.run import RunDir, fingerprint, read_manifest, read_task, write_manifest

log = logging.getLogger(__name__)

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
#: files carried into the run: configs, weights, tokenizer files (no pickles, no Trainer bookkeeping)
CARRIED_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
NOT_CARRIED = (TRAINER_STATE,)
TOKENIZER_CONFIG = "tokenizer_config.json"
DEV_ACCURACY = ("evaluate", "trainer-state")
#: what a run directory holds (anything else in the target directory is not lingtrace's)
RUN_ENTRIES = ("config.json", "data", "checkpoints", "stages", "selection", "influence", "analysis", "report", "experiments")
_FOLDER_FIX = (
    "give save_pretrained folders (config.json and model.safetensors) in training order, "
    "or a transformers.Trainer output folder with checkpoint-*/ subfolders"
)


@dataclass
class Source:
    """One checkpoint folder to import, with what its ``trainer_state.json`` says (if it has one)."""

    path: Path
    config: dict[str, Any]
    step: int | None
    trainer_epoch: float | None
    state: dict[str, Any] | None

    @property
    def label_names(self) -> list[str]:
        id2label = self.config.get("id2label") or {}
        n = int(self.config.get("num_labels") or len(id2label) or 2)
        return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]

    @property
    def named_labels(self) -> bool:
        """Whether the checkpoint names its classes (transformers' default names are LABEL_0, LABEL_1, ...)."""
        return self.label_names != [f"LABEL_{i}" for i in range(len(self.label_names))]

    def identity(self) -> list[Any]:
        """What the checkpoint is: its path and the size and time of its weight files."""
        files = sorted(f for f in self.path.iterdir() if f.is_file() and _is_weights(f))
        return [str(self.path.resolve())] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _is_weights(f: Path) -> bool:
    return f.suffix == ".safetensors" or (f.name.startswith("pytorch_model") and f.suffix == ".bin")


def _read_source(path: Path) -> Source:
    if not (path / "config.json").is_file():
        raise LingtraceError(f"{path} has no config.json, so it is not a Hugging Face checkpoint folder", _FOLDER_FIX)
    if not any(_is_weights(f) for f in path.iterdir() if f.is_file()):
        raise LingtraceError(f"{path} has no model weights (model.safetensors or pytorch_model.bin)", _FOLDER_FIX)
    config = _read_json_file(path / "config.json")
    state = _read_json_file(path / TRAINER_STATE) if (path / TRAINER_STATE).is_file() else None
    step = state.get("global_step") if state else None
    name = CHECKPOINT_DIR.fullmatch(path.name)
    if step is None and name:
        step = int(name.group(1))  # the Trainer names checkpoint folders by global step
    return Source(path, config, None if step is None else int(step), state.get("epoch") if state else None, state)


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LingtraceError(f"cannot read {path}: {e}", "check that the checkpoint folder is complete") from e
    if not isinstance(out, dict):
        raise LingtraceError(f"{path} does not hold a JSON object", "check that the checkpoint folder is complete")
    return out


def find_checkpoints(paths: list[str | Path]) -> tuple[list[Source], list[Path]]:
    """The checkpoints in training order, and the Trainer output folders among ``paths``.

    A folder with ``checkpoint-N/`` subfolders is a Trainer output folder and stands for them (a model
    saved at its top level, a copy of one of them, is not imported). Checkpoints that know their global
    step (all of a Trainer's) are ordered by it; ``save_pretrained`` folders without a
    ``trainer_state.json`` are taken in the order given.
    """
    if not paths:
        raise LingtraceError("no checkpoint folder given", _FOLDER_FIX)
    folders: list[Path] = []
    trainer_dirs: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.is_dir():
            raise LingtraceError(f"checkpoint folder {p} does not exist", _FOLDER_FIX)
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
    sources = [_read_source(f) for f in folders]
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
    labels = {tuple(s.label_names) for s in sources}
    if len(labels) > 1:
        raise LingtraceError(
            f"the checkpoints have different label sets ({'; '.join(', '.join(names) for names in sorted(labels))})",
            "give the checkpoints of one fine-tuning run",
        )
    return sources, trainer_dirs


# ---------------------------------------------------------------- the config of an imported run


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
) -> Config:
    """The run's config: the YAML/preset/overrides given, the data source (local files or another run's
    data), and what the data and checkpoints determine where the config leaves it open (the languages
    and sizes of the data, the checkpoints' label names and location)."""
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
        d["model"]["name"] = str(sources[-1].path.parent if CHECKPOINT_DIR.fullmatch(sources[-1].path.name) else sources[-1].path)
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


def _fit_to_data(cfg: Config, given: set[str], source: Source) -> Config:
    """Languages (all of the data's) and sizes (every example the sample can keep) where not given,
    and the label names of the checkpoints for a ``local`` task."""
    from lingtrace.data.readers import SPLITS, finalize_frames, read_local
    from lingtrace.data.tasks import get_task

    model_names, named = source.label_names, source.named_labels
    changes = []
    if cfg.data.task == "local" and cfg.data.label_names is None and named:
        changes.append(f"data.label_names={json.dumps(model_names)}")
    cfg = apply_overrides(cfg, changes)
    d = cfg.data
    languages = list(d.languages) if "data.languages" in given else None
    frames, spec = read_local(d.path, d.columns, languages, d.label_names, get_task(d.task), d.drop_invalid)
    languages = languages or sorted(frames[schema.LANG].astype(str).unique())
    frames = finalize_frames(frames, spec, languages, d.drop_invalid)
    _check_labels(spec.label_names, model_names, named, d.task, str(d.path))
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


def _check_labels(data_names: list[str] | tuple[str, ...], model_names: list[str], named: bool, task: str, where: str) -> None:
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
    if task == "local" and not named and not indices:
        raise LingtraceError(
            f"the checkpoints' classes are unnamed ({', '.join(model_names)}) and the data's labels are names "
            f"({', '.join(data_names)}), so which name is which class is not known",
            "set data.label_names to the label names in class-index order (class 0 first)",
        )


# ---------------------------------------------------------------- checkpoints and manifest


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` on the same file system (the link keeps the source's file mode, which
    is left alone), else copy it; returns ``"linked"`` or ``"copied"``."""
    real = src.resolve()
    if _same_device(real, dst.parent):
        try:
            os.link(real, dst)
            return "linked"
        except OSError:  # a file system without hard links, or not allowed: copy
            pass
    shutil.copyfile(real, dst)
    return "copied"


def _tokenizer_into(target: Path, candidates: list[str | Path], source: Path) -> str:
    """Save the first loadable tokenizer of ``candidates`` (folders or hub names) into ``target`` (only
    the files it lacks); returns where it came from."""
    from transformers import AutoTokenizer

    for cand in candidates:
        if isinstance(cand, Path) and not (cand / TOKENIZER_CONFIG).is_file():
            continue
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(cand))
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds; all mean "cannot load"
            raise LingtraceError(f"cannot load the tokenizer {cand}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "pass --tokenizer with the folder or hub name of the model's tokenizer") from e
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            tokenizer.save_pretrained(scratch)
            for f in Path(scratch).iterdir():
                if f.is_file() and not (target / f.name).exists():
                    os.replace(f, target / f.name)
        return str(cand)
    raise LingtraceError(
        f"{source} has no tokenizer ({TOKENIZER_CONFIG}), and no other checkpoint or Trainer folder has one",
        "pass --tokenizer with the folder or hub name of the tokenizer the model was trained with",
    )


def _materialize(source: Source, target: Path, tokenizers: list[str | Path]) -> dict[str, Any]:
    """``checkpoints/epoch-K/`` from ``source``: weights and configs hard-linked or copied, a
    ``pytorch_model.bin`` converted to safetensors, a missing tokenizer added from ``tokenizers``.
    Returns what was done: files ``linked`` and ``copied``, ``weights`` (linked, copied or converted),
    where the ``tokenizer`` came from, the files ``skipped``."""
    record: dict[str, Any] = {"linked": [], "copied": [], "weights": "converted", "tokenizer": str(source.path)}
    files = sorted(f for f in source.path.iterdir() if f.is_file())
    carried = [f for f in files if f.suffix in CARRIED_SUFFIXES and f.name not in NOT_CARRIED]
    with atomic_dir(target) as tmp:
        if not any(f.suffix == ".safetensors" for f in carried):
            # only pytorch_model.bin: transformers reads it (weights_only), it is stored as safetensors
            from transformers import AutoModelForSequenceClassification

            AutoModelForSequenceClassification.from_pretrained(str(source.path)).save_pretrained(tmp)
        for f in carried:
            if not (tmp / f.name).exists():
                how = _link_or_copy(f, tmp / f.name)
                record[how].append(f.name)
                if f.suffix == ".safetensors":
                    record["weights"] = how if record["weights"] in ("converted", how) else "linked and copied"
        if not (tmp / TOKENIZER_CONFIG).exists():
            record["tokenizer"] = _tokenizer_into(tmp, tokenizers, source.path)
    record["skipped"] = sorted(f.name for f in files if f not in carried)
    return record


def _log_history(sources: list[Source]) -> list[dict[str, Any]]:
    """Every ``log_history`` entry of the checkpoints' trainer states, once, by step."""
    seen: dict[str, dict[str, Any]] = {}
    for s in sources:
        for entry in (s.state or {}).get("log_history", []):
            if isinstance(entry, dict) and "step" in entry:
                seen.setdefault(json.dumps(entry, sort_keys=True), entry)
    return sorted(seen.values(), key=lambda e: e["step"])


def epoch_records(sources: list[Source]) -> list[dict[str, Any]]:
    """The manifest's per-epoch records (without dev accuracy): epoch K = the K-th checkpoint, with the
    learning rates and losses logged at steps after the previous checkpoint up to this one."""
    history = _log_history(sources)
    records, prev = [], 0
    for k, s in enumerate(sources, start=1):
        window = [e for e in history if s.step is not None and prev < e["step"] <= s.step]
        lrs = [float(e["learning_rate"]) for e in window if "learning_rate" in e]
        losses = [float(e["loss"]) for e in window if "loss" in e]
        evals = [float(e["eval_accuracy"]) for e in window if "eval_accuracy" in e]
        records.append(
            {
                "epoch": k,
                "path": f"epoch-{k}",
                "lr_start": lrs[0] if lrs else math.nan,
                "lr_end": lrs[-1] if lrs else math.nan,
                "lr_mean": float(np.mean(lrs)) if lrs else math.nan,
                "train_loss": float(np.mean(losses)) if losses else None,
                "dev_accuracy": None,
                "dev_accuracy_per_lang": {},
                "steps": s.step - prev if s.step is not None else None,
                "source": str(s.path),
                "global_step": s.step,
                "trainer_epoch": s.trainer_epoch,
                "trainer_eval_accuracy": evals[-1] if evals else None,
                "lr_source": "trainer_state.json log_history" if lrs else "unknown (NaN)",
                "train_loss_source": "trainer_state.json log_history" if losses else "unknown",
            }
        )
        prev = s.step if s.step is not None else prev
    return records


def _dev_accuracy(run: RunDir, cfg: Config, records: list[dict[str, Any]], how: str) -> dict[str, Any]:
    """Fill each record's dev accuracy; returns notes on the checkpoints (e.g. unchanged word embeddings)."""
    if how == "trainer-state":
        for r in records:
            if r["trainer_eval_accuracy"] is None:
                raise LingtraceError(
                    f"{r['source']}: trainer_state.json has no eval_accuracy logged for this checkpoint",
                    "use --dev-accuracy evaluate (the default) to evaluate the checkpoints on the dev data",
                )
            r["dev_accuracy"] = r["trainer_eval_accuracy"]
            r["dev_accuracy_source"] = "trainer_state.json eval_accuracy (the Trainer's own dev set)"
        return {}
    import torch

    from lingtrace.evaluation import accuracy_by_lang, predict
    from lingtrace.models.loading import load_checkpoint, word_embedding_param_name
    from lingtrace.run import read_split
    from lingtrace.utils import resolve_device

    dev = read_split(run, "dev")
    device = resolve_device(cfg.train.device)
    first_embeddings, unchanged = None, True
    for r in records:
        model, tokenizer = load_checkpoint(run.checkpoints_dir / r["path"])
        embeddings = dict(model.named_parameters(remove_duplicate=False))[word_embedding_param_name(model)].detach()
        if first_embeddings is None:
            first_embeddings = embeddings.clone()
        else:
            unchanged = unchanged and torch.equal(first_embeddings, embeddings)
        model.to(device)
        r["dev_accuracy"], r["dev_accuracy_per_lang"] = accuracy_by_lang(dev, predict(model, tokenizer, dev, cfg, device, desc=f"dev {r['path']}"))
        r["dev_accuracy_source"] = "evaluated on data/dev.parquet"
        log.info("%s (%s): dev accuracy %.4f", r["path"], r["source"], r["dev_accuracy"])
    notes = {}
    if len(records) > 1 and unchanged and not cfg.model.freeze_embeddings:
        notes["word_embeddings_unchanged"] = True
        log.warning(
            "the word embeddings are identical in every checkpoint (frozen during training?): "
            "set model.freeze_embeddings=true so that influence leaves them out, as for a native run with frozen embeddings"
        )
    return notes


def _final_epoch(records: list[dict[str, Any]], final: str | None) -> int:
    if final is None:
        return records[-1]["epoch"]
    if final.isdigit() and 1 <= int(final) <= len(records):
        return int(final)
    for r in records:
        if final in (r["source"], Path(r["source"]).name) or Path(final).expanduser().resolve() == Path(r["source"]).resolve():
            return r["epoch"]
    raise LingtraceError(
        f"--final {final!r} is none of the {len(records)} imported checkpoints",
        f"give its number 1..{len(records)} in training order or its folder ({', '.join(Path(r['source']).name for r in records)})",
    )


def _import_data_from(run: RunDir, other: RunDir, cfg: Config, overwrite: bool) -> None:
    """``data/`` of another run (hard-linked or copied), marked prepared with the same data config."""
    if not other.is_complete("prepare"):
        raise LingtraceError(f"{other.root} has no prepared data (stage 'prepare' is not complete)", f"run `lingtrace prepare {other.root}` first")
    other.check_stage(cfg, "prepare")
    if run.check_stage(cfg, "prepare", overwrite):
        return
    run.invalidate_after("prepare")
    with atomic_dir(run.data_dir) as tmp:
        for f in sorted(other.data_dir.iterdir()):
            if f.is_file():
                _link_or_copy(f, tmp / f.name)
    run.mark_complete(cfg, "prepare", {"copied_from": str(other.root.resolve())})


def import_run(
    run: RunDir,
    sources: list[Source],
    trainer_dirs: list[Path],
    cfg: Config,
    data_from: RunDir | None = None,
    final: str | None = None,
    tokenizer: str | None = None,
    dev_accuracy: str = "evaluate",
    training_recipe: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build (or finish) the run directory ``run`` from ``sources``; returns the manifest.

    Rerunning with the same inputs does nothing more; a directory holding another run (or anything but
    a run) is refused unless ``overwrite``.
    """
    from lingtrace.evaluation import majority_baseline
    from lingtrace.pipeline import run_stages
    from lingtrace.run import read_split

    if dev_accuracy not in DEV_ACCURACY:
        raise LingtraceError(f"--dev-accuracy must be {' or '.join(DEV_ACCURACY)}, got {dev_accuracy!r}")
    foreign = sorted(p.name for p in run.root.iterdir() if p.name not in RUN_ENTRIES) if run.root.is_dir() else []
    if foreign:
        raise LingtraceError(f"{run.root} holds other files ({', '.join(foreign[:3])}), not a lingtrace run", "import into a new or empty directory")
    run.refuse_other_config(cfg, overwrite, f"import into a new directory, or pass --overwrite to replace {run.root}")
    records = epoch_records(sources)
    final_epoch = _final_epoch(records, final)
    identity = fingerprint({"train": run.stage_config(cfg, "train"), "sources": [s.identity() for s in sources], "final": final_epoch, "dev_accuracy": dev_accuracy})

    if data_from is not None:
        _check_labels(read_task(data_from)["label_names"], sources[0].label_names, sources[0].named_labels, cfg.data.task, str(data_from.task_path))
        _import_data_from(run, data_from, cfg, overwrite)
        if not run.config_path.exists() or run.config_difference(cfg) is not None:
            run.save_config(cfg)
    else:  # the labels were checked against the checkpoints when the config was fitted to the data
        run_stages(run, cfg, ["prepare"], overwrite=overwrite)

    manifest = read_manifest(run)
    if run.check_stage(cfg, "train", overwrite) and manifest:
        if manifest.get("fingerprint") == identity:
            log.info("%s: these checkpoints are already imported", run.root)
            return manifest
        raise LingtraceError(
            f"{run.root} holds other checkpoints ({', '.join(Path(p).name for p in (manifest.get('imported') or {}).get('sources', [])) or 'trained by lingtrace'}"
            f", final epoch {manifest.get('final_epoch')})",
            f"import into a new directory, or pass --overwrite to replace them (and the stages after train) in {run.root}",
        )
    run.invalidate_after("train")
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
    tokenizers: list[str | Path] = ([Path(tokenizer) if Path(tokenizer).expanduser().is_dir() else tokenizer] if tokenizer else [])
    tokenizers += trainer_dirs + [s.path for s in sources]
    taken = []
    for r, s in zip(records, sources):
        taken.append(_materialize(s, run.checkpoint_dir(r["epoch"]), tokenizers))
        log.info("imported %s as %s", s.path, r["path"])
    notes = _dev_accuracy(run, cfg, records, dev_accuracy)
    accuracies = [r["dev_accuracy"] for r in records]
    last_state = next((s.state for s in reversed(sources) if s.state), None) or {}
    manifest = {
        "fingerprint": identity,
        "epochs": records,
        "best_epoch": records[int(np.argmax(accuracies))]["epoch"],
        "final_epoch": final_epoch,
        "stopped_early": None,
        "complete": True,
        "dev_majority_baseline": majority_baseline(read_split(run, "dev")),
        "processes": None,
        "imported": {
            "sources": [str(s.path.resolve()) for s in sources],
            "trainer_output": [str(p.resolve()) for p in trainer_dirs],
            "order": "global step (trainer_state.json)" if all(s.step is not None for s in sources) else "as given",
            "final": {"epoch": final_epoch, "source": records[final_epoch - 1]["source"], "chosen": "the last checkpoint (default)" if final is None else f"--final {final}"},
            "taken": {
                "weights": {how: sum(t["weights"] == how for t in taken) for how in sorted({t["weights"] for t in taken})},
                "per_checkpoint": [{k: t[k] for k in ("weights", "linked", "copied", "tokenizer")} for t in taken],
                "not_carried": sorted({name for t in taken for name in t["skipped"]}),
                "steps_and_learning_rates": "trainer_state.json log_history" if any(s.state for s in sources) else "unknown (no trainer_state.json)",
                "dev_accuracy": records[0]["dev_accuracy_source"],
                "data": f"data/ of {data_from.root.resolve()}" if data_from is not None else f"{cfg.data.path} through the local reader (prepare)",
            },
            "trainer_state": {k: last_state.get(k) for k in ("num_train_epochs", "max_steps", "train_batch_size", "logging_steps", "best_model_checkpoint") if k in last_state},
            "training_recipe": bool(training_recipe),
            **notes,
        },
    }
    write_manifest(run, manifest)
    if not run.config_path.exists() or run.config_difference(cfg) is not None:
        run.save_config(cfg)
    run.mark_complete(cfg, "train", {"imported": True, "final_epoch": final_epoch, "epochs": len(records), "processes": None})
    return manifest


def is_imported_without_recipe(run: RunDir) -> bool:
    """True for a run imported from checkpoints trained elsewhere without a declared training recipe."""
    manifest = read_manifest(run) or {}
    imported = manifest.get("imported")
    return bool(imported) and not imported.get("training_recipe")
