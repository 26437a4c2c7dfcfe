"""Predictions of a model on examples: the task's class scores, probabilities and accuracies.

Used by training (dev accuracy after each epoch), ``select`` (the test pool), ``evaluate`` and the
experiments (a sub-run's final model on the base run's test examples) and ``import``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd
import torch

from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.models.loading import label_names_of
from lingtrace.objectives import Objective, objective_for
from lingtrace.objectives.base import correct_class_margin as objective_margin
from lingtrace.run import RunDir, final_checkpoint
from lingtrace.utils import progress

#: probability the model gives the gold label (added to the prediction tables)
P_LABEL = "p_label"
#: the correct-class margin: gold logit minus the logsumexp of the other logits (added to the prediction tables)
MARGIN = "margin"
#: the final model's logits, one list per example (added to the prediction tables)
LOGITS = "logits"


def autocast_context(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def batches(frame: pd.DataFrame, batch_size: int, order: np.ndarray | None = None):
    idx = np.arange(len(frame)) if order is None else order
    for start in range(0, len(idx), batch_size):
        yield frame.iloc[idx[start : start + batch_size]]


def model_objective(cfg: Config, model) -> Objective:
    """The objective (loss, inputs, prediction) of ``cfg.model.kind`` for a loaded model."""
    return objective_for(cfg, label_names_of(model))


@torch.no_grad()
def class_scores(model, tokenizer, frame: pd.DataFrame, cfg: Config, device: torch.device, desc: str = "predict") -> np.ndarray:
    """The objective's class scores [n, num_labels] in float32 (a classifier's logits; a causal LM's total
    log-likelihoods of the labels' verbalisations), batched by ``train.eval_batch_size``."""
    model.eval()
    objective = model_objective(cfg, model)
    out = []
    with torch.no_grad():
        for rows in progress(batches(frame, cfg.train.eval_batch_size), total=math.ceil(len(frame) / cfg.train.eval_batch_size), desc=desc, leave=False):
            with autocast_context(device, cfg.train.mixed_precision):
                scores = objective.class_scores(model, tokenizer, rows, cfg.model.max_length, cfg.model.text_prefix)
            out.append(scores.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(label_names_of(model))), dtype=np.float32)


def predict(model, tokenizer, frame: pd.DataFrame, cfg: Config, device: torch.device, desc: str = "predict") -> np.ndarray:
    """Class probabilities [n, num_labels] in float32: the softmax of the objective's class scores."""
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


def correct_class_margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per example: the gold label's logit minus the logsumexp of the other logits, in float64
    (``lingtrace.objectives.correct_class_margin`` on arrays)."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    return objective_margin(z, torch.from_numpy(np.asarray(labels, dtype=np.int64))).numpy()


def final_logits(run: RunDir, cfg: Config, frame: pd.DataFrame) -> np.ndarray:
    """The run's final model's class scores on ``frame`` [n, num_labels] (float32): a classifier's logits, a
    causal LM's total log-likelihoods of the verbalisations; batched like training's predictions."""
    from lingtrace.models.loading import load_checkpoint
    from lingtrace.utils import resolve_device

    device = resolve_device(cfg.train.device)
    model, tokenizer = load_checkpoint(run.checkpoint_dir(final_checkpoint(run)))
    model.to(device)
    return class_scores(model, tokenizer, frame.reset_index(drop=True), cfg, device, desc="evaluate")


def predict_frame(run: RunDir, cfg: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the run's final model's ``pred``, ``confidence``, ``p_label`` (probability of the gold
    label), ``margin`` (``correct_class_margin``) and ``logits``."""
    from scipy.special import softmax

    logits = final_logits(run, cfg, frame)
    probs = softmax(logits.astype(np.float64), axis=1)
    out = frame.reset_index(drop=True).copy()
    labels = out[schema.LABEL].to_numpy(dtype=np.int64)
    out[schema.PRED] = probs.argmax(1).astype(np.int64)
    out[schema.CONFIDENCE] = probs.max(1)
    out[P_LABEL] = probs[np.arange(len(out)), labels]
    out[MARGIN] = correct_class_margin(logits, labels)
    out[LOGITS] = list(logits)
    return out
