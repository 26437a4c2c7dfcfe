"""k selection / faithfulness (paper Fig. 1 and 6-8), with a random control the paper lacks, per method.

For every influence method present in the base run (``RUN/influence/METHOD/``, discovered), every group
of test examples (``experiment.k_grouping``: one test example, a test language, or all chosen test
examples), every k of ``experiment.ks`` and every direction of ``experiment.k_directions``, the model is
retrained (base config and seed) without:

* ``positive``: the union over the group's test examples of their top-k training examples by the
  method's summed score in the base run (largest scores);
* ``negative``: the same with the k smallest scores;
* ``random`` (control): as many training examples as the ``positive`` removal of the same group and k,
  drawn uniformly from the whole training set. The draw is the first n entries of one permutation of
  the training rows, seeded by ``(experiment.seed, group name)`` only: it never sees the scores (it may
  overlap the influential sets by chance, as a random draw would), and it is nested across k like the
  top-k sets are.

A removal whose training set is identical to one already planned (the random controls of methods whose
positive removals have the same size, or two methods agreeing on a top-k) reuses that retraining.
tracin's sub-runs keep the names ``GROUP-DIRECTION-kK``; another method's are ``GROUP-METHOD-DIRECTION-kK``.
Every figure is shown against the noise floor (``noise``): the same training set retrained with other
seeds, and the paired difference against the random control that the chosen test examples can detect.

The measured change for a test example is ``p_retrained - p_base``: the probability of its gold label
under the retrained final model minus under the base final model (both predicted the same way on the
same example). Test examples are the base run's selected ones, optionally subsampled per language
(``experiment.k_test_per_lang``, seeded).

"Levels off": with the mean changes m(k) over the sweep and the anchor m(0) = 0, range R = max - min
of all of them; the change levels off at the smallest k after which no later mean differs from m(k) by
more than ``experiment.level_tolerance`` % of R. When only the largest k qualifies, the change has not
levelled off within the sweep (reported as empty).

The package: ``settings`` (name, settings), ``columns`` (the tables' columns), ``plan`` (the removals),
``retrainings`` (their sub-runs and the changes they made), ``stats`` (the statistics) and ``section``
(figure, prose and HTML); ``run`` and ``finish`` tie them together.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from lingtrace.config import Config
from lingtrace.experiments import noise, outputs, subruns
from lingtrace.experiments.base import Base, methods_present
from lingtrace.experiments.identity import check_experiment_config, retraining_identity
from lingtrace.experiments.kselect import section, stats
from lingtrace.experiments.kselect.columns import CHANGES, FAITHFULNESS, LEVELS_OFF, PLAN
from lingtrace.experiments.kselect.plan import (
    Group,
    Removal,
    choose_tests,
    make_groups,
    plan_removals,
    random_removal,
    topk_union,
)
from lingtrace.experiments.kselect.retrainings import base_predictions, build, changes_table
from lingtrace.experiments.kselect.settings import (
    NAME,
    REPRODUCES,
    TITLE,
    result_settings,
    retraining_settings,
)
from lingtrace.experiments.kselect.stats import levels_off

#: what the other modules and the tests use (``outputs.write_result`` reads the settings and titles)
__all__ = [
    "CHANGES",
    "NAME",
    "REPRODUCES",
    "TITLE",
    "Group",
    "build",
    "choose_tests",
    "finish",
    "levels_off",
    "make_groups",
    "plan_removals",
    "random_removal",
    "result_settings",
    "retraining_settings",
    "run",
    "topk_union",
]


def run(base: Base, cfg: Config, overwrite: bool = False, plan_only: bool = False) -> dict[str, Any]:
    exp_dir = base.run.experiment_dir(NAME)
    methods = methods_present(base.run)
    removals, specs, plan = build(base, cfg, methods)
    st = retraining_settings(cfg)
    if plan_only:
        seeds = noise.noise_seeds(cfg)
        return {"experiment": NAME, "plan": plan, "also": [f"{NAME}: + {len(seeds)} noise-floor retraining(s) (seeds {', '.join(map(str, seeds))}), shared with lds"] if seeds else []}
    # another method's scores add retrainings; changed scores change a removal, which its sub-run's identity refuses
    check_experiment_config(exp_dir, NAME, st, result_settings(cfg), base, cfg.experiment, overwrite, identity=retraining_identity(base))
    outputs.write_table(exp_dir, "plan", plan, PLAN)
    chosen_rows = sorted({i for r in removals for i in r.group.rows})
    chosen = base.selected.iloc[chosen_rows].reset_index(drop=True)
    base_preds = base_predictions(base, exp_dir, chosen)
    subs = subruns.run_all(specs, base, exp_dir, overwrite, desc=NAME)
    floor = noise.ensure(base, cfg, overwrite)
    return finish(base, cfg, exp_dir, removals, plan, subs, base_preds, floor)


def finish(
    base: Base, cfg: Config, exp_dir: Path, removals: list[Removal], plan: pd.DataFrame, subs: dict, base_preds: pd.DataFrame, floor: noise.NoiseFloor
) -> dict[str, Any]:
    """The result tables, figure and section of the finished retrainings; returns the summary."""
    st = retraining_settings(cfg)
    changes = changes_table(removals, subs, base_preds, dict(zip(plan["sub_run"], plan["n_removed"])))
    res = stats.results(changes, floor, st["k_languages"], cfg.experiment.level_tolerance)
    tables = _write_tables(exp_dir, res)
    png = outputs.write_figure(exp_dir, "faithfulness", section.figure(res.faithfulness, res.levels_off, res.floor_row))
    cost = subruns.cost_summary({**subs, **{f"{noise.NAME}/{k}": v for k, v in floor.subs.items()}}, 0)
    methods = list(dict.fromkeys(r.method for r in removals))
    prose = section.prose(res, plan, methods, st, floor, cost["train_seconds_mean"])
    return outputs.write_result(
        exp_dir,
        sys.modules[__name__],
        cfg,
        base,
        {**prose, "body": section.body(png, res, tables)},
        methods=methods,
        n_test=len(res.chosen_uids),
        n_groups=int(plan["group"].nunique()),
        levels_off=stats.levels_off_by_method(res.levels_off, methods),
        mean_delta=stats.mean_delta_by_method(res.faithfulness, methods, st["k_directions"]),
        noise_floor=res.floor_row,
        cost={**cost, "grouping": st["k_grouping"], "note": prose["cost"]},
        tables=tables,
        figures=[f"{outputs.FIGURES_DIR}/faithfulness.png"],
    )


def _write_tables(exp_dir: Path, res: stats.Results) -> list[str]:
    """Write the result tables; returns every table's file name (``plan``'s was written by ``run``)."""
    return [
        outputs.write_table(exp_dir, "changes", res.changes, CHANGES),
        outputs.write_table(exp_dir, "faithfulness", res.faithfulness, FAITHFULNESS),
        outputs.write_table(exp_dir, "levels_off", res.levels_off, LEVELS_OFF),
        "plan.parquet",
    ]
