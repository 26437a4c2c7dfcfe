"""``lingtrace import``: a run directory from checkpoints trained elsewhere.

Inputs: Hugging Face checkpoint folders (``save_pretrained`` output, given in training order) or a
``transformers.Trainer`` output folder (its ``checkpoint-*/`` subfolders, ordered by the global step
in their ``trainer_state.json``, not by name), and the data the model was trained on: local files read
by the ``local`` reader with the usual column mapping (``data.columns``), or the ``data/`` of an
existing run. A checkpoint is an encoder or decoder classifier or a causal LM (``model.kind``, from its
config's architectures) trained in full, or a peft LoRA adapter of a base model (converted into
lingtrace's own LoRA checkpoint layout). AdamW's second moments come from each checkpoint's
``optimizer.pt``, read with ``weights_only`` (``moments``), for ``adam-cosine``.

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

The steps, one module each: ``sources`` (the checkpoint folders and their order), ``kinds`` (the
model kind, a LoRA adapter's settings), ``config`` (the imported run's config), ``checkpoints`` (the
checkpoints in the run's layout), ``moments`` (the optimizer's second moments), ``manifest`` (learning
rates, losses, dev accuracy, the ``imported`` record); ``import_run`` runs them, and marks the
``prepare`` and ``train`` stages complete. ``start_run`` and ``finish_run`` are the first and last steps
for checkpoints written as a model trains (``lingtrace.integrations.LingtraceCallback``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lingtrace.config import Config
from lingtrace.errors import LingtraceError
from lingtrace.importing.checkpoints import import_checkpoints, link, tokenizer_candidates
from lingtrace.importing.config import check_labels, import_config
from lingtrace.importing.manifest import (
    DEV_ACCURACY,
    epoch_records,
    fill_dev_accuracy,
    final_epoch_of,
    imported_manifest,
    is_imported_without_recipe,
)
from lingtrace.importing.sources import Source, find_checkpoints
from lingtrace.io import atomic_dir
from lingtrace.run import RUN_ENTRIES, RunDir, fingerprint, read_manifest, read_task, write_manifest

__all__ = [
    "DEV_ACCURACY",
    "Source",
    "epoch_records",
    "find_checkpoints",
    "import_config",
    "finish_run",
    "import_run",
    "is_imported_without_recipe",
    "start_run",
]

log = logging.getLogger(__name__)


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
    second_moments: bool = True,
) -> dict[str, Any]:
    """Build (or finish) the run directory ``run`` from ``sources``; returns the manifest.

    ``second_moments``: write AdamW's second moments from each checkpoint's ``optimizer.pt`` (read with
    ``weights_only``; see ``moments``), for ``adam-cosine``. Rerunning with the same inputs does nothing
    more; a directory holding another run (or anything but a run) is refused unless ``overwrite``.
    """
    if dev_accuracy not in DEV_ACCURACY:
        raise LingtraceError(f"--dev-accuracy must be {' or '.join(DEV_ACCURACY)}, got {dev_accuracy!r}")
    _refuse_foreign(run)
    run.refuse_other_config(cfg, overwrite, f"import into a new directory, or pass --overwrite to replace {run.root}")
    records = epoch_records(sources)
    final_epoch = final_epoch_of(records, final)
    identity = fingerprint(
        {"train": run.stage_config(cfg, "train"), "sources": [s.identity() for s in sources], "final": final_epoch, "dev_accuracy": dev_accuracy, "second_moments": second_moments}
    )
    _import_data(run, cfg, sources, data_from, overwrite)
    done = _already_imported(run, cfg, identity, overwrite)
    if done is not None:
        return done
    taken = import_checkpoints(run, cfg, sources, records, tokenizer_candidates(tokenizer, trainer_dirs, sources), second_moments)
    return finish_run(
        run, cfg, dev_accuracy, identity=identity, sources=sources, trainer_dirs=trainer_dirs, records=records, final=final,
        final_epoch=final_epoch, taken=taken, data_from=data_from, training_recipe=training_recipe,
    )


def finish_run(run: RunDir, cfg: Config, dev_accuracy: str, **manifest_args: Any) -> dict[str, Any]:
    """The last step of an import (and of ``LingtraceCallback``'s run): the dev accuracy of every
    checkpoint (``dev_accuracy``), the manifest (``imported_manifest`` of ``manifest_args``), the config,
    and the ``train`` stage marked complete. Returns the manifest."""
    records = manifest_args["records"]
    notes = fill_dev_accuracy(run, cfg, records, dev_accuracy)
    manifest = imported_manifest(run, cfg, notes=notes, **manifest_args)
    write_manifest(run, manifest)
    _save_config(run, cfg)
    run.mark_complete(cfg, "train", {"imported": True, "final_epoch": manifest["final_epoch"], "epochs": len(records), "processes": None})
    return manifest


def start_run(run: RunDir, cfg: Config, sources: list[Source], overwrite: bool, write_data: Callable[[], None]) -> None:
    """A run directory for checkpoints still to be written (``LingtraceCallback``): a directory holding
    anything but a run, a run of another config or a finished run is refused unless ``overwrite``; then
    the old outputs (checkpoints and what was made from them) are removed, ``write_data()`` puts the data
    files in place, and the data (``cfg.data``: local files) is prepared and the config saved."""
    _refuse_foreign(run)
    fix = "write the run into a new directory, or pass overwrite=True to replace it"
    run.refuse_other_config(cfg, overwrite, fix)
    if run.is_complete("train") and not overwrite:
        raise LingtraceError(f"{run.root} holds a finished run ({run.describe()})", fix)
    run.invalidate_after("prepare")
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
    write_data()
    _import_data(run, cfg, sources, None, overwrite=True)  # the data given now, even where a run of this config was begun
    _save_config(run, cfg)


def _refuse_foreign(run: RunDir) -> None:
    """Refuse a target directory holding anything a run directory does not hold."""
    foreign = sorted(p.name for p in run.root.iterdir() if p.name not in RUN_ENTRIES) if run.root.is_dir() else []
    if foreign:
        raise LingtraceError(f"{run.root} holds other files ({', '.join(foreign[:3])}), not a lingtrace run", "import into a new or empty directory")


def _save_config(run: RunDir, cfg: Config) -> None:
    if not run.config_path.exists() or run.config_difference(cfg) is not None:
        run.save_config(cfg)


def _import_data(run: RunDir, cfg: Config, sources: list[Source], data_from: RunDir | None, overwrite: bool) -> None:
    """The run's ``data/``: prepared from the local files of the config, or taken from ``data_from``."""
    if data_from is None:  # the labels were checked against the checkpoints when the config was fitted to the data
        from lingtrace.pipeline import run_stages

        run_stages(run, cfg, ["prepare"], overwrite=overwrite)
        return
    if cfg.model.kind != "causal-lm":  # a causal LM's classes are the answers in the data
        check_labels(read_task(data_from)["label_names"], sources[0].label_names, sources[0].named_labels, cfg.data.task, str(data_from.task_path))
    _data_from(run, data_from, cfg, overwrite)
    _save_config(run, cfg)


def _data_from(run: RunDir, other: RunDir, cfg: Config, overwrite: bool) -> None:
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
                link(f, tmp / f.name)
    run.mark_complete(cfg, "prepare", {"copied_from": str(other.root.resolve())})


def _already_imported(run: RunDir, cfg: Config, identity: str, overwrite: bool) -> dict[str, Any] | None:
    """The manifest when ``run`` holds these checkpoints already; None when they are to be imported (no
    train stage, or ``overwrite``); refuses other checkpoints."""
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
    return None
