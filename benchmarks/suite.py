"""The benchmark suite: one command, one table.

    python benchmarks/suite.py                 # everything this machine can run (about 15-25 min on 2 CPU cores)
    python benchmarks/suite.py --quick         # smaller sizes, no captum (a few minutes)
    python benchmarks/suite.py --json out.json

Rows (each measured in this run, on this machine):

* per-example gradient passes against (N+M)*E, time over the floors, peak memory for N and 2N,
  speed-up over captum TracInCP with the largest score difference (``bench_influence.py``);
* scaling: influence time for growing N (M fixed) and growing M (N fixed), with the time per
  training example and per test example, which stay flat when the cost grows linearly;
* projection: top-100 overlap and Spearman against exact scores for several sketch sizes
  (``bench_projection.py``);
* on a GPU: the paper-scale run (XLM-R base architecture, 10K x 125 x 5, exact cosine) and the
  100K x 2,500 projected run (``bench_gpu.py``); reported as skipped without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_influence import _quiet, add_setting_args, build, factory_for, measure  # noqa: E402


def scaling(args, ns: list[int], ms: list[int]) -> list[dict]:
    """Influence time for each N (M = args.n_test) and each M (N = args.n_train), one process."""
    import tempfile

    from lingtrace.influence.tracin import TracIn

    rows = []
    big = argparse.Namespace(**{**vars(args), "n_train": max(ns + [args.n_train]), "n_test": max(ms + [args.n_test])})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok, tr, te, states = build(big, Path(tmp))
        factory = factory_for(model_dir)
        TracIn(factory, states[:1], batch_size=args.batch_size, show_progress=False).scores(tr.subset(range(8)), te.subset(range(4)), pad_id=tok.pad_token_id)
        for sweep, n, m in [("N", n, args.n_test) for n in ns] + [("M", args.n_train, m) for m in ms]:
            t0 = time.perf_counter()
            res = TracIn(factory, states, batch_size=args.batch_size, show_progress=False).scores(tr.subset(range(n)), te.subset(range(m)), pad_id=tok.pad_token_id)
            secs = time.perf_counter() - t0
            rows.append({"sweep": sweep, "n_train": n, "n_test": m, "seconds": secs, "passes": res.stats["gradient_passes"], **{f"s_{k}": v for k, v in res.stats["seconds"].items()}})
            print(f"  N={n:>6} M={m:>4}: {secs:7.2f} s  ({secs / n * 1000:.2f} ms per training example, {res.stats['gradient_passes']} passes)", flush=True)
    return rows


def run_script(name: str, extra: list[str]) -> dict | list | None:
    out = HERE / f".{name}.json"
    cmd = [sys.executable, str(HERE / f"{name}.py"), *extra, "--json", str(out)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, text=True)
    if proc.returncode != 0:
        return None
    data = json.loads(out.read_text())
    out.unlink(missing_ok=True)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_args(ap)
    ap.add_argument("--quick", action="store_true", help="N=500, M=20, no captum, fewer scaling points")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    _quiet()
    if args.quick:
        args.n_train, args.n_test = 500, 20
    table: list[tuple[str, str, str]] = []
    result: dict = {
        "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }

    print(f"== influence (N={args.n_train}, M={args.n_test}, E={args.epochs})", flush=True)
    core = measure(args, captum=not args.quick, memory=True, single=not args.quick)
    result["influence"] = core
    table += [
        ("per-example gradient passes", f"{core['gradient_passes']}", f"(N+M)*E = {core['expected_passes']}"),
        ("influence time", f"{core['influence_s']:.2f} s", f"N={core['n_train']}, M={core['n_test']}, E={core['epochs']}, {core['params_m']:.2f}M params"),
        ("time over the strict floor", f"{core['ratio_over_floor']:.2f}x", "floor: the same vmapped per-example gradient passes alone"),
    ]
    if "ratio_over_single_passes" in core:
        table.append(("time over one-example passes", f"{core['ratio_over_single_passes']:.2f}x", "(N+M)*E forward+backward at batch size 1"))
    table.append(("time over plain batched fwd+bwd", f"{core['ratio_over_batched']:.2f}x", "no per-example gradients at all"))
    table.append(("where the time goes", ", ".join(f"{k} {v:.1f}s" for k, v in core["breakdown_s"].items()), ""))
    if "memory" in core:
        a, b = core["memory"]
        table.append(("influence memory N -> 2N", f"{a['increase_mib']:.0f} -> {b['increase_mib']:.0f} MiB", f"peak over the resident set before; score matrices add {core['score_matrices_mib']:.1f} MiB"))
    if "speedup_vs_captum" in core:
        table.append(("speed-up over captum TracInCP", f"{core['speedup_vs_captum']:.1f}x", f"max score difference {core['captum_max_rel_diff']:.1e} (relative)"))

    ns = [args.n_train // 4, args.n_train // 2, args.n_train] if args.quick else [args.n_train // 4, args.n_train // 2, args.n_train, 2 * args.n_train]
    ms = [max(1, args.n_test // 2), args.n_test, 2 * args.n_test] if args.quick else [max(1, args.n_test // 2), args.n_test, 2 * args.n_test, 4 * args.n_test]
    print("== scaling", flush=True)
    rows = scaling(args, ns, ms)
    result["scaling"] = rows
    by_n = [r for r in rows if r["sweep"] == "N"]
    by_m = [r for r in rows if r["sweep"] == "M"]
    table.append(("scaling in N (M fixed)", " ".join(f"{r['n_train']}:{r['seconds']:.1f}s" for r in by_n), "s per N: " + " ".join(f"{r['seconds'] / r['n_train'] * 1e3:.2f}ms" for r in by_n)))
    table.append(("scaling in M (N fixed)", " ".join(f"{r['n_test']}:{r['seconds']:.1f}s" for r in by_m), "products: " + " ".join(f"{r.get('s_products', 0):.1f}s" for r in by_m)))

    print("== projection", flush=True)
    proj_args = ["--n-train", str(args.n_train), "--n-test", str(args.n_test), "--epochs", str(args.epochs), "--dims", "1024", "4096", "16384"]
    proj = run_script("bench_projection", proj_args)
    result["projection"] = proj
    if proj:
        for r in proj["rows"][1:]:
            table.append((f"projection D={r['dim']}", f"top-100 overlap {r['top_k_positive_overlap']:.2f}/{r['top_k_negative_overlap']:.2f}", f"Spearman {r['spearman_mean']:.3f}, {r['seconds']:.1f} s (exact {proj['rows'][0]['seconds']:.1f} s)"))

    if torch.cuda.is_available():
        print("== GPU", flush=True)
        paper = run_script("bench_gpu", [])
        large = run_script("bench_gpu", ["--n-train", "100000", "--n-test", "2500", "--projection-dim", "8192", "--epochs", "5"])
        result["gpu_paper_scale"], result["gpu_large_projected"] = paper, large
        for name, r in (("GPU paper scale 10Kx125x5 exact", paper), ("GPU 100Kx2500x5 projected", large)):
            if r:
                r = r[0]
                table.append((name, f"{r['wall_seconds']:.0f} s", f"{r['device']}, peak {r['peak_gpu_gib']:.1f} GiB, {r['gradient_passes']} passes"))
    else:
        table.append(("GPU paper scale / 100K x 2,500", "skipped", "no CUDA device on this machine"))

    width = max(len(r[0]) for r in table)
    print("\n" + "=" * 100)
    print(f"lingtrace benchmark suite - {result['machine']}, torch {result['torch']}, {result['date']}")
    print("=" * 100)
    for name, value, note in table:
        print(f"{name:<{width}}  {value:<40}  {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
