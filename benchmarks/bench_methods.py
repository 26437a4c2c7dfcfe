"""Influence methods on a real run: each method's wall time as a ratio to tracin, and tracin before/after.

Copies a finished run twice (``--work``; the run itself is only read), clears the copies' influence
stage and then, back to back:

1. ``lingtrace influence`` (tracin) with the code in ``--old-src`` (e.g. the main checkout's
   ``src``) on the first copy, when given;
2. ``lingtrace influence --set influence.methods=[...]`` with this checkout on the second copy.

It prints each store's own wall time (``meta.json`` ``stats.wall_seconds``: the computation, without
process start and tokenisation), the process wall and CPU times, the ratios, and the largest
difference between the old and the new tracin scores. The methods run one after the other on the
same copy, one ``lingtrace influence`` process each (each adds one method to ``influence.methods``,
so the stage computes that method alone): the CPU seconds of each process are its own (less
stretched by other jobs than wall times, though threads waiting for a busy core inflate them too).
``--train-limit N`` keeps a random N of the training examples in the copy (a cheaper setting; say so
next to any figure made with it).

ekfac's store also records its seconds per checkpoint for the covariances, the eigendecomposition and
the eigenvalue corrections (``method_info.seconds``), printed too. ``--ekfac-final-only`` fits and
scores it at the final checkpoint alone (``influence.ekfac_final_only``) when the whole trajectory
does not fit in the time at hand; its ratio is then for one checkpoint, the others' for all.

adam-cosine needs the optimizer's second moments at each checkpoint; runs trained before training
saved them lack them. ``--stand-in-moments`` writes, into the copy only, a stand-in file per
checkpoint in the training contract's format: the mean squared minibatch gradient of a few training
batches (what AdamW's exp_avg_sq tracks) with the manifest's step count. The timing does not depend
on the values; the scores made from it are not a real adam-cosine result.

    python benchmarks/bench_methods.py /work/runs/demo-base --work /tmp/bench-methods \\
        --old-src /work/main/src --stand-in-moments
    python benchmarks/bench_methods.py runs/demo --work /tmp/bench-methods --ekfac-final-only   # every method
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"
CLEARED_STAGES = ("influence", "analyze", "report")


def fresh_copy(run: Path, dst: Path) -> Path:
    """A copy of ``run`` without its influence stage (and the stages after it)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(run, dst, symlinks=True, ignore=shutil.ignore_patterns("influence", "analysis", "report"))
    for stage in CLEARED_STAGES:
        (dst / "stages" / f"{stage}.json").unlink(missing_ok=True)
    return dst


def write_stand_in_moments(run_dir: Path, batches: int = 4, batch_size: int = 16) -> None:
    """Stand-in second moments (see the module docstring) for every checkpoint of the manifest."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from lingtrace.influence.methods.adam_cosine import SECOND_MOMENTS_FILE, SECOND_MOMENTS_FORMAT
    from lingtrace.influence.tracin import checkpoint_factory
    from lingtrace.objectives import Examples, collate
    from lingtrace.run import RunDir, read_manifest, read_split

    run = RunDir(run_dir)
    cfg = run.load_config()
    manifest = read_manifest(run)
    train = read_split(run, "train")
    step = 0
    for record in manifest["epochs"]:
        step += int(record["steps"])
        directory = run.checkpoints_dir / record["path"]
        tok = AutoTokenizer.from_pretrained(str(directory))
        sample = train.sample(n=min(len(train), batches * batch_size), random_state=int(record["epoch"]))
        ex = Examples.from_frame(sample, tok, cfg.model.max_length, cfg.model.text_prefix)
        size = -(-len(ex) // batches)
        model = checkpoint_factory(cfg.model.freeze_embeddings)(directory).eval()
        trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        moments = {n: torch.zeros_like(p) for n, p in trained.items()}
        for b in range(batches):
            idx = range(b * size, min(len(ex), (b + 1) * size))
            batch = collate([ex.ids[i] for i in idx], ex.labels[list(idx)], tok.pad_token_id)
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            torch.nn.functional.cross_entropy(logits, batch.labels).backward()
            for n, p in trained.items():
                if p.grad is not None:
                    moments[n] += p.grad.detach() ** 2 / batches
        meta = {"step": str(step), "beta1": "0.9", "beta2": "0.999", "eps": "1e-08", "lr": str(record["lr_mean"]),
                "weight_decay": str(cfg.train.weight_decay), "format": SECOND_MOMENTS_FORMAT, "stand_in": "mean squared minibatch gradient (benchmark only)"}
        save_file({n: m.contiguous() for n, m in moments.items()}, str(directory / SECOND_MOMENTS_FILE), metadata=meta)
        print(f"  stand-in second moments for {directory.name} (step {step})", flush=True)


def influence(run_dir: Path, src: Path, overrides: list[str]) -> tuple[float, float]:
    """Run ``lingtrace influence`` in a subprocess: its wall and CPU (user + system) seconds."""
    env = {**os.environ, "PYTHONPATH": str(src), "LINGTRACE_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "lingtrace", "influence", str(run_dir), "-q", *[a for o in overrides for a in ("--set", o)]]
    print("$ PYTHONPATH=" + str(src) + " " + " ".join(cmd[1:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def limit_training_set(run_dir: Path, n: int, seed: int = 0) -> None:
    """Keep a random ``n`` of the copy's training examples (in their order)."""
    import pandas as pd

    path = run_dir / "data" / "train.parquet"
    frame = pd.read_parquet(path)
    frame.sample(n=min(n, len(frame)), random_state=seed).sort_index().to_parquet(path)


def store_stats(store: Path) -> dict:
    return json.loads((store / "meta.json").read_text())["stats"]


def max_difference(a: Path, b: Path) -> float:
    from lingtrace.influence.store import load_scores

    old, new = load_scores(a), load_scores(b)
    assert old.train_uids == new.train_uids and old.test_uids == new.test_uids
    return max(float(np.abs(np.asarray(old.epoch(e)) - np.asarray(new.epoch(e))).max()) for e in old.epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run (read only)")
    ap.add_argument("--work", type=Path, required=True, help="where the copies go")
    ap.add_argument("--methods", default="tracin,adam-cosine,representation,trak,ekfac")
    ap.add_argument("--ekfac-final-only", action="store_true", help="ekfac at the final checkpoint only (influence.ekfac_final_only)")
    ap.add_argument("--train-limit", type=int, metavar="N", help="keep a random N of the training examples in the copy")
    ap.add_argument("--old-src", type=Path, help="the src/ of the code to compare tracin with (run first)")
    ap.add_argument("--stand-in-moments", action="store_true", help="write stand-in second moments into the copy (adam-cosine)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    sys.path.insert(0, str(NEW_SRC))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out: dict = {"run": str(args.run), "methods": methods, "date": time.strftime("%Y-%m-%d")}
    new = fresh_copy(args.run, args.work / "new")
    if args.train_limit:
        limit_training_set(new, args.train_limit)
        out["train_limit"] = args.train_limit
    if args.stand_in_moments:
        write_stand_in_moments(new)
    if args.old_src:
        old = fresh_copy(args.run, args.work / "old")
        out["old_process_s"], out["old_process_cpu_s"] = influence(old, args.old_src, [])
        out["old_tracin_s"] = store_stats(old / "influence")["wall_seconds"]
    extra = ["influence.ekfac_final_only=true"] if args.ekfac_final_only else []
    out["new"] = {}
    for i, m in enumerate(methods):
        process_s, cpu_s = influence(new, NEW_SRC, [f"influence.methods=[{','.join(methods[: i + 1])}]", *extra])
        meta = json.loads((new / "influence" / m / "meta.json").read_text())
        out["new"][m] = {
            "wall_s": meta["stats"]["wall_seconds"],
            "process_s": process_s,
            "process_cpu_s": cpu_s,
            "seconds": meta["stats"]["seconds"],
            "epochs": meta["epochs"],
        }
        if m == "ekfac":
            out["new"][m]["phases"] = meta["method_info"]["seconds"]
    out["new_process_s"] = sum(r["process_s"] for r in out["new"].values())
    base = out["new"].get("tracin", {}).get("wall_s")
    base_cpu = out["new"].get("tracin", {}).get("process_cpu_s")
    print(f"\n{'method':<16} {'epochs':<10} {'wall (s)':>9} {'/ tracin':>9} {'CPU (s)':>9} {'/ tracin':>9}  where the time goes")
    for m, r in out["new"].items():
        ratio = f"{r['wall_s'] / base:.3f}" if base else "-"
        cpu_ratio = f"{r['process_cpu_s'] / base_cpu:.3f}" if base_cpu else "-"
        epochs = ",".join(map(str, r["epochs"]))
        print(
            f"{m:<16} {epochs:<10} {r['wall_s']:>9.1f} {ratio:>9} {r['process_cpu_s']:>9.1f} {cpu_ratio:>9}  "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items())
        )
        for epoch, phases in r.get("phases", {}).items():
            print(f"{'':<16} ekfac checkpoint {epoch}: " + ", ".join(f"{k} {v} s" for k, v in phases.items()))
    if args.old_src and base:
        out["tracin_new_over_old"] = base / out["old_tracin_s"]
        out["tracin_max_abs_difference"] = max_difference(old / "influence", new / "influence" / "tracin")
        print(f"\ntracin before (--old-src): {out['old_tracin_s']:.1f} s, after: {base:.1f} s -> after/before {out['tracin_new_over_old']:.3f}")
        print(f"largest difference between the old and the new tracin scores: {out['tracin_max_abs_difference']:.3g}")
    print("process wall: " + ", ".join(f"{k} {out[k]:.1f} s" for k in ("old_process_s", "new_process_s") if k in out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
