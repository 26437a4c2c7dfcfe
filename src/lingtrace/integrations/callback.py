"""``LingtraceCallback``: a ``transformers.TrainerCallback`` that makes the Trainer it is added to write a
lingtrace run directory as it trains, so that ``lingtrace select/influence/analyze/report RUN`` run on it
without ``lingtrace import``.

At the start of training it keeps the training, dev and test data it was given in the run
(``RUN/data/source/``, the local files of ``data.path``), fits the config to it as ``lingtrace import``
does (``importing.config``: languages, sizes, label names, ``model.kind`` of the model) and runs
``prepare``. At every epoch end (or every time the Trainer saves, ``every="save"``) it writes the model
as ``checkpoints/epoch-K/`` in lingtrace's layout (``models.checkpoints.save_checkpoint``: frozen weights
stored once per run) with AdamW's second moments from the live optimizer
(``save_second_moments``; none for other optimizers, and why), and the learning rate of every step.
When training ends it writes the manifest as an import does (``importing.finish_run``: epoch, global
step, learning rates, the train loss from the Trainer's ``log_history``, the dev accuracy the Trainer
logged as ``eval_accuracy``, or else evaluated on ``data/dev.parquet``; each epoch's ``weights``
identity) and marks ``train`` complete. Only the main process writes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lingtrace.errors import LingtraceError
from lingtrace.importing import finish_run, import_config, start_run
from lingtrace.importing.manifest import epoch_records
from lingtrace.importing.sources import Source
from lingtrace.run import RunDir, checkpoint_name, fingerprint, read_task, source_data_dir

log = logging.getLogger(__name__)

#: when the callback writes a checkpoint: at every epoch end, or whenever the Trainer saves one
EVERY = ("epoch", "save")
#: where the numbers of the manifest come from
HISTORY = "the Trainer's log_history (LingtraceCallback)"
SPLIT_NAMES = ("train", "dev", "test")


@dataclass
class _Saved:
    """One checkpoint the callback wrote."""

    step: int
    epoch: float | None
    weights: dict[str, Any]
    second_moments: dict[str, Any]
    lrs: list[float] = field(default_factory=list)
    seconds: float = 0.0


class LingtraceCallback(TrainerCallback):
    """Write a lingtrace run directory while a ``transformers.Trainer`` trains.

    ``run_dir``: the run directory to write (new, or one this callback wrote; ``overwrite=True`` replaces
    a finished run). ``train``, ``dev``, ``test``: the data as text, a ``datasets.Dataset`` or a pandas
    ``DataFrame`` each (``train`` the data the model is trained on, in any order), with the columns
    named by ``text_column`` (the input text; a causal LM's prompt), ``label_column`` (class index or
    label name; a causal LM's answer), ``language_column``, and optionally ``text_pair_column`` and
    ``translation_id_column`` (which aligns translations across languages). ``config`` (a YAML file)
    and ``overrides`` (``KEY=VALUE`` strings, or a mapping of keys to values) set the run's config as for
    ``lingtrace import``; give ``model.max_length`` (and ``model.text_prefix``) as the model is fed.
    ``tokenizer``: the tokenizer, when the Trainer has no ``processing_class``. ``every``: ``"epoch"``
    (a checkpoint at every epoch end) or ``"save"`` (whenever the Trainer saves one, e.g. every
    ``save_steps``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        train,
        dev,
        test,
        *,
        language_column: str = "lang",
        text_column: str = "text",
        label_column: str = "label",
        text_pair_column: str | None = None,
        translation_id_column: str | None = None,
        config: str | Path | None = None,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        tokenizer=None,
        every: str = "epoch",
        overwrite: bool = False,
    ):
        if every not in EVERY:
            raise LingtraceError(f"LingtraceCallback(every={every!r}) is not one of {', '.join(EVERY)}", "use every='epoch' or every='save'")
        self.run = RunDir(run_dir)
        self.data = dict(zip(SPLIT_NAMES, (train, dev, test)))
        columns = {"text_a": text_column, "label": label_column, "lang": language_column, "text_b": text_pair_column, "translation_id": translation_id_column}
        self.columns = {k: v for k, v in columns.items() if v is not None}
        self.config = None if config is None else str(config)
        self.overrides = _override_list(overrides)
        self.tokenizer = tokenizer
        self.every = every
        self.overwrite = overwrite
        self.cfg = None
        self.saved: list[_Saved] = []
        self._lrs: list[float] = []
        self._source: Source | None = None
        self._peft = False

    # ---------------------------------------------------------------- Trainer events

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.tokenizer = processing_class or self.tokenizer
        if self.tokenizer is None:
            raise LingtraceError("LingtraceCallback needs the tokenizer to save with the checkpoints", "give the Trainer processing_class=tokenizer, or LingtraceCallback(tokenizer=...)")
        self._source = self._live_source(model, args)
        target = source_data_dir(self.run)
        with tempfile.TemporaryDirectory(prefix="lingtrace-data-") as scratch:
            for split, frame in self.data.items():
                _write_split(frame, self.columns, Path(scratch) / f"{split}.parquet", split)
            name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
            cfg = import_config([self._source], self.config, None, self.overrides, scratch, None, model_name=name)
            d = cfg.to_dict()
            d["data"]["path"] = str(target.resolve())
            self.cfg = type(cfg).from_dict(d)
            start_run(self.run, self.cfg, [self._source], self.overwrite, write_data=lambda: _move_files(Path(scratch), target))
        self.saved, self._lrs = [], []
        log.info("LingtraceCallback: writing the run %s (%s)", self.run.root, self.run.describe())

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if state.is_world_process_zero and optimizer is not None:
            self._lrs.append(float(optimizer.param_groups[0]["lr"]))  # the rate this step used (the scheduler steps after)

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.every == "epoch":
            self._checkpoint(state, model, optimizer)

    def on_save(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.every == "save" and (not self.saved or self.saved[-1].step != state.global_step):
            self._checkpoint(state, model, optimizer)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.cfg is None:
            return
        if not self.saved:
            raise LingtraceError(f"LingtraceCallback wrote no checkpoint into {self.run.root}", "train for at least one epoch, or use every='save' with a save strategy")
        self._finish(args, state)

    # ---------------------------------------------------------------- the run

    def _checkpoint(self, state, model, optimizer) -> None:
        """``checkpoints/epoch-K/``: the model now, in lingtrace's layout, and AdamW's second moments."""
        if not state.is_world_process_zero or self.cfg is None:
            return
        from lingtrace.importing.moments import live_second_moments
        from lingtrace.io import atomic_dir
        from lingtrace.models.checkpoints import save_checkpoint, weights_identity

        t0 = time.perf_counter()
        epoch = len(self.saved) + 1
        target = self.run.checkpoint_dir(epoch)
        previous = self.run.checkpoint_dir(epoch - 1) if epoch > 1 else None
        saved = self._model(model)
        with atomic_dir(target) as tmp:
            save_checkpoint(saved, self.tokenizer, tmp, previous=previous)
            self._write_config(tmp)
            moments = live_second_moments(optimizer, saved, tmp) if optimizer is not None else {"source": None, "reason": "the Trainer passed no optimizer"}
        self.saved.append(_Saved(int(state.global_step), state.epoch, weights_identity(target), moments, self._lrs, 0.0))
        self._lrs = []
        self.saved[-1].seconds = time.perf_counter() - t0
        log.info("LingtraceCallback: %s at global step %d (%.1f s)", checkpoint_name(epoch), state.global_step, self.saved[-1].seconds)

    def _model(self, model):
        """The model to save: a peft model's base model with the adapters injected (lingtrace's LoRA layout)."""
        return model.get_base_model() if self._peft else model

    def _write_config(self, directory: Path) -> None:
        """A decoder's config.json with lingtrace's record (kind, label names, LoRA settings)."""
        kind = self.cfg.model.kind
        if kind == "encoder-classifier":
            return
        from lingtrace.importing.checkpoints import decoder_config
        from lingtrace.io import read_json, write_json
        from lingtrace.models.decoder import CONFIG_KEY, lora_settings

        config = decoder_config(read_json(directory / "config.json"), kind, [str(n) for n in read_task(self.run)["label_names"]], directory)
        m = self.cfg.model
        if self._peft:
            layers = int(config.get("num_hidden_layers") or 1)
            config[CONFIG_KEY].update(lora=lora_settings(m.lora_r, m.lora_alpha, m.lora_targets, m.lora_layers, layers), train_head=bool(m.train_head))
        write_json(directory / "config.json", config)  # replaces the file (a link to the previous epoch's is left alone)

    def _finish(self, args, state) -> dict[str, Any]:
        """The manifest, the dev accuracy and the ``train`` marker, as an import writes them."""
        log_state = {"log_history": list(state.log_history), "num_train_epochs": state.num_train_epochs, "max_steps": state.max_steps, "train_batch_size": state.train_batch_size, "logging_steps": state.logging_steps}
        sources = [
            Source(self.run.checkpoint_dir(k), self._source.config, s.step, s.epoch, log_state)
            for k, s in enumerate(self.saved, start=1)
        ]
        records = epoch_records(sources, HISTORY, [s.lrs for s in self.saved])
        for r, s in zip(records, self.saved):
            r.update(weights=s.weights, second_moments=s.second_moments, source=f"{args.output_dir} at global step {s.step} (LingtraceCallback)")
        evaluated = all(r["trainer_eval_accuracy"] is not None for r in records)
        identity = fingerprint({"train": self.run.stage_config(self.cfg, "train"), "callback": [s.weights for s in self.saved]})
        taken = [{"weights": "written", "linked": [], "copied": [], "tokenizer": "the Trainer's processing_class", "skipped": []} for _ in self.saved]
        manifest = finish_run(
            self.run, self.cfg, "trainer-state" if evaluated else "evaluate", identity=identity, sources=sources,
            trainer_dirs=[Path(args.output_dir)], records=records, final=None, final_epoch=records[-1]["epoch"],
            taken=taken, data_from=None, training_recipe=False, history=HISTORY,
        )
        log.info("LingtraceCallback: %d checkpoint(s) in %s, ready for `lingtrace select/influence/analyze/report`", len(records), self.run.root)
        return manifest

    def _live_source(self, model, args) -> Source:
        """The model being trained as an import ``Source``: its config (with its class as architecture)
        and, for a peft model, its adapter settings and trained tensor names."""
        if model is None:
            raise LingtraceError("LingtraceCallback was given no model by the Trainer", "add the callback to a transformers.Trainer")
        self._peft = hasattr(model, "peft_config") and hasattr(model, "get_base_model")
        inner = model.get_base_model() if self._peft else model
        config = {**inner.config.to_dict(), "architectures": [type(inner).__name__]}
        if not self._peft:
            return Source(Path(args.output_dir), config, None, None, None)
        import json

        settings = model.peft_config[getattr(model, "active_adapter", "default")].to_dict()
        # as peft writes adapter_config.json: enums by value, sets as lists
        adapter = json.loads(json.dumps(settings, default=lambda o: sorted(o) if isinstance(o, set | frozenset) else str(o)))
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if any(".modules_to_save." in n for n in names):
            raise LingtraceError(
                "LingtraceCallback does not write peft models with fully trained modules (modules_to_save, e.g. a classifier's head)",
                "save the Trainer's checkpoints and import them with `lingtrace import RUN OUTPUT_DIR --data ...`",
            )
        base = adapter.get("base_model_name_or_path") or getattr(inner.config, "_name_or_path", None)
        return Source(Path(args.output_dir), config, None, None, None, adapter, base, None, names)


def _override_list(overrides: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """``KEY=VALUE`` strings from strings or a mapping (values as JSON, which the config parser reads)."""
    import json

    if isinstance(overrides, Mapping):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def _write_split(data, columns: dict[str, str], path: Path, split: str) -> None:
    """One split of the given data as a Parquet file with lingtrace's column names."""
    import pandas as pd

    from lingtrace.io import write_parquet

    frame = data.to_pandas() if hasattr(data, "to_pandas") and not isinstance(data, pd.DataFrame) else data
    if not isinstance(frame, pd.DataFrame):
        raise LingtraceError(f"LingtraceCallback's {split} data is a {type(data).__name__}", "give a datasets.Dataset or a pandas DataFrame")
    missing = [c for c in columns.values() if c not in frame.columns]
    if missing:
        raise LingtraceError(
            f"LingtraceCallback's {split} data has no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})",
            "name the columns with text_column, label_column, language_column (text_pair_column, translation_id_column)",
        )
    write_parquet(path, pd.DataFrame({ours: frame[theirs].to_numpy() for ours, theirs in columns.items()}))


def _move_files(scratch: Path, target: Path) -> None:
    """The data files of ``scratch`` into ``target`` (replacing it)."""
    from lingtrace.io import atomic_dir
    from lingtrace.models.checkpoints import link_or_copy

    with atomic_dir(target) as tmp:
        for f in sorted(scratch.iterdir()):
            link_or_copy(f, tmp / f.name)
