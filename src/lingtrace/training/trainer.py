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

import contextlib
import logging
import math
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import get_linear_schedule_with_warmup

from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.distributed import SINGLE, Dist
from lingtrace.errors import LingtraceError
from lingtrace.influence.decoder_task import task_for
from lingtrace.influence.task import Task
from lingtrace.io import atomic_dir, read_json, write_json
from lingtrace.models.loading import label_names_of, load_checkpoint, load_model_and_tokenizer
from lingtrace.run import RunDir, fingerprint
from lingtrace.training.checkpoints import PRUNED, save_checkpoint, save_second_moments
from lingtrace.training.state import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    load_trainer_state,
    rng_state,
    save_trainer_state,
)
from lingtrace.utils import progress, resolve_device, seed_everything

log = logging.getLogger(__name__)

TRAINER_STATE = STATE_FILE


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


def read_task(run: RunDir) -> dict[str, Any]:
    return read_json(run.task_path)


def read_split(run: RunDir, split: str) -> pd.DataFrame:
    path = run.split_path(split)
    if not path.exists():
        raise LingtraceError(f"missing {path}", "run `lingtrace prepare RUN` first")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise LingtraceError(f"cannot read {path}: {e}", "rerun `lingtrace prepare RUN --overwrite`") from e


def read_manifest(run: RunDir) -> dict[str, Any] | None:
    return read_json(run.manifest_path) if run.manifest_path.exists() else None


def autocast_context(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def batches(frame: pd.DataFrame, batch_size: int, order: np.ndarray | None = None):
    idx = np.arange(len(frame)) if order is None else order
    for start in range(0, len(idx), batch_size):
        yield frame.iloc[idx[start : start + batch_size]]


def model_task(cfg: Config, model) -> Task:
    """The task (loss, inputs, prediction) of ``cfg.model.kind`` for a loaded model."""
    return task_for(cfg, label_names_of(model))


@torch.no_grad()
def class_scores(model, tokenizer, frame: pd.DataFrame, cfg: Config, device: torch.device, desc: str = "predict") -> np.ndarray:
    """The task's class scores [n, num_labels] in float32 (a classifier's logits; a causal LM's total
    log-likelihoods of the labels' verbalisations), batched by ``train.eval_batch_size``."""
    model.eval()
    task = model_task(cfg, model)
    out = []
    with torch.no_grad():
        for rows in progress(batches(frame, cfg.train.eval_batch_size), total=math.ceil(len(frame) / cfg.train.eval_batch_size), desc=desc, leave=False):
            with autocast_context(device, cfg.train.mixed_precision):
                scores = task.class_scores(model, tokenizer, rows, cfg.model.max_length, cfg.model.text_prefix)
            out.append(scores.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(label_names_of(model))), dtype=np.float32)


def predict(model, tokenizer, frame: pd.DataFrame, cfg: Config, device: torch.device, desc: str = "predict") -> np.ndarray:
    """Class probabilities [n, num_labels] in float32: the softmax of the task's class scores."""
    return torch.softmax(torch.from_numpy(class_scores(model, tokenizer, frame, cfg, device, desc)), dim=-1).numpy()


def accuracy_by_lang(frame: pd.DataFrame, probs: np.ndarray) -> tuple[float, dict[str, float]]:
    correct = probs.argmax(1) == frame[schema.LABEL].to_numpy()
    per = {str(lang): float(correct[(frame[schema.LANG] == lang).to_numpy()].mean()) for lang in frame[schema.LANG].unique()}
    return float(correct.mean()) if len(correct) else float("nan"), per


def majority_baseline(frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy of always predicting the most frequent label, per language and overall (``all``)."""
    out = {str(lang): float(g[schema.LABEL].value_counts(normalize=True).max()) for lang, g in frame.groupby(schema.LANG)}
    out["all"] = float(frame[schema.LABEL].value_counts(normalize=True).max()) if len(frame) else float("nan")
    return out


def train(run: RunDir, cfg: Config, overwrite: bool = False, dist: Dist = SINGLE) -> dict[str, Any]:
    """Fine-tune, resuming from the last complete epoch when a previous run was interrupted.

    Under torchrun (``dist``) this is data-parallel (DDP): every rank takes an equal slice of each
    global batch of ``train.batch_size`` examples (the same order as one process), the loss is scaled
    so that DDP's gradient average equals the global batch's mean gradient, and rank 0 alone writes
    checkpoints, trainer state and manifest.
    """
    task = read_task(run)
    train_df = read_split(run, "train")
    dev_df = read_split(run, "dev")
    if len(train_df) == 0:
        raise LingtraceError("the training set is empty", "check data.languages and data.exclude_lang")
    device = resolve_device(dist.device(cfg.train.device))
    tcfg = cfg.train
    fp = fingerprint(run.stage_config(cfg, "train"))
    if dist.enabled and tcfg.batch_size < dist.world:
        raise LingtraceError(f"train.batch_size={tcfg.batch_size} is smaller than the {dist.world} processes", "raise train.batch_size")

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
    if manifest is not None and manifest.get("complete"):
        return manifest
    if manifest is None:
        if dist.is_main:
            for old in run.checkpoints_dir.glob("epoch-*"):
                shutil.rmtree(old, ignore_errors=True)
            for name in (TRAINER_STATE, LEGACY_STATE_FILE):
                (run.checkpoints_dir / name).unlink(missing_ok=True)
        dist.barrier()
        manifest = {
            "fingerprint": fp,
            "epochs": [],
            "best_epoch": None,
            "final_epoch": None,
            "complete": False,
            "dev_majority_baseline": majority_baseline(dev_df),
        }

    seed_everything(tcfg.seed)
    label_names = task["label_names"]
    done = manifest["epochs"]
    if done:
        last = done[-1]["epoch"]
        model, tokenizer = load_checkpoint(run.checkpoint_dir(last))
        log.info("resuming training after epoch %d", last)
    else:
        model, tokenizer = load_model_and_tokenizer(cfg.model, num_labels=len(label_names), label_names=label_names)
    if cfg.model.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device)
    task = model_task(cfg, model)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr
    )
    steps_per_epoch = math.ceil(len(train_df) / tcfg.batch_size)
    total = steps_per_epoch * tcfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tcfg.warmup_ratio * total), total)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and tcfg.mixed_precision and not torch.cuda.is_bf16_supported() else None

    state_path = run.checkpoints_dir / TRAINER_STATE
    if done:
        state = load_trainer_state(state_path, optimizer=optimizer, scheduler=scheduler, model=model, rank=dist.rank, world=dist.world)
        if state["epoch"] != done[-1]["epoch"]:
            raise LingtraceError("cannot resume: trainer state does not match the last checkpoint", "pass --overwrite to retrain")
        best, bad = state["best"], state["bad_epochs"]
    else:
        best, bad = -1.0, 0

    start_epoch = len(done) + 1
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    for epoch in range(start_epoch, tcfg.epochs + 1):
        if bad >= tcfg.patience:
            break
        model.train()
        order = np.random.default_rng(tcfg.seed * 1000 + epoch).permutation(len(train_df))
        losses, lrs, recent = [], [], []
        bar = progress(batches(train_df, tcfg.batch_size, order), total=steps_per_epoch, desc=f"epoch {epoch}/{tcfg.epochs}")
        for rows in bar:
            global_n = len(rows)
            local = rows.iloc[dist.rank :: dist.world] if dist.enabled else rows
            empty = len(local) == 0
            if empty:  # a last batch smaller than the number of processes: take part with zero loss
                local = rows.iloc[:1]
            batch = task.encode_rows(tokenizer, local, cfg.model.max_length, cfg.model.text_prefix).to(device)
            lrs.append(scheduler.get_last_lr()[0])
            with autocast_context(device, tcfg.mixed_precision):
                per_example = task.batch_losses(net, batch).float()
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
        losses = batch_losses.cpu().tolist()
        probs = predict(model, tokenizer, dev_df, cfg, device, desc="dev")
        acc, per_lang = accuracy_by_lang(dev_df, probs)
        rec = EpochRecord(
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
        if acc > best:
            best, bad = acc, 0
            manifest["best_epoch"] = epoch
        else:
            bad += 1
        # checkpoint first, then the trainer state, then the manifest: a crash in between is redone
        rng_ranks = dist.gather(rng_state()) if dist.enabled else None
        if dist.is_main:
            previous = run.checkpoint_dir(epoch - 1)
            with atomic_dir(run.checkpoint_dir(epoch)) as tmp:
                save_checkpoint(model, tokenizer, tmp, previous=previous if previous.is_dir() else None)
                save_second_moments(optimizer, model, tmp)
            save_trainer_state(
                state_path,
                epoch=epoch,
                best=best,
                bad_epochs=bad,
                optimizer=optimizer,
                scheduler=scheduler,
                model=model,
                rng=rng_state(),
                rng_ranks=rng_ranks,
            )
        manifest["epochs"].append(rec.__dict__)
        manifest["final_epoch"] = manifest["best_epoch"]
        if dist.is_main:
            write_json(run.manifest_path, manifest)
        dist.barrier()
        log.info(
            "epoch %d: train loss %.4f, dev accuracy %.4f (%s)",
            epoch,
            rec.train_loss,
            acc,
            ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_lang.items())),
        )
    manifest["stopped_early"] = len(manifest["epochs"]) < tcfg.epochs
    manifest["complete"] = True
    manifest["processes"] = dist.world
    if dist.is_main:
        write_json(run.manifest_path, manifest)
        state_path.unlink(missing_ok=True)  # only resuming reads it
    dist.barrier()
    return manifest


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name or ".ln" in name
