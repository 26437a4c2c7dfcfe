"""Where the time of the decoder demo (preset ``emoji-llm``) goes, per part, in CPU and wall seconds.

Loads the preset's model (SmolLM2-135M-Instruct with its LoRA adapters, from ``$LINGTRACE_CACHE``)
and its data, then times, each a few times on real batches of the preset's sizes:

* one training step: the forward (``task.batch_losses``) and the backward separately;
* the same forward without gradients (what the frozen layers alone cost is most of it);
* dev scoring (``task.class_scores``: one forward per example, every verbalisation packed behind the prompt);
* per-example gradients (``PerSampleGradients``, the pass the influence methods make per example).

CPU seconds are the process's (all its threads); with other jobs on the machine they are the
steadier figure, wall seconds the one a user waits. ``--set KEY=VALUE`` overrides the preset.

    OMP_NUM_THREADS=1 python benchmarks/bench_decoder.py
    python benchmarks/bench_decoder.py --set model.lora_targets=[q_proj,v_proj]
"""

from __future__ import annotations

import argparse
import time

import torch

from lingtrace.config import apply_overrides, preset
from lingtrace.influence.grads import PerSampleGradients
from lingtrace.influence.params import select_params
from lingtrace.models.loading import load_model_and_tokenizer
from lingtrace.objectives import objective_for
from lingtrace.prepare.readers import load_task
from lingtrace.prepare.sampling import prepare_splits


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def timed(fn, repeats: int) -> tuple[float, float]:
    """Mean (wall, CPU) seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    start = clock()
    for _ in range(repeats):
        fn()
    end = clock()
    return (end[0] - start[0]) / repeats, (end[1] - start[1]) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="emoji-llm")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = apply_overrides(preset(args.preset), args.overrides)
    frames, spec = load_task(cfg.data)
    splits = prepare_splits(frames, cfg.data, spec)
    train, dev = splits["train"], splits["dev"]
    names = list(spec.label_names)
    start = clock()
    model, tokenizer = load_model_and_tokenizer(cfg.model, num_labels=len(names), label_names=names)
    if cfg.model.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    print(f"torch threads {torch.get_num_threads()}; load {time.perf_counter() - start[0]:.1f} s wall")
    print(f"trained parameters {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
    task = objective_for(cfg, names)
    mlen, prefix = cfg.model.max_length, cfg.model.text_prefix

    bs = cfg.train.batch_size
    batch = task.encode_rows(tokenizer, train.iloc[:bs], mlen, prefix)
    print(f"training batch {tuple(batch.input_ids.shape)} (batch x tokens)")
    model.train()
    losses = {}

    def forward():
        losses["loss"] = task.batch_losses(model, batch).sum()

    def step():
        forward()
        losses["loss"].backward()
        model.zero_grad(set_to_none=True)

    fwd = timed(forward, args.repeats)
    full = timed(step, args.repeats)
    with torch.no_grad():
        nograd = timed(lambda: task.batch_losses(model, batch), args.repeats)
    model.eval()
    n_dev = min(len(dev), cfg.train.eval_batch_size)
    score = timed(lambda: task.class_scores(model, tokenizer, dev.iloc[:n_dev], mlen, prefix), 1)
    ib = cfg.influence.batch_size
    examples = task.examples(train.iloc[:ib], tokenizer, mlen, prefix)
    grads = PerSampleGradients(model, select_params(model), objective=task)
    gbatch = task.collate(examples.ids, examples.labels, task.pad_id(model))
    per_example = timed(lambda: grads(gbatch), 1)

    print("part | wall s | CPU s | per example (CPU s)")
    rows = [
        (f"training step, forward (batch {bs})", fwd, bs),
        (f"training step, backward (batch {bs})", (full[0] - fwd[0], full[1] - fwd[1]), bs),
        (f"forward without gradients (batch {bs})", nograd, bs),
        (f"dev scoring ({n_dev} examples, {len(names)} verbalisations packed)", score, n_dev),
        (f"per-example gradients (batch {ib})", per_example, ib),
    ]
    for name, (wall, cpu), n in rows:
        print(f"{name} | {wall:.2f} | {cpu:.2f} | {cpu / n:.3f}")


if __name__ == "__main__":
    main()
