"""Test selection: K examples per language drawn (seeded) from those the final model predicts correctly."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.evaluation import accuracy_by_lang, predict
from lingtrace.models.loading import load_checkpoint
from lingtrace.run import (
    PREDICTIONS,
    RunDir,
    final_checkpoint,
    majority_class_warning,
    read_manifest,
    read_split,
    write_predictions,
    write_selection,
)
from lingtrace.utils import resolve_device

log = logging.getLogger(__name__)

__all__ = ["PREDICTIONS", "draw", "select"]


def draw(pool: pd.DataFrame, probs: np.ndarray, per_lang: int, seed: int) -> pd.DataFrame:
    """Pure selection rule: per language, ``per_lang`` correctly predicted rows drawn with ``seed``."""
    pool = pool.reset_index(drop=True).copy()
    pool[schema.PRED] = probs.argmax(1)
    pool[schema.CONFIDENCE] = probs.max(1).astype(np.float32)
    correct = pool[pool[schema.PRED] == pool[schema.LABEL]]
    parts = []
    for i, lang in enumerate(sorted(pool[schema.LANG].unique())):
        cand = correct[correct[schema.LANG] == lang]
        if len(cand) < per_lang:
            log.warning("%s: only %d correctly predicted test examples, fewer than select.per_lang=%d", lang, len(cand), per_lang)
        rng = np.random.default_rng([seed, i])
        take = rng.choice(len(cand), size=min(per_lang, len(cand)), replace=False)
        parts.append(cand.iloc[np.sort(take)])
    out = pd.concat(parts, ignore_index=True) if parts else correct.iloc[:0]
    if len(out) == 0:
        raise LingtraceError("the final model predicts no test example correctly", "check training (dev accuracy in checkpoints/manifest.json)")
    return out


def select(run: RunDir, cfg: Config) -> tuple[pd.DataFrame, dict]:
    """Predict the test pool with the final model, write ``selection/``; returns the selected rows and
    the stage's record (test accuracy, and the warning when the model is no better than the majority class)."""
    epoch = final_checkpoint(run)
    warning = majority_class_warning(read_manifest(run))
    if warning:
        log.warning(warning)
    test = read_split(run, "test")
    device = resolve_device(cfg.train.device)
    model, tokenizer = load_checkpoint(run.checkpoint_dir(epoch))
    model.to(device)
    probs = predict(model, tokenizer, test, cfg, device, desc="test")
    acc, per_lang = accuracy_by_lang(test, probs)
    log.info("test accuracy of epoch %d: %.4f (%s)", epoch, acc, ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_lang.items())))
    preds = test.reset_index(drop=True).copy()
    preds[schema.PRED] = probs.argmax(1)
    preds[schema.CONFIDENCE] = probs.max(1).astype(np.float32)
    write_predictions(run, preds)
    chosen = draw(test, probs, cfg.select.per_lang, cfg.select.seed)
    write_selection(run, chosen)
    info = {
        "selected": chosen.groupby(schema.LANG).size().to_dict(),
        "final_epoch": epoch,
        "test_accuracy": acc,
        "test_accuracy_per_lang": per_lang,
        "model_warning": warning,
    }
    return chosen, info
