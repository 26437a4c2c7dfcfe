"""Accuracy of the random projection (CountSketch) against exact TracIn scores.

The same tiny XLM-R setting as ``bench_influence.py`` (real emoji names in 5 languages, N training,
M test examples, E checkpoints). For each sketch dimension D it prints, over the test examples:
the mean overlap of the top-100 most positive (and most negative) training examples with the exact
ones, the mean Spearman correlation of the whole ranking, the largest absolute error of the summed
cosine score, and the time, next to the exact computation measured in the same run.

    python benchmarks/bench_projection.py
    python benchmarks/bench_projection.py --dims 1024 4096 16384 65536 --n-train 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_influence import _quiet, add_setting_args, build, factory_for  # noqa: E402


def topk_overlap(exact: np.ndarray, approx: np.ndarray, k: int, largest: bool) -> float:
    sign = -1 if largest else 1
    out = []
    for a, b in zip(exact, approx):
        ta = set(np.argsort(sign * a, kind="stable")[:k].tolist())
        tb = set(np.argsort(sign * b, kind="stable")[:k].tolist())
        out.append(len(ta & tb) / k)
    return float(np.mean(out))


def compare(exact: np.ndarray, approx: np.ndarray, k: int = 100) -> dict[str, float]:
    rho = [spearmanr(a, b).statistic for a, b in zip(exact, approx)]
    return {
        "top_k_positive_overlap": topk_overlap(exact, approx, k, True),
        "top_k_negative_overlap": topk_overlap(exact, approx, k, False),
        "spearman_mean": float(np.mean(rho)),
        "spearman_min": float(np.min(rho)),
        "max_abs_error": float(np.abs(exact - approx).max()),
    }


def main() -> None:
    from lingtrace.influence.tracin import TracIn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_args(ap)
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok, tr, te, states = build(args, Path(tmp))
        factory = factory_for(model_dir)
        nparams = sum(p.numel() for p in factory(states[0]).parameters())
        print(f"tiny XLM-R {nparams / 1e6:.2f}M parameters; N={len(tr)}, M={len(te)}, E={len(states)}; top-{args.k} overlap and Spearman per test example, averaged")
        t0 = time.perf_counter()
        exact = TracIn(factory, states, batch_size=args.batch_size, show_progress=False).scores(tr, te, pad_id=tok.pad_token_id).total
        t_exact = time.perf_counter() - t0
        rows = [{"dim": "exact", "seconds": t_exact}]
        print(f"{'D':>8} {'top-k +':>8} {'top-k -':>8} {'Spearman':>9} {'min rho':>8} {'max |err|':>10} {'seconds':>8}")
        print(f"{'exact':>8} {1:>8.3f} {1:>8.3f} {1:>9.3f} {1:>8.3f} {0:>10.4f} {t_exact:>8.2f}")
        for dim in args.dims:
            t0 = time.perf_counter()
            approx = TracIn(factory, states, batch_size=args.batch_size, projection_dim=dim, projection_seed=args.seed, show_progress=False).scores(tr, te, pad_id=tok.pad_token_id).total
            secs = time.perf_counter() - t0
            c = compare(exact, approx, args.k)
            rows.append({"dim": dim, "seconds": secs, **c})
            print(
                f"{dim:>8} {c['top_k_positive_overlap']:>8.3f} {c['top_k_negative_overlap']:>8.3f} {c['spearman_mean']:>9.3f} "
                f"{c['spearman_min']:>8.3f} {c['max_abs_error']:>10.4f} {secs:>8.2f}"
            )
        if args.json:
            Path(args.json).write_text(json.dumps({"params_m": nparams / 1e6, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
