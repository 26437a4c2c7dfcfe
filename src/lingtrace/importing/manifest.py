"""The manifest of an imported run: per checkpoint the learning rates and train loss logged in the
Trainer's ``log_history``, the dev accuracy (evaluated, or the logged ``eval_accuracy``), and an
``imported`` record of where everything came from."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from lingtrace.config import Config
from lingtrace.errors import LingtraceError
from lingtrace.importing.sources import Source
from lingtrace.run import RunDir, checkpoint_name, read_manifest, read_split

log = logging.getLogger(__name__)

#: where the dev accuracy comes from: evaluating the checkpoints, or the Trainer's logged eval_accuracy
DEV_ACCURACY = ("evaluate", "trainer-state")


def _log_history(sources: list[Source]) -> list[dict[str, Any]]:
    """Every ``log_history`` entry of the checkpoints' trainer states, once, by step."""
    seen: dict[str, dict[str, Any]] = {}
    for s in sources:
        for entry in (s.state or {}).get("log_history", []):
            if isinstance(entry, dict) and "step" in entry:
                seen.setdefault(json.dumps(entry, sort_keys=True), entry)
    return sorted(seen.values(), key=lambda e: e["step"])


#: where the numbers of ``epoch_records`` come from: the checkpoints' trainer_state.json
LOG_HISTORY = "trainer_state.json log_history"


def epoch_records(sources: list[Source], history: str = LOG_HISTORY, step_lrs: list[list[float]] | None = None) -> list[dict[str, Any]]:
    """The manifest's per-epoch records (without dev accuracy): epoch K = the K-th checkpoint, with the
    learning rates and losses logged at steps after the previous checkpoint up to this one (``history``
    names where the log comes from). ``step_lrs``: the learning rate of every step of each epoch,
    recorded live (``integrations``), used instead of the logged ones."""
    log_entries = _log_history(sources)
    records, prev = [], 0
    for k, s in enumerate(sources, start=1):
        window = [e for e in log_entries if s.step is not None and prev < e["step"] <= s.step]
        lrs = [float(e["learning_rate"]) for e in window if "learning_rate" in e]
        lr_source = history if lrs else "unknown (NaN)"
        if step_lrs is not None and step_lrs[k - 1]:
            lrs, lr_source = [float(x) for x in step_lrs[k - 1]], "the optimizer at every step (LingtraceCallback)"
        losses = [float(e["loss"]) for e in window if "loss" in e]
        evals = [float(e["eval_accuracy"]) for e in window if "eval_accuracy" in e]
        records.append(
            {
                "epoch": k,
                "path": checkpoint_name(k),
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
                "lr_source": lr_source,
                "train_loss_source": history if losses else "unknown",
            }
        )
        prev = s.step if s.step is not None else prev
    return records


def fill_dev_accuracy(run: RunDir, cfg: Config, records: list[dict[str, Any]], how: str) -> dict[str, Any]:
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


def final_epoch_of(records: list[dict[str, Any]], final: str | None) -> int:
    """The epoch (1-based, in training order) of the final model: the last, or the checkpoint ``final`` names."""
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


def imported_manifest(
    run: RunDir,
    cfg: Config,
    *,
    identity: str,
    sources: list[Source],
    trainer_dirs: list[Path],
    records: list[dict[str, Any]],
    final: str | None,
    final_epoch: int,
    taken: list[dict[str, Any]],
    notes: dict[str, Any],
    data_from: RunDir | None,
    training_recipe: bool,
    history: str = LOG_HISTORY,
) -> dict[str, Any]:
    """The manifest: the keys of a native run's, and the ``imported`` record (sources, order, final
    checkpoint, what was taken from where, the Trainer's settings, ``notes``)."""
    from lingtrace.evaluation import majority_baseline

    accuracies = [r["dev_accuracy"] for r in records]
    last_state = next((s.state for s in reversed(sources) if s.state), None) or {}
    return {
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
                "steps_and_learning_rates": history if any(s.state for s in sources) else "unknown (no trainer_state.json)",
                "second_moments": moments_summary(records),
                "dev_accuracy": records[0]["dev_accuracy_source"],
                "data": f"data/ of {data_from.root.resolve()}" if data_from is not None else f"{cfg.data.path} through the local reader (prepare)",
            },
            "trainer_state": {k: last_state.get(k) for k in ("num_train_epochs", "max_steps", "train_batch_size", "logging_steps", "best_model_checkpoint") if k in last_state},
            "training_recipe": bool(training_recipe),
            **notes,
        },
    }


def is_imported_without_recipe(run: RunDir) -> bool:
    """True for a run imported from checkpoints trained elsewhere without a declared training recipe."""
    manifest = read_manifest(run) or {}
    imported = manifest.get("imported")
    return bool(imported) and not imported.get("training_recipe")


def moments_summary(records: list[dict[str, Any]]) -> str:
    """Where the checkpoints' second moments came from (``adam-cosine``), in a line."""
    moments = [r.get("second_moments") or {} for r in records]
    missing = [r["epoch"] for r, m in zip(records, moments) if not m.get("file")]
    if not missing:
        optimizers = ", ".join(sorted({str(m.get("optimizer")) for m in moments}))
        return f"the {optimizers} state of every checkpoint (see each epoch's second_moments)"
    reason = next(m.get("reason") for r, m in zip(records, moments) if r["epoch"] == missing[0]) or "unknown"
    return f"none for epoch(s) {', '.join(map(str, missing))}: {reason}"
