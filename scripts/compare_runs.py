"""Compare two run directories file by file: tensors (safetensors) tensor by tensor and their header metadata
as a mapping, tables (parquet) cell by cell, JSON key by key, everything else byte by byte. Keys that hold timings, absolute paths or fingerprints are
reported apart from real differences (``--ignore`` adds key names).

    python scripts/compare_runs.py RUN_A RUN_B [--ignore KEY ...]

Prints one line per file: ``same``, ``differs`` (with where) or ``only in A/B``; exits 1 if any file differs
beyond the ignored keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: JSON keys whose values are timings, paths or fingerprints (they differ between any two runs)
IGNORED = {
    "seconds", "wall", "wall_seconds", "elapsed", "timings", "time", "times", "started", "finished", "date",
    "fingerprint", "path", "root", "source", "copied_from", "cache_dir", "version", "peak_rss", "rss",
    "train_seconds", "evaluate_seconds", "load_seconds", "part_seconds", "threads", "throughput", "stats",
}


def _json_diff(a, b, where: str, ignore: set[str], out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in ignore or key.endswith("_seconds") or key.endswith("_s"):
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'B' if key not in a else 'A'}")
            else:
                _json_diff(a[key], b[key], f"{where}.{key}", ignore, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _json_diff(x, y, f"{where}[{i}]", ignore, out)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
        out.append(f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}")


def compare(a: Path, b: Path, ignore: set[str]) -> tuple[list[str], int]:
    from safetensors.numpy import load_file

    lines, bad = [], 0
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    for rel in sorted(files_a | files_b):
        if rel not in files_a or rel not in files_b:
            lines.append(f"{rel}: only in {'A' if rel in files_a else 'B'}")
            bad += 1
            continue
        pa, pb = a / rel, b / rel
        if pa.read_bytes() == pb.read_bytes():
            lines.append(f"{rel}: same (bytes)")
            continue
        diffs: list[str] = []
        if rel.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(pa), framework="np") as fa, safe_open(str(pb), framework="np") as fb:
                if fa.metadata() != fb.metadata():  # a dict: its order in the header varies from run to run
                    diffs.append(f"metadata {fa.metadata()} != {fb.metadata()}")
            ta, tb = load_file(str(pa)), load_file(str(pb))
            for k in sorted(set(ta) | set(tb)):
                if k not in ta or k not in tb or ta[k].shape != tb[k].shape or not np.array_equal(ta[k], tb[k], equal_nan=True):
                    diffs.append(f"tensor {k}")
            kind = "tensors"
        elif rel.suffix == ".parquet":
            fa, fb = pd.read_parquet(pa), pd.read_parquet(pb)
            try:
                pd.testing.assert_frame_equal(fa, fb, check_exact=True)
            except AssertionError as e:
                diffs.append(str(e).splitlines()[0] + " " + " ".join(str(e).splitlines()[1:3]))
            kind = "table"
        elif rel.suffix == ".json":
            _json_diff(json.loads(pa.read_text()), json.loads(pb.read_text()), "", ignore, diffs)
            kind = "json"
        else:
            diffs.append("bytes differ")
            kind = "bytes"
        if diffs:
            bad += 1
            lines.append(f"{rel}: DIFFERS ({kind}): " + "; ".join(diffs[:6]) + (f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else ""))
        else:
            lines.append(f"{rel}: same ({kind}, ignoring {', '.join(sorted(ignore & _keys(pa)))})" if rel.suffix == ".json" else f"{rel}: same ({kind})")
    return lines, bad


def _keys(path: Path) -> set[str]:
    found: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                found.add(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(path.read_text()))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--ignore", nargs="*", default=[], help="more JSON keys to leave out")
    args = ap.parse_args()
    lines, bad = compare(args.a, args.b, IGNORED | set(args.ignore))
    print("\n".join(lines))
    print(f"{len(lines)} files, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
