"""Retraining experiments built on a finished run (``lingtrace experiment NAME RUN``).

``k-selection`` (faithfulness of the top-k, with a random control; paper Fig. 1, 6-8), ``zero-shot``
(retraining without a language; Fig. 4), ``imbalance`` (extra data for a language; Fig. 5), ``lds``
(the linear datamodeling score of every influence method present) and ``languages`` (cross-lingual
reliance measured by retraining without a language, or on language mixtures, against each method's
language-level picture). Each reuses the base run's data, config and scores and writes
``RUN/experiments/NAME/``; ``lds``, ``k-selection`` and ``languages`` share the noise-floor retrainings
of ``noise`` (``RUN/experiments/noise-floor/``).

Their shared machinery: ``base`` (the base run, read and never written), ``identity`` (an experiment's
config and the base run it was made from), ``subruns`` (the retrainings' life cycle), ``outputs`` (the
experiment folder's files) and ``html`` (the report section).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lingtrace.analysis.common import ALL
from lingtrace.config import EXPERIMENTS
from lingtrace.errors import LingtraceError
from lingtrace.run import RunDir

log = logging.getLogger(__name__)


def _module(name: str):
    from lingtrace.experiments import imbalance, kselect, languages, lds, zeroshot

    return {"k-selection": kselect, "zero-shot": zeroshot, "imbalance": imbalance, "lds": lds, "languages": languages}[name]


def run_experiment(name: str, run: RunDir, overrides: Sequence[str] = (), overwrite: bool = False, plan_only: bool = False) -> str:
    """Run experiment ``name`` (or ``all``) on the base run ``run``; returns a short text summary."""
    from lingtrace.experiments.base import load_base
    from lingtrace.experiments.identity import resolve_config
    from lingtrace.importing import is_imported_without_recipe

    names = list(EXPERIMENTS) if name == ALL else [name]
    if name != ALL and name not in EXPERIMENTS:
        raise LingtraceError(f"unknown experiment {name!r}", f"choose one of {', '.join(EXPERIMENTS)} or all")
    if not plan_only and is_imported_without_recipe(run):
        # every experiment retrains the model: that needs to know how the checkpoints were trained
        raise LingtraceError(
            f"{run.root} was imported from checkpoints trained elsewhere and has no training recipe, and `lingtrace experiment {name}` retrains the model",
            "import again with --training-recipe and the model.name and train.* settings the checkpoints were trained with (see README: Analyse a model you already trained)",
        )
    base = load_base(run)
    lines = []
    for n in names:
        cfg = resolve_config(run, n, overrides)
        mod = _module(n)
        out = mod.run(base, cfg, overwrite=overwrite, plan_only=plan_only)
        if plan_only:
            plan = out["plan"]
            lines.append(f"{n}: {len(plan)} retraining(s)")
            lines.append(plan.to_string(index=False))
            lines += out.get("also", [])
        else:
            d = run.experiment_dir(n)
            lines += [f"{n}: {r}" for r in out.get("readings", [])]
            lines.append(f"{n}: {out['cost']['retrainings']} retraining(s); results in {d} (section: {run.experiment_section(n)})")
    return "\n".join(lines)
