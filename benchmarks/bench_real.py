"""The influence stage on the real embedded model: wall time over its gradient passes, product GFLOP/s,
and the nn.Linear paths (materialised vs factored position pairs) compared in one run.

Reads a finished run (``lingtrace demo --out RUN``: multilingual-e5-small, its epoch checkpoints, its
training set and selected test examples; no network) and scores exact cosine TracIn in this process,
once per ``--paths`` entry (``Tuning.linear_path``), on two inputs:

* ``emoji``: the run's own examples (CLDR name and keywords, ~21 tokens);
* ``names``: the same examples cut to the CLDR name before the first ``:`` (a short-text task built
  from the shipped emojibase data, ~8 tokens). The checkpoints are the run's; the cost depends on the
  lengths and the model, not on what the weights learned.

Per setting it prints the wall time, the engine's parts (training and test gradients, products,
loading), wall / (training + test gradients), the products' GFLOP/s for the materialised dense
products (2 N M D per checkpoint), and the largest score difference against the first path (the
paths are exact: rounding only). The settings alternate inside one process (``--repeat`` rounds) so
that a noisy machine stretches them alike. ``--demo`` also times ``lingtrace demo`` end to end with
this checkout (a fresh output folder; the model cache as it is).

    python benchmarks/bench_real.py runs/demo --paths materialised,auto --json bench_real.json
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

HERE = Path(__file__).resolve().parent


def load_inputs(run_dir: Path, short: bool, train_limit: int | None):
    from lingtrace.data import schema
    from lingtrace.influence.stage import _inputs
    from lingtrace.run import RunDir, read_selection, read_split

    run = RunDir(run_dir)
    cfg = run.load_config()
    inputs = _inputs(run, cfg)
    if not short and not train_limit:
        return cfg, inputs
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(inputs.checkpoints[-1].source))
    train, test = read_split(run, "train"), read_selection(run)
    if train_limit:
        train = train.sample(n=min(train_limit, len(train)), random_state=0).sort_index()
    if short:
        for frame in (train, test):
            frame[schema.TEXT_A] = frame[schema.TEXT_A].str.split(":").str[0]
    inputs.train = inputs.objective.examples(train, tok, cfg.model.max_length, cfg.model.text_prefix)
    inputs.test = inputs.objective.examples(test, tok, cfg.model.max_length, cfg.model.text_prefix)
    return cfg, inputs


def floor(cfg, inputs, checkpoints: int | None) -> float:
    """Seconds of the strict floor: the (N + M) * E per-example gradient passes alone (every gradient
    materialised by the vmapped pass, batched and sorted as the engine does), nothing else."""
    from lingtrace.influence.grads import PerSampleGradients
    from lingtrace.influence.params import select_params
    from lingtrace.influence.tracin import checkpoint_factory
    from lingtrace.objectives import batches

    points = inputs.checkpoints[-checkpoints:] if checkpoints else inputs.checkpoints
    load = checkpoint_factory(cfg.model.freeze_embeddings)
    size = cfg.influence.batch_size
    total = 0.0
    for c in points:
        model = load(c.source).float().eval()
        model.set_attn_implementation("eager")
        psg = PerSampleGradients(model, select_params(model), objective=inputs.objective, linear_path="materialised")
        collate = lambda ids, labels, pin=False: inputs.objective.collate(ids, labels, pad_id=inputs.pad_id, pin=pin)  # noqa: E731
        t0 = time.perf_counter()
        for ex in (inputs.test, inputs.train):
            for _, batch in batches(ex, size, collate, True, False):
                g = psg(batch)
                del g
        total += time.perf_counter() - t0
        del model, psg
    return total


def score(cfg, inputs, path: str, checkpoints: int | None):
    from lingtrace.influence.tracin import TracIn, checkpoint_factory

    points = inputs.checkpoints[-checkpoints:] if checkpoints else inputs.checkpoints
    path, _, rows = path.partition(":")
    tracin = TracIn(
        checkpoint_factory(cfg.model.freeze_embeddings),
        [c.source for c in points],
        epochs=[c.epoch for c in points],
        batch_size=cfg.influence.batch_size,
        show_progress=False,
        linear_path=path,
        product_rows=int(rows) if rows else None,
        objective=inputs.objective,
    )
    t0 = time.perf_counter()
    res = tracin.scores(inputs.train, inputs.test, pad_id=inputs.pad_id)
    wall = time.perf_counter() - t0
    dense = sum(tracin.tracked.numel[n] for n in tracin.tracked.dense_names)
    return res, wall, dense, len(points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run of the embedded default (lingtrace demo --out RUN)")
    ap.add_argument(
        "--paths",
        default="materialised,auto",
        help="settings compared in one run: Tuning.linear_path values, each optionally :ROWS (Tuning.product_rows; 0 = no blocks)",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip timing the strict floor (the per-example gradient passes alone)")
    ap.add_argument("--inputs", default="emoji,names", help="emoji (the run's examples) and/or names (cut to the CLDR name)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the settings (alternating)")
    ap.add_argument("--checkpoints", type=int, help="score only the last N checkpoints (a cheaper setting)")
    ap.add_argument("--train-limit", type=int, help="a random N of the training examples (a cheaper setting)")
    ap.add_argument("--demo", action="store_true", help="also time `lingtrace demo` end to end with this checkout")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    from lingtrace.utils import tune_allocator

    print(f"allocator tuned (lingtrace.utils.tune_allocator): {tune_allocator()}", flush=True)
    paths = [p for p in args.paths.split(",") if p]
    loaded = {name: load_inputs(args.run, name == "names", args.train_limit) for name in args.inputs.split(",") if name}
    rows, ref = [], {}
    floors: dict[str, float] = {}
    for rnd in range(args.repeat):
        for name, (cfg, inputs) in loaded.items():
            if not args.no_floor:
                f = floor(cfg, inputs, args.checkpoints)
                floors[name] = min(f, floors.get(name, f))
                print(f"{name:6s} strict floor (the per-example gradient passes alone): {f:.1f} s", flush=True)
            for path in paths:
                res, wall, dense, n_ckpt = score(cfg, inputs, path, args.checkpoints)
                s = res.stats["seconds"]
                grads = s.get("train_gradients", 0.0) + s.get("test_gradients", 0.0)
                n, m = len(inputs.train), len(inputs.test)
                flops = 2.0 * n * m * dense * n_ckpt
                total = res.total
                if name not in ref:
                    ref[name] = total
                diff = float(np.abs(total - ref[name]).max() / np.abs(ref[name]).max())
                tokens = float(np.mean(np.r_[inputs.train.lengths, inputs.test.lengths]))
                row = {
                    "round": rnd, "inputs": name, "path": path, "n_train": n, "n_test": m, "checkpoints": n_ckpt,
                    "mean_tokens": round(tokens, 1), "wall_s": round(wall, 2), "seconds": {k: round(v, 2) for k, v in s.items()},
                    "wall_over_gradient_passes": round(wall / grads, 3) if grads else None,
                    "strict_floor_s": round(floors[name], 2) if name in floors else None,
                    "wall_over_strict_floor": round(wall / floors[name], 3) if name in floors else None,
                    # 2 N M D E over the products' seconds (the materialised path's flops; an effective rate otherwise)
                    "dense_product_gflops": round(flops / s["products"] / 1e9, 1) if s.get("products") else None,
                    "max_rel_diff_vs_first": diff,
                }
                rows.append(row)
                parts = ", ".join(f"{k} {v:.1f}" for k, v in s.items() if v >= 0.05)
                gf = f"  products {row['dense_product_gflops']} GFLOP/s" if row["dense_product_gflops"] else ""
                fl = f"  wall/strict floor {row['wall_over_strict_floor']}" if row["wall_over_strict_floor"] else ""
                print(
                    f"{name:6s} {path:16s} N={n} M={m} E={n_ckpt} tokens {tokens:4.1f}  wall {wall:7.1f} s  "
                    f"wall/gradient passes {row['wall_over_gradient_passes']}{fl}{gf}  max rel diff {diff:.1e}  ({parts})",
                    flush=True,
                )
    demo = None
    if args.demo:
        out = Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo"
        env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "LINGTRACE_NO_PROGRESS": "1"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lingtrace", "demo", "--out", str(out)], env=env, check=True)
        demo = {"wall_s": round(time.perf_counter() - t0, 1), "out": str(out)}
        print(f"lingtrace demo end to end: {demo['wall_s']} s ({out})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(args.run), "rows": rows, "demo": demo}, indent=1))


if __name__ == "__main__":
    main()
