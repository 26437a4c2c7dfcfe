"""The imported checkpoints in the run's layout: every source folder becomes ``checkpoints/epoch-K/``,
its weights, configs and tokenizer files hard-linked from the source where the file system allows
(a link keeps the source's file mode, which is left alone), copied otherwise; a ``pytorch_model.bin`` is
converted to safetensors and a missing tokenizer added. A decoder's ``config.json`` is written with
lingtrace's record of its kind (``models.decoder.CONFIG_KEY``), so that ``load_checkpoint`` builds the
right model. peft LoRA adapters become lingtrace's own LoRA checkpoints (the base model with the
adapters injected, saved by ``models.checkpoints.save_checkpoint``: the frozen base weights once per run,
the adapters per epoch). The second moments of the optimizer come from each checkpoint's
``optimizer.pt`` (``moments``). The source is never modified, and Trainer bookkeeping (optimizer,
scheduler, RNG state, ``training_args.bin``: pickles) is not carried over."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lingtrace.config import Config
from lingtrace.errors import LingtraceError
from lingtrace.importing.sources import ADAPTER_CONFIG, ADAPTER_WEIGHTS, BASE_FIX, TRAINER_STATE, Source
from lingtrace.io import atomic_dir, read_json, write_json
from lingtrace.run import RunDir, read_task

log = logging.getLogger(__name__)

#: files carried into the run: configs, weights, tokenizer files (no pickles, no Trainer bookkeeping)
CARRIED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja")
NOT_CARRIED = (TRAINER_STATE,)
TOKENIZER_CONFIG = "tokenizer_config.json"


def link(src: Path, dst: Path) -> str:
    """Hard-link the file ``src`` (a symbolic link followed) to ``dst``, else copy it; returns
    ``"linked"`` or ``"copied"``. ``dst`` lies in an ``atomic_dir``, which gives a copy the run's file
    mode and leaves a link's (the source's) alone."""
    from lingtrace.models.checkpoints import link_or_copy

    return link_or_copy(src.resolve(), dst)


def tokenizer_candidates(tokenizer: str | None, trainer_dirs: list[Path], sources: list[Source]) -> list[str | Path]:
    """Where a checkpoint without a tokenizer takes one from, first first: ``tokenizer`` (a folder or a
    hub name), the Trainer output folders, the other checkpoints."""
    tokenizers: list[str | Path] = ([Path(tokenizer) if Path(tokenizer).expanduser().is_dir() else tokenizer] if tokenizer else [])
    return tokenizers + trainer_dirs + [s.path for s in sources]


def import_checkpoints(
    run: RunDir, cfg: Config, sources: list[Source], records: list[dict[str, Any]], tokenizers: list[str | Path], second_moments: bool = True
) -> list[dict[str, Any]]:
    """Replace the run's checkpoints (and what the stages after train made from them) by ``sources``,
    the K-th as epoch ``records[K]["epoch"]`` (each record gains its ``weights`` identity and where its
    ``second_moments`` came from); returns ``import_checkpoint``'s record of each."""
    from lingtrace.importing.moments import TrainedParameters, import_second_moments, skeleton
    from lingtrace.models.checkpoints import weights_identity

    run.invalidate_after("train")
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
    kind = cfg.model.kind
    label_names = [str(n) for n in read_task(run)["label_names"]]
    if sources[0].adapter is not None:
        checkpoints = adapter_checkpoints(run, cfg, sources, records, tokenizers, label_names)
    else:
        checkpoints = (import_checkpoint(s, run.checkpoint_dir(r["epoch"]), tokenizers, kind, label_names) for r, s in zip(records, sources))
    taken, trained = [], None
    for r, s, (record, model) in zip(records, sources, checkpoints):
        taken.append(record)
        directory = run.checkpoint_dir(r["epoch"])
        r["weights"] = weights_identity(directory)  # checked before influence loads them
        if not second_moments:
            r["second_moments"] = {"source": None, "reason": "imported with --no-second-moments"}
        else:
            if trained is None:
                trained = TrainedParameters.of(model if model is not None else skeleton(s.path, kind, cfg.model.freeze_embeddings))
            r["second_moments"] = import_second_moments(s.path, directory, trained)
        log.info("imported %s as %s", s.path, r["path"])
    return taken


def adapter_checkpoints(run: RunDir, cfg: Config, sources: list[Source], records: list[dict[str, Any]], tokenizers: list[str | Path], label_names: list[str]):
    """peft LoRA adapter checkpoints as lingtrace's own LoRA checkpoints: the base model is loaded once,
    made ready as lingtrace's trainer makes it (``prepare_decoder``: padding token, the adapters of the
    config's ``model.lora_*`` injected, the record in its config), then each checkpoint's adapter weights
    are loaded into it (every trained tensor, checked by name and shape) and it is saved in the run's
    layout, the frozen base weights linked to the previous epoch's. Yields (record, model) per checkpoint."""
    from safetensors.torch import load_file

    from lingtrace.importing.kinds import lingtrace_name
    from lingtrace.models.checkpoints import save_checkpoint
    from lingtrace.models.decoder import prepare_decoder

    base = Path(str(sources[0].base)).expanduser()
    tokenizer, tokenizer_from = load_tokenizer([sources[-1].path, *tokenizers, base if base.is_dir() else sources[0].base], sources[-1].path)
    model = _load_base(sources[0], cfg.model.kind, len(label_names))
    prepare_decoder(model, tokenizer, cfg.model, label_names)
    params = dict(model.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    previous = None
    for r, s in zip(records, sources):
        tensors = {lingtrace_name(k): v for k, v in load_file(str(s.path / ADAPTER_WEIGHTS)).items()}
        missing, extra = sorted(trained - set(tensors)), sorted(set(tensors) - trained)
        if missing or extra:
            raise LingtraceError(
                f"the adapters in {s.path} do not match lingtrace's LoRA layers of model.lora_* "
                f"({'missing ' + missing[0] if missing else 'no layer for ' + extra[0]}; {len(missing)} missing, {len(extra)} without a layer)",
                "merge the adapters into the model (merge_and_unload) and import the merged checkpoints",
            )
        for name, value in tensors.items():
            if tuple(value.shape) != tuple(params[name].shape):
                raise LingtraceError(f"{s.path}: adapter tensor {name} has shape {tuple(value.shape)}, lingtrace's LoRA layer {tuple(params[name].shape)}", "check adapter_config.json (r, target modules)")
        model.load_state_dict(tensors, strict=False)
        target = run.checkpoint_dir(r["epoch"])
        with atomic_dir(target) as tmp:
            save_checkpoint(model, tokenizer, tmp, previous=previous)
        previous = target
        converted = (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
        yield {"linked": [], "copied": [], "weights": "converted", "tokenizer": tokenizer_from, "skipped": sorted(f.name for f in s.path.iterdir() if f.is_file() and f.name not in converted)}, model


def _load_base(source: Source, kind: str, num_labels: int):
    """An adapter's base model, in float32 (a classifier with the adapters' head size)."""
    import torch

    from lingtrace.models.decoder import model_class
    from lingtrace.models.hf import quiet_transformers

    extra = {"num_labels": num_labels, "ignore_mismatched_sizes": True} if kind == "decoder-classifier" else {}
    try:
        with quiet_transformers():
            return model_class(kind).from_pretrained(str(source.base), dtype=torch.float32, **extra)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; all mean "cannot load"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise LingtraceError(f"cannot load the adapters' base model {source.base!r}: {type(e).__name__}: {first}", BASE_FIX) from e


def import_checkpoint(source: Source, target: Path, tokenizers: list[str | Path], kind: str = "encoder-classifier", label_names: list[str] | None = None) -> tuple[dict[str, Any], None]:
    """``checkpoints/epoch-K/`` from ``source``: weights and configs hard-linked or copied, a
    ``pytorch_model.bin`` converted to safetensors, a missing tokenizer added from ``tokenizers``, a
    decoder's config written with lingtrace's record (``decoder_config``).
    Returns what was done: files ``linked`` and ``copied``, ``weights`` (linked, copied or converted),
    where the ``tokenizer`` came from, the files ``skipped`` (and None: no model was loaded)."""
    record: dict[str, Any] = {"linked": [], "copied": [], "weights": "converted", "tokenizer": str(source.path)}
    files = sorted(f for f in source.path.iterdir() if f.is_file())
    carried = [f for f in files if f.suffix in CARRIED_SUFFIXES and f.name not in NOT_CARRIED]
    decoder = kind != "encoder-classifier"
    with atomic_dir(target) as tmp:
        if not any(f.suffix == ".safetensors" for f in carried):
            # only pytorch_model.bin: transformers reads it (weights_only), it is stored as safetensors
            from lingtrace.models.decoder import model_class

            model_class(kind).from_pretrained(str(source.path)).save_pretrained(tmp)
        for f in carried:
            if not (tmp / f.name).exists() and not (decoder and f.name == "config.json"):
                how = link(f, tmp / f.name)
                record[how].append(f.name)
                if f.suffix == ".safetensors":
                    record["weights"] = how if record["weights"] in ("converted", how) else "linked and copied"
        if not (tmp / TOKENIZER_CONFIG).exists():
            record["tokenizer"] = _tokenizer_into(tmp, tokenizers, source.path)
        if decoder:
            (tmp / "config.json").unlink(missing_ok=True)  # a converted model's: replaced by the recorded one
            write_json(tmp / "config.json", decoder_config(read_json(source.path / "config.json"), kind, label_names or source.label_names, tmp))
            record["config"] = "written with lingtrace's record of the model kind"
    record["skipped"] = sorted(f.name for f in files if f not in carried)
    return record, None


def decoder_config(config: dict[str, Any], kind: str, label_names: list[str], tokenizer_dir: Path) -> dict[str, Any]:
    """A full decoder checkpoint's config.json with lingtrace's record (kind, label names, no LoRA) and
    a padding token id (the tokenizer's padding, else end-of-sequence token) where it has none."""
    from lingtrace.models.decoder import CONFIG_KEY

    out = dict(config)
    held = out.get(CONFIG_KEY) if isinstance(out.get(CONFIG_KEY), dict) else {}  # a lingtrace checkpoint's own record
    out[CONFIG_KEY] = {"kind": kind, "label_names": [str(n) for n in label_names], "lora": held.get("lora"), "train_head": bool(held.get("train_head", False))}
    if out.get("pad_token_id") is None:
        tokenizer, _ = load_tokenizer([tokenizer_dir], tokenizer_dir)
        out["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return out


def _tokenizer_into(target: Path, candidates: list[str | Path], source: Path) -> str:
    """Save the first loadable tokenizer of ``candidates`` (folders or hub names) into ``target`` (only
    the files it lacks); returns where it came from."""
    tokenizer, where = load_tokenizer(candidates, source)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        tokenizer.save_pretrained(scratch)
        for f in Path(scratch).iterdir():
            if f.is_file() and not (target / f.name).exists():
                os.replace(f, target / f.name)
    return where


def load_tokenizer(candidates: list[str | Path | None], source: Path):
    """The first tokenizer of ``candidates`` (folders holding one, or hub names) and where it came from."""
    from transformers import AutoTokenizer

    for cand in candidates:
        if cand is None or (isinstance(cand, Path) and not (cand / TOKENIZER_CONFIG).is_file()):
            continue
        try:
            return AutoTokenizer.from_pretrained(str(cand)), str(cand)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds; all mean "cannot load"
            raise LingtraceError(f"cannot load the tokenizer {cand}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "pass --tokenizer with the folder or hub name of the model's tokenizer") from e
    raise LingtraceError(
        f"{source} has no tokenizer ({TOKENIZER_CONFIG}), and no other checkpoint or Trainer folder has one",
        "pass --tokenizer with the folder or hub name of the tokenizer the model was trained with",
    )
