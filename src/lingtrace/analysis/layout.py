"""Which influence methods a run has, and where their analyses live in ``RUN/analysis/``.

Layout (``LAYOUT`` = 2)::

    analysis/summary.json           layout, methods (in order), reference_method, per method its folder
                                    and the fingerprint of what its analyses were computed from, the
                                    comparison's tables / not_applicable / notes, skipped stores
    analysis/METHOD/*.parquet       every analysis of one method (``tables.TABLES``)
    analysis/METHOD/summary.json    that method's summary (sizes, epochs, k, not_applicable, notes,
                                    influence settings and the store's ``method_info``)
    analysis/comparison/*.parquet   the tables comparing the methods (``tables.COMPARISON_TABLES``)

Runs analysed before several methods existed hold tracin's tables and summary in ``analysis/``
itself ("flat"): ``read_layout`` reads them as tracin's analyses (and no comparison); ``lingtrace
analyze`` rewrites them in this layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingtrace.analysis import tables as table_specs
from lingtrace.config.influence import DEFAULT_METHOD, method_names
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import read_meta
from lingtrace.io import read_json
from lingtrace.run import has_store

LAYOUT = 2
#: the folder of the tables comparing methods
COMPARISON = "comparison"


def method_order(methods) -> list[str]:
    """Registered methods in registry order (``tracin`` first), then any others sorted."""
    known = method_names()
    return sorted(methods, key=lambda m: (known.index(m) if m in known else len(known), m))


def discover_stores(influence_root: Path, comparison_reserved: bool = True) -> tuple[dict[str, Path], dict[str, str]]:
    """The complete score stores under ``RUN/influence/`` by method (``method_order``), and the stores
    left out (method -> why: incomplete, holding no checkpoint, or a folder whose meta.json names
    another method). Discovered from the folders, so a method added later is found without a change here.

    A store in ``influence/`` itself (runs made before several methods existed) is tracin's (taken, when
    complete, before a ``tracin/`` folder beside it). ``comparison_reserved``: refuse a store named
    ``COMPARISON``, the folder of the analyses' comparison tables (``analysis/comparison/``); the
    retraining experiments, which write no per-method folders, pass False."""
    found: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    candidates: list[tuple[str, Path]] = []
    if has_store(influence_root):
        candidates.append((DEFAULT_METHOD, influence_root))
    if influence_root.is_dir():
        candidates += [(p.name, p) for p in sorted(influence_root.iterdir()) if p.is_dir() and has_store(p)]
    for name, directory in candidates:
        if comparison_reserved and name == COMPARISON:
            raise LingtraceError(
                f"{directory} is a score store named {COMPARISON!r}, the name of the comparison tables' folder",
                "rename the method",
            )
        meta = read_meta(directory)
        if directory != influence_root and meta.method != name:
            skipped[name] = f"{directory}/meta.json names method {meta.method!r}, not its folder's name"
        elif not meta.complete:
            skipped[name] = f"the scores in {directory} are incomplete (rerun `lingtrace influence RUN` to finish them)"
        elif not meta.done_epochs:
            skipped[name] = f"the scores in {directory} hold no checkpoint"
        else:
            found.setdefault(name, directory)
    return {m: found[m] for m in method_order(found)}, skipped


@dataclass
class MethodAnalysis:
    """The analyses of one method: its folder and its ``summary.json``."""

    method: str
    directory: Path
    summary: dict[str, Any]


def read_layout(analysis_dir: Path) -> tuple[dict[str, Any], dict[str, MethodAnalysis]]:
    """``analysis/summary.json`` and the analyses of every method it lists (a flat, older layout reads
    as tracin's analyses with ``"flat": true`` in the summary)."""
    path = analysis_dir / table_specs.SUMMARY
    if not path.exists():
        raise LingtraceError(f"no analysis results in {analysis_dir}", "run `lingtrace analyze RUN` first")
    summary = read_json(path)
    if "methods" not in summary:  # analysed before several methods existed
        flat = {"layout": 1, "flat": True, "methods": [DEFAULT_METHOD], "reference_method": DEFAULT_METHOD, "comparison": {}}
        return flat, {DEFAULT_METHOD: MethodAnalysis(DEFAULT_METHOD, analysis_dir, summary)}
    if summary.get("layout") != LAYOUT:
        raise LingtraceError(
            f"{path} has analysis layout {summary.get('layout')!r}, this lingtrace reads layout {LAYOUT}",
            "rerun `lingtrace analyze RUN --overwrite`",
        )
    out = {}
    for method in summary["methods"]:
        folder = analysis_dir / summary.get("folders", {}).get(method, method)
        out[method] = MethodAnalysis(method, folder, read_json(folder / table_specs.SUMMARY))
    return summary, out
