"""Influence-stage benchmark on this machine: passes, time over the floor, captum, memory.

A tiny XLM-R built from a config (tokenizer trained here) on real multilingual text (the embedded
CLDR emoji task: 5 languages), N training and M test examples, E checkpoints. Everything is measured
in one run, so the printed ratios compare like with like on a noisy machine:

* gradient passes: the engine's count of per-example gradients, against (N + M) * E;
* time over the floor: the influence computation (checkpoint loads, test and training gradients,
  products, norms) against three floors measured in the same process: (a) the same (N + M) * E
  per-example gradient passes alone (same vmapped forward+backward, same batches, nothing else: the
  strict floor, whose ratio is the cost of everything but the gradients); (b) (N + M) * E
  forward+backward passes one example at a time (the "gradient pass" of per-example loops);
  (c) a plain batched forward+backward of the same examples (no per-example gradients at all: a
  lower bound no per-example method reaches);
* captum: ``captum.influence.TracInCP`` on identical inputs and checkpoints in ``dot`` mode
  (its default per-example jacobians, training batches of the same size, all test examples in one
  batch), the speed-up and the largest score difference;
* memory: peak resident memory of a fresh process computing the scores for N and for 2N training
  examples (it should not grow with N beyond the score matrix).

    python benchmarks/bench_influence.py                      # N=2000, M=50, E=3
    python benchmarks/bench_influence.py --n-train 500 --no-captum
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("LINGTRACE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _quiet() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def build(args, workdir: Path):
    """Examples (real emoji names, 5 languages), a tiny XLM-R and E checkpoint state dicts."""
    from lingtrace.config import DataConfig
    from lingtrace.influence.tracin import Examples
    from lingtrace.prepare.readers import load_task
    from lingtrace.prepare.sampling import prepare_splits
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny models are test support
    from support.tiny import make_tiny_model_dir

    langs = ["de", "es", "fr", "ru", "zh"]
    per_lang = -(-args.n_train // len(langs))
    cfg = DataConfig(languages=langs, train_per_lang=per_lang, dev_per_lang=1, test_per_lang=-(-args.n_test // len(langs)), seed=0)
    frames, task = load_task(cfg)
    splits = prepare_splits(frames, cfg, task)
    train, test = splits["train"].iloc[: args.n_train], splits["test"].iloc[: args.n_test]
    texts = frames["text_a"].tolist()
    model_dir = make_tiny_model_dir(
        workdir / "model", texts, num_labels=len(task.label_names), layers=args.layers, hidden=args.hidden, heads=args.heads, vocab_size=args.vocab
    )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tr = Examples.from_frame(train, tok, max_length=args.max_length)
    te = Examples.from_frame(test, tok, max_length=args.max_length)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    states = []
    for _ in range(args.epochs):  # stand-ins for epoch checkpoints: timing does not depend on the values
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return model_dir, tok, tr, te, states


def factory_for(model_dir):
    from transformers import AutoModelForSequenceClassification

    def make(state):
        m = AutoModelForSequenceClassification.from_pretrained(model_dir)
        m.load_state_dict(state)
        return m

    return make


def _batches(ex, batch_size, pad_id):
    """The engine's batches (shortest first, the pad id bound)."""
    from functools import partial

    from lingtrace.objectives import batches, collate

    return batches(ex, batch_size, partial(collate, pad_id=pad_id), sort=True)


def floor_time(factory, states, examples, batch_size, pad_id):
    """(N + M) * E per-example gradient passes alone: the same vmapped function, nothing else."""
    from lingtrace.influence.grads import PerSampleGradients
    from lingtrace.influence.params import select_params

    total = 0.0
    for state in states:
        model = factory(state).eval()
        model.set_attn_implementation("eager")
        psg = PerSampleGradients(model, select_params(model))
        for ex in examples:
            t0 = time.perf_counter()
            for _, batch in _batches(ex, batch_size, pad_id):
                psg(batch)
            total += time.perf_counter() - t0
    return total


def batched_time(factory, states, examples, batch_size, pad_id):
    """Plain batched forward + backward of the summed loss over the same examples (no per-example gradients)."""
    total = 0.0
    for state in states:
        model = factory(state).eval()
        for ex in examples:
            t0 = time.perf_counter()
            for _, b in _batches(ex, batch_size, pad_id):
                model.zero_grad(set_to_none=True)
                out = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
                torch.nn.functional.cross_entropy(out, b.labels, reduction="sum").backward()
            total += time.perf_counter() - t0
    return total


def captum_scores(factory, states, tr, te, batch_size, pad_id):
    from captum.influence import TracInCP

    from lingtrace.influence.grads import collate

    width = max(int(x.shape[0]) for x in tr.ids + te.ids)

    def padded(ex):
        b = collate(ex.ids, ex.labels, pad_id)
        extra = width - b.input_ids.shape[1]
        return (
            torch.nn.functional.pad(b.input_ids, (0, extra), value=pad_id),
            torch.nn.functional.pad(b.attention_mask, (0, extra), value=0),
            b.labels,
        )

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = factory(states[0]).eval()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def load(model, path):
        model.model.load_state_dict(states[int(path)])
        return 1.0

    wrapped = Wrapped()
    dataset = torch.utils.data.TensorDataset(*padded(tr))
    tracin = TracInCP(
        wrapped,
        dataset,
        [str(i) for i in range(len(states))],
        checkpoints_load_func=load,
        loss_fn=torch.nn.CrossEntropyLoss(reduction="none"),
        batch_size=batch_size,
    )
    t0 = time.perf_counter()
    scores = tracin.influence(padded(te), show_progress=False).detach().numpy()
    return scores, time.perf_counter() - t0


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args) -> None:
    """Score N examples in a fresh process and print the memory the influence computation took:
    the peak resident set during it (Linux: the peak is reset through /proc/self/clear_refs just
    before) and its increase over the resident set just before (data, model and tokenizer loaded)."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok, tr, te, states = build(args, Path(tmp))
        from lingtrace.influence.tracin import TracIn

        factory = factory_for(model_dir)
        import gc

        gc.collect()
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset the peak resident set size (VmHWM)
        before = _status_kib("VmRSS")
        TracIn(factory, states, batch_size=args.batch_size, show_progress=False).scores(tr, te, pad_id=tok.pad_token_id)
        peak = _status_kib("VmHWM")
        print(json.dumps({"n_train": len(tr), "peak_rss_mib": peak / 1024, "before_mib": before / 1024, "increase_mib": (peak - before) / 1024}))


def add_setting_args(ap: argparse.ArgumentParser) -> None:
    """The benchmark setting (data sizes and the tiny model), shared by the benchmark scripts."""
    ap.add_argument("--n-train", type=int, default=2000, help="training examples N")
    ap.add_argument("--n-test", type=int, default=50, help="test examples M")
    ap.add_argument("--epochs", type=int, default=3, help="checkpoints E")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000, help="tokenizer size (the Chinese names need several thousand pieces)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="examples per per-example-gradient batch")


def single_time(factory, states, examples, pad_id):
    """(N + M) * E forward + backward passes one example at a time (batch size 1): the classic
    "gradient pass" of per-example loops such as captum's or the paper's."""
    total = 0.0
    for state in states:
        model = factory(state).eval()
        for ex in examples:
            t0 = time.perf_counter()
            for ids, label in zip(ex.ids, ex.labels):
                model.zero_grad(set_to_none=True)
                x = torch.as_tensor(ids)[None]
                out = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
                torch.nn.functional.cross_entropy(out, torch.as_tensor([int(label)])).backward()
            total += time.perf_counter() - t0
    return total


def measure(args, captum: bool = True, memory: bool = True, single: bool = True) -> dict:
    """Every figure of this benchmark for one setting, measured in one process; printed as it goes."""
    from lingtrace.influence.tracin import TracIn

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok, tr, te, states = build(args, Path(tmp))
        pad = tok.pad_token_id
        factory = factory_for(model_dir)
        n, m, e = len(tr), len(te), len(states)
        lengths = np.r_[tr.lengths, te.lengths]
        nparams = sum(p.numel() for p in factory(states[0]).parameters())
        print(f"tiny XLM-R: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, {nparams / 1e6:.2f}M parameters")
        print(f"N={n} training, M={m} test examples, E={e} checkpoints, tokens per example: mean {lengths.mean():.1f}, max {lengths.max()}")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

        # warm-up (first calls pay one-off costs)
        TracIn(factory, states[:1], batch_size=args.batch_size, show_progress=False).scores(tr.subset(range(8)), te.subset(range(4)), pad_id=pad)

        floor = floor_time(factory, states, [tr, te], args.batch_size, pad)
        t0 = time.perf_counter()
        tracin = TracIn(factory, states, batch_size=args.batch_size, show_progress=False)
        res = tracin.scores(tr, te, pad_id=pad)
        ours = time.perf_counter() - t0
        batched = batched_time(factory, states, [tr, te], args.batch_size, pad)
        out = {
            "n_train": n,
            "n_test": m,
            "epochs": e,
            "params_m": nparams / 1e6,
            "mean_tokens": float(lengths.mean()),
            "gradient_passes": res.stats["gradient_passes"],
            "expected_passes": (n + m) * e,
            "influence_s": ours,
            "floor_s": floor,
            "ratio_over_floor": ours / floor,
            "batched_fwd_bwd_s": batched,
            "ratio_over_batched": ours / batched,
            "breakdown_s": {k: round(v, 3) for k, v in res.stats["seconds"].items()},
        }
        print(f"\nper-example gradient passes: {out['gradient_passes']} (expected (N+M)*E = {out['expected_passes']})")
        print(f"influence (cosine, exact, all parameters): {ours:.2f} s")
        print(f"floor, (N+M)*E per-example gradient passes alone (vmapped, same batches): {floor:.2f} s  ->  ratio {ours / floor:.3f}")
        print(f"plain batched forward+backward of the same examples (no per-example gradients): {batched:.2f} s  ->  ratio {ours / batched:.3f}")
        if single:
            one = single_time(factory, states, [tr, te], pad)
            out.update({"single_example_passes_s": one, "ratio_over_single_passes": ours / one})
            print(f"(N+M)*E forward+backward passes one example at a time: {one:.2f} s  ->  ratio {ours / one:.3f}")
        print("where the time goes: " + ", ".join(f"{k} {v:.2f} s" for k, v in res.stats["seconds"].items()))

        if captum:
            t0 = time.perf_counter()
            dot = TracIn(factory, states, mode="dot", batch_size=args.batch_size, show_progress=False).scores(tr, te, pad_id=pad)
            ours_dot = time.perf_counter() - t0
            cap, cap_s = captum_scores(factory, states, tr, te, args.batch_size, pad)
            diff = float(np.abs(cap - dot.total).max())
            rel = diff / float(np.abs(cap).max())
            out.update({"captum_s": cap_s, "ours_dot_s": ours_dot, "speedup_vs_captum": cap_s / ours_dot, "captum_max_abs_diff": diff, "captum_max_rel_diff": rel})
            print(f"captum TracInCP (dot): {cap_s:.2f} s; lingtrace (dot): {ours_dot:.2f} s  ->  speed-up {cap_s / ours_dot:.1f}x")
            print(f"largest score difference vs captum: {diff:.3g} absolute, {rel:.3g} relative to the largest score")

    if memory:
        rows = []
        for k in (n, 2 * n):
            cmd = [sys.executable, __file__, "--child", "--n-train", str(k), "--n-test", str(m), "--epochs", str(e), "--layers", str(args.layers), "--hidden", str(args.hidden), "--heads", str(args.heads), "--vocab", str(args.vocab), "--max-length", str(args.max_length), "--batch-size", str(args.batch_size)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
        score_mib = m * n * 4 * (e + 1) / 2**20  # per-epoch matrices + the total, float32
        out["memory"] = rows
        out["memory_growth_mib"] = rows[1]["increase_mib"] - rows[0]["increase_mib"]
        out["score_matrices_mib"] = score_mib
        print(
            f"memory taken by the influence computation (peak over the resident set before it): N={rows[0]['n_train']}: "
            f"{rows[0]['increase_mib']:.0f} MiB, N={rows[1]['n_train']}: {rows[1]['increase_mib']:.0f} MiB "
            f"(growth {out['memory_growth_mib']:.0f} MiB; the extra score matrices are {score_mib:.1f} MiB)"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_args(ap)
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-single", action="store_true", help="skip the one-example-at-a-time passes")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    _quiet()
    if args.child:
        child(args)
        return
    out = measure(args, captum=not args.no_captum, memory=not args.no_memory, single=not args.no_single)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
