"""Paper-scale influence timing on a GPU: XLM-R base architecture from its config (random weights:
the timing does not depend on the values), N x M x E, exact cosine over all parameters.

    python benchmarks/bench_gpu.py                                   # 10,000 x 125 x 5, exact (target <= 2 min on one H100)
    python benchmarks/bench_gpu.py --dtype bfloat16                  # autocast for the gradient passes
    python benchmarks/bench_gpu.py --n-train 100000 --n-test 2500 --projection-dim 8192   # large (target <= 1 h)
    torchrun --nproc_per_node=8 benchmarks/bench_gpu.py              # sharded over 8 GPUs
    python benchmarks/bench_gpu.py --device cpu --tiny               # a smoke run of this script on a CPU

Token sequences are random ids over the 250,002-piece vocabulary with lengths drawn to resemble
XNLI premise+hypothesis pairs under max_length 128 (mean about 60 tokens); two classes. Prints the
wall time, where the time went, the per-example gradient passes and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def xlmr_base_config(tiny: bool):
    from transformers import XLMRobertaConfig

    if tiny:
        return XLMRobertaConfig(vocab_size=5000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=130, num_labels=2, type_vocab_size=1)
    # xlm-roberta-base
    return XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=2,
    )


def examples(n: int, vocab: int, seed: int, max_length: int):
    from lingtrace.influence.tracin import Examples

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(60, 22, size=n).round().astype(int), 8, max_length)
    ids = [np.r_[0, rng.integers(5, vocab, size=k - 2), 2].astype(np.int64) for k in lengths]
    return Examples(ids, rng.integers(0, 2, size=n), [f"x{seed}-{i}" for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=125)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--projection-dim", type=int)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--profile", action="store_true", help="synchronise around each part so the per-part seconds are exact (slightly slower)")
    ap.add_argument("--tiny", action="store_true", help="a tiny model, to smoke-test the script")
    ap.add_argument("--store", metavar="DIR", help="write the score store here (default: keep the scores in memory)")
    ap.add_argument("--topk", type=int, metavar="K", help="with --store: then take the top-K of every test example from the memory-mapped store, block by block")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    from transformers import AutoModelForSequenceClassification

    from lingtrace.distributed import from_env
    from lingtrace.influence.tracin import MemorySink, TracIn

    dist = from_env()
    config = xlmr_base_config(args.tiny)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(config)
    states = []
    for _ in range(args.epochs):
        with torch.no_grad():
            for p in base.parameters():
                p.add_(0.01 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in base.state_dict().items()})
    del base

    def factory(state):
        m = AutoModelForSequenceClassification.from_config(config)
        m.load_state_dict(state)
        return m

    train = examples(args.n_train, config.vocab_size, 1, args.max_length)
    test = examples(args.n_test, config.vocab_size, 2, args.max_length)
    tracin = TracIn(
        factory,
        states,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=dist.device(args.device),
        projection_dim=args.projection_dim,
        breakdown=False,
        profile=args.profile,
        show_progress=dist.is_main,
    )
    if tracin.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(tracin.device)
        torch.cuda.synchronize(tracin.device)
    t0 = time.perf_counter()
    if args.store:
        from lingtrace.influence.store import StoreWriter

        sink = StoreWriter(Path(args.store), "bench", {"epochs": list(range(1, args.epochs + 1))}, train.uids, test.uids, overwrite=True, assemble=dist.is_main)
        plan = dist.broadcast(tracin.make_plan(train, test, dist.world).to_dict() if dist.is_main else None)
        from lingtrace.influence.tracin import Plan

        sink.plan = Plan.from_dict(plan)
        if dist.is_main:
            sink.begin(sink.plan)
    else:
        sink = MemorySink(len(test), len(train))
    tracin.run(train, test, sink, pad_id=config.pad_token_id, rank=dist.rank, world=dist.world)
    dist.barrier()
    if args.store and dist.is_main:
        for e in range(1, args.epochs + 1):
            sink.epoch_done(e)
        sink.finish(tracin.stats)
    if tracin.device.type == "cuda":
        torch.cuda.synchronize(tracin.device)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(tracin.device) / 2**30 if tracin.device.type == "cuda" else float("nan")
    out = {
        "device": torch.cuda.get_device_name(tracin.device) if tracin.device.type == "cuda" else "cpu",
        "processes": dist.world,
        "n_train": len(train),
        "n_test": len(test),
        "epochs": args.epochs,
        "dtype": args.dtype,
        "projection_dim": args.projection_dim,
        "params_m": sum(v.numel() for v in states[0].values()) / 1e6,
        "wall_seconds": wall,
        "gradient_passes": tracin.stats["gradient_passes"],
        "seconds": tracin.stats["seconds"],
        "peak_gpu_gib": peak,
    }
    if args.store and args.topk and dist.is_main:
        import resource

        from lingtrace.analysis.common import SummedMatrix
        from lingtrace.analysis.topk import top_k
        from lingtrace.influence.store import load_scores

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t1 = time.perf_counter()
        scores = load_scores(Path(args.store))
        summed = SummedMatrix([scores.epoch(e) for e in scores.epochs])
        for largest in (True, False):
            top_k(summed, args.topk, largest=largest, block_rows=64)
        out["topk_seconds"] = time.perf_counter() - t1
        out["store_gib"] = sum(p.stat().st_size for p in Path(args.store).glob("epoch-*.safetensors")) / 2**30
        out["peak_rss_mib_before_topk"] = rss_before
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gathered = dist.gather(out)
    if dist.is_main:
        for o in gathered:
            print(json.dumps(o))
        if args.json:
            Path(args.json).write_text(json.dumps(gathered, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("LINGTRACE_NO_PROGRESS", "0")
    sys.exit(main())
