"""Fine-tuning with a checkpoint after every epoch.

AdamW with linear warm-up and decay, early stopping on dev accuracy with patience, and a checkpoint
in ``RUN/checkpoints/epoch-K/`` after each epoch (``checkpoints.py``: loadable with ``from_pretrained``,
frozen weights stored once per run, AdamW's second moments beside the weights). The manifest
``RUN/checkpoints/manifest.json`` lists each epoch's path, learning rates, train loss and dev accuracy.

Interrupting training (Ctrl-C, a crash) keeps every completed epoch; rerunning continues from the
last complete epoch with the saved optimiser, scheduler and random-number state
(``RUN/checkpoints/trainer_state.safetensors``, ``state.py``: no pickle), so the result equals an
uninterrupted run. The trainer state is removed once training is complete.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from lingtrace.config import Config
from lingtrace.distributed import SINGLE, Dist
from lingtrace.errors import LingtraceError
from lingtrace.evaluation import (
    accuracy_by_lang,
    autocast_context,
    batches,
    majority_baseline,
    model_objective,
    predict,
)
from lingtrace.io import atomic_dir
from lingtrace.models.checkpoints import save_checkpoint, save_second_moments, weights_identity
from lingtrace.models.loading import freeze_word_embeddings, load_checkpoint, load_model_and_tokenizer
from lingtrace.run import (
    LEGACY_TRAINER_STATE_FILE,
    PRUNED,
    TRAINER_STATE_FILE,
    RunDir,
    fingerprint,
    read_manifest,
    read_split,
    read_task,
    write_manifest,
)
from lingtrace.training.state import load_trainer_state, rng_state, save_trainer_state
from lingtrace.utils import progress, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int
    path: str
    lr_start: float
    lr_end: float
    lr_mean: float
    train_loss: float
    dev_accuracy: float
    dev_accuracy_per_lang: dict[str, float]
    steps: int


@dataclass
class Progress:
    """Where training stands: the best dev accuracy so far and the epochs since it improved."""

    best: float = -1.0
    bad_epochs: int = 0


def train(run: RunDir, cfg: Config, overwrite: bool = False, dist: Dist = SINGLE) -> dict[str, Any]:
    """Fine-tune, resuming from the last complete epoch when a previous run was interrupted.

    Under torchrun (``dist``) this is data-parallel (DDP): every rank takes an equal slice of each
    global batch of ``train.batch_size`` examples (the same order as one process), the loss is scaled
    so that DDP's gradient average equals the global batch's mean gradient, and rank 0 alone writes
    checkpoints, trainer state and manifest. A complete training returns before any model is built.
    """
    task = read_task(run)
    train_df = read_split(run, "train")
    dev_df = read_split(run, "dev")
    if len(train_df) == 0:
        raise LingtraceError("the training set is empty", "check data.languages and data.exclude_lang")
    device = resolve_device(dist.device(cfg.train.device))
    if dist.enabled and cfg.train.batch_size < dist.world:
        raise LingtraceError(f"train.batch_size={cfg.train.batch_size} is smaller than the {dist.world} processes", "raise train.batch_size")
    manifest = reconcile_manifest(run, cfg, overwrite, dist, dev_df)
    if manifest.get("complete"):
        return manifest

    seed_everything(cfg.train.seed)
    model, tokenizer = load_for_training(run, cfg, task["label_names"], manifest["epochs"])
    model.to(device)
    optimizer, scheduler, scaler = build_optimiser(model, cfg, len(train_df), device)
    state_path = run.checkpoints_dir / TRAINER_STATE_FILE
    where = resume(state_path, manifest["epochs"], optimizer, scheduler, model, dist)
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    for epoch in range(len(manifest["epochs"]) + 1, cfg.train.epochs + 1):
        if where.bad_epochs >= cfg.train.patience:
            break
        losses, lrs = train_epoch(net, model, tokenizer, train_df, cfg, epoch, optimizer, scheduler, scaler, device, dist)
        rec = evaluate_epoch(model, tokenizer, dev_df, cfg, device, epoch, losses, lrs)
        if rec.dev_accuracy > where.best:
            where.best, where.bad_epochs = rec.dev_accuracy, 0
            manifest["best_epoch"] = epoch
        else:
            where.bad_epochs += 1
        checkpoint_epoch(run, model, tokenizer, optimizer, scheduler, state_path, epoch, where, dist)
        record = dict(rec.__dict__)
        if dist.is_main:  # what identifies the weights just written (checked before influence loads them)
            record["weights"] = weights_identity(run.checkpoint_dir(epoch))
        manifest["epochs"].append(record)
        manifest["final_epoch"] = manifest["best_epoch"]
        if dist.is_main:
            write_manifest(run, manifest)
        dist.barrier()
        log.info(
            "epoch %d: train loss %.4f, dev accuracy %.4f (%s)",
            epoch,
            rec.train_loss,
            rec.dev_accuracy,
            ", ".join(f"{k} {v:.3f}" for k, v in sorted(rec.dev_accuracy_per_lang.items())),
        )
    manifest["stopped_early"] = len(manifest["epochs"]) < cfg.train.epochs
    manifest["complete"] = True
    manifest["processes"] = dist.world
    if dist.is_main:
        write_manifest(run, manifest)
        state_path.unlink(missing_ok=True)  # only resuming reads it
    dist.barrier()
    return manifest


def reconcile_manifest(run: RunDir, cfg: Config, overwrite: bool, dist: Dist, dev_df) -> dict[str, Any]:
    """The manifest to continue: the saved one when it was made with this config (complete, or to resume),
    else a new one (the old checkpoints and trainer state removed). Checkpoints from another config are
    refused unless ``overwrite``; pruned ones are retrained."""
    fp = fingerprint(run.stage_config(cfg, "train"))
    manifest = read_manifest(run)
    if manifest is not None and manifest.get(PRUNED) and manifest.get("fingerprint") == fp:
        log.info("the checkpoints of %s were pruned (%s): retraining", run.root, manifest[PRUNED].get("by"))
        manifest = None
    if manifest is not None and (overwrite or manifest.get("fingerprint") != fp):
        if not overwrite:
            raise LingtraceError(
                f"{run.checkpoints_dir} holds checkpoints from a different config",
                "use a new run directory, or pass --overwrite to retrain",
            )
        manifest = None
    if manifest is not None:
        return manifest
    if dist.is_main:
        for old in run.checkpoints_dir.glob("epoch-*"):
            shutil.rmtree(old, ignore_errors=True)
        for name in (TRAINER_STATE_FILE, LEGACY_TRAINER_STATE_FILE):
            (run.checkpoints_dir / name).unlink(missing_ok=True)
    dist.barrier()
    return {
        "fingerprint": fp,
        "epochs": [],
        "best_epoch": None,
        "final_epoch": None,
        "complete": False,
        "dev_majority_baseline": majority_baseline(dev_df),
    }


def load_for_training(run: RunDir, cfg: Config, label_names: list[str], done: list[dict[str, Any]]):
    """The model and tokenizer to train: the last complete epoch's checkpoint when resuming, else the
    configured pretrained model; word embeddings frozen when ``model.freeze_embeddings``."""
    if done:
        last = done[-1]["epoch"]
        model, tokenizer = load_checkpoint(run.checkpoint_dir(last))
        log.info("resuming training after epoch %d", last)
    else:
        model, tokenizer = load_model_and_tokenizer(cfg.model, num_labels=len(label_names), label_names=label_names)
    if cfg.model.freeze_embeddings:
        freeze_word_embeddings(model)
    return model, tokenizer


def build_optimiser(model, cfg: Config, n_train: int, device: torch.device):
    """AdamW (no weight decay on biases and norms), the linear warm-up/decay schedule over every epoch's
    steps, and the fp16 gradient scaler (CUDA without bf16 only, else None)."""
    tcfg = cfg.train
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr
    )
    total = math.ceil(n_train / tcfg.batch_size) * tcfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tcfg.warmup_ratio * total), total)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and tcfg.mixed_precision and not torch.cuda.is_bf16_supported() else None
    return optimizer, scheduler, scaler


def resume(state_path, done: list[dict[str, Any]], optimizer, scheduler, model, dist: Dist) -> Progress:
    """Restore the optimiser, scheduler and random-number state saved after the last complete epoch
    (nothing to restore before the first)."""
    if not done:
        return Progress()
    state = load_trainer_state(state_path, optimizer=optimizer, scheduler=scheduler, model=model, rank=dist.rank, world=dist.world)
    if state["epoch"] != done[-1]["epoch"]:
        raise LingtraceError("cannot resume: trainer state does not match the last checkpoint", "pass --overwrite to retrain")
    return Progress(best=state["best"], bad_epochs=state["bad_epochs"])


def train_epoch(net, model, tokenizer, train_df, cfg: Config, epoch: int, optimizer, scheduler, scaler, device: torch.device, dist: Dist):
    """One pass over the training data in this epoch's seeded order; returns each step's global mean loss
    (all ranks) and learning rate."""
    tcfg = cfg.train
    objective = model_objective(cfg, model)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    order = np.random.default_rng(tcfg.seed * 1000 + epoch).permutation(len(train_df))
    losses, lrs, recent = [], [], []
    bar = progress(batches(train_df, tcfg.batch_size, order), total=math.ceil(len(train_df) / tcfg.batch_size), desc=f"epoch {epoch}/{tcfg.epochs}")
    for rows in bar:
        global_n = len(rows)
        local = rows.iloc[dist.rank :: dist.world] if dist.enabled else rows
        empty = len(local) == 0
        if empty:  # a last batch smaller than the number of processes: take part with zero loss
            local = rows.iloc[:1]
        batch = objective.encode_rows(tokenizer, local, cfg.model.max_length, cfg.model.text_prefix).to(device)
        lrs.append(scheduler.get_last_lr()[0])
        with autocast_context(device, tcfg.mixed_precision):
            per_example = objective.batch_losses(net, batch).float()
        if empty:
            per_example = per_example * 0
        # DDP averages gradients over ranks: scale so the average is the global batch mean
        loss = per_example.sum() * (dist.world / global_n)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if tcfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        losses.append(per_example.detach().sum() / global_n)
        if not dist.enabled:
            recent = (recent + [losses[-1].item()])[-20:]
            bar.set_postfix(loss=f"{np.mean(recent):.3f}")
    bar.close()
    batch_losses = torch.stack(losses).double()
    if dist.enabled:  # per-batch global mean loss = sum over ranks of local sums / batch size
        batch_losses = batch_losses.to(device)
        torch.distributed.all_reduce(batch_losses)
    return batch_losses.cpu().tolist(), lrs


def evaluate_epoch(model, tokenizer, dev_df, cfg: Config, device: torch.device, epoch: int, losses: list[float], lrs: list[float]) -> EpochRecord:
    """The epoch's manifest record: its learning rates, mean train loss and dev accuracy."""
    probs = predict(model, tokenizer, dev_df, cfg, device, desc="dev")
    acc, per_lang = accuracy_by_lang(dev_df, probs)
    return EpochRecord(
        epoch=epoch,
        path=f"epoch-{epoch}",
        lr_start=float(lrs[0]),
        lr_end=float(lrs[-1]),
        lr_mean=float(np.mean(lrs)),
        train_loss=float(np.mean(losses)),
        dev_accuracy=acc,
        dev_accuracy_per_lang=per_lang,
        steps=len(losses),
    )


def checkpoint_epoch(run: RunDir, model, tokenizer, optimizer, scheduler, state_path, epoch: int, where: Progress, dist: Dist) -> None:
    """Save the epoch's checkpoint (with AdamW's second moments), then the trainer state to resume from;
    a crash in between is redone. Rank 0 writes; every rank's random-number state is kept."""
    rng_ranks = dist.gather(rng_state()) if dist.enabled else None
    if not dist.is_main:
        return
    previous = run.checkpoint_dir(epoch - 1)
    with atomic_dir(run.checkpoint_dir(epoch)) as tmp:
        save_checkpoint(model, tokenizer, tmp, previous=previous if previous.is_dir() else None)
        save_second_moments(optimizer, model, tmp)
    save_trainer_state(
        state_path,
        epoch=epoch,
        best=where.best,
        bad_epochs=where.bad_epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        model=model,
        rng=rng_state(),
        rng_ranks=rng_ranks,
    )


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name or ".ln" in name
