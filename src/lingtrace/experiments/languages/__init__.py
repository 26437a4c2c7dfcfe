"""Languages: is "X relies on Y" true? Cross-lingual reliance measured by retraining, and how well each
influence method's language-level picture (and the paper's Fig. 2 top-k shares) matches it.

Designs (``experiment.languages_design``):

* ``leave-one-out`` (default): for each training language Y of ``experiment.languages_removed`` (empty =
  all of data.languages) one retraining with the base run's recipe and seed without Y's training and dev
  examples (the zero-shot change, ``data.exclude_lang = Y``). The effect on selected test example i is
  Δ_i(Y) = margin_base(i) - margin_without_Y(i) (correct-class margins; also p_label and loss = -log p_label).
  The zero-shot experiment's retraining without Y is reused when it is the same retraining
  (``plan.reusable_zero_shot``; the plan table says which).
* ``mixture``: ``experiment.languages_mixtures`` (m) retrainings, each keeping a random fraction of every
  varied language's training examples, each fraction drawn independently from
  [``experiment.languages_min_fraction``, 1] with experiment.seed (``plan.draw_mixture``). Per test
  example, least squares of its margin on the kept fractions (one coefficient per varied language and an
  intercept) gives β_i(Y) and its standard error: the margin per unit fraction, so removing all of Y lowers
  the margin by about β_i(Y) under the linear model.

Every sub-run keeps only the kept training data and the final model's predictions on the selected test
examples (no influence; checkpoints pruned). Per (test language X, training language Y) the mean effect
over X's selected test examples gets a bootstrap 95% interval (test examples resampled,
``experiment.lds_resamples`` draws, seeded) and X's seed-noise floor from the shared noise-floor
retrainings (``noise``): the root mean square over the seeds of the mean over X's examples of
margin_base - margin_seed. A cell is within noise when its interval includes 0 or |mean| <= the floor
(mixture: or |mean| <= 1.96 times the fit's standard error of X's mean margin).

Each method with a complete store predicts the effect of removing Y on i as the sum of its summed score
S_ij over Y's training examples j; the paper's Fig. 2 reading (Y's share of i's top-k, k =
experiment.top_k or analysis.k) is a second predictor. Against the measured effects (``stats``): the
language-level LDS (per test example, Spearman across Y; mean with a bootstrap interval), the Pearson and
Spearman correlation of the (X x Y) cell matrices, and whether each test language's top language (and top
language apart from its own) is the measured one.

The package: ``settings``, ``columns``, ``plan`` (the retrainings), ``measured`` (their margins and the
effects), ``stats`` (pure functions) and ``section`` (figures, readings, HTML); ``run`` and ``finish``
tie them together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.common import language_order
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.experiments import noise, outputs, subruns
from lingtrace.experiments.base import Base, methods_present
from lingtrace.experiments.identity import check_experiment_config, retraining_identity
from lingtrace.experiments.languages import section, stats
from lingtrace.experiments.languages.columns import EFFECTS, MARGINS, MIXTURES, PLAN, PREDICTED, TABLES
from lingtrace.experiments.languages.measured import effects_table, margins_table, mixtures_table
from lingtrace.experiments.languages.plan import (
    Plan,
    build,
    describe_reuse,
    draw_mixture,
    loo_name,
    mixture_name,
    reusable_zero_shot,
)
from lingtrace.experiments.languages.settings import (
    LEAVE_ONE_OUT,
    MIXTURE,
    NAME,
    PREDICTORS,
    REPRODUCES,
    SHARE,
    SUMMED,
    TITLE,
    design,
    removed_languages,
    result_settings,
    retraining_settings,
    top_k,
)
from lingtrace.run import RunDir, read_split

__all__ = [
    "LEAVE_ONE_OUT",
    "MIXTURE",
    "NAME",
    "PREDICTORS",
    "REPRODUCES",
    "SHARE",
    "SUMMED",
    "TABLES",
    "TITLE",
    "Results",
    "build",
    "design",
    "draw_mixture",
    "effects_table",
    "finish",
    "loo_name",
    "mixture_name",
    "removed_languages",
    "result_settings",
    "retraining_settings",
    "reusable_zero_shot",
    "run",
    "stats",
]


@dataclass
class Results:
    design: str
    languages: list[str]
    test_order: list[str]
    margins: pd.DataFrame
    mixtures: pd.DataFrame | None
    effects: pd.DataFrame
    matrix: pd.DataFrame
    predicted: pd.DataFrame
    faithfulness: pd.DataFrame
    readings: pd.DataFrame


def run(base: Base, cfg: Config, overwrite: bool = False, plan_only: bool = False) -> dict[str, Any]:
    exp_dir = base.run.experiment_dir(NAME)
    plan = build(base, cfg)
    if plan_only:
        return {"experiment": NAME, "plan": plan.table, "also": describe_reuse(plan)}
    methods = methods_present(base.run)
    # another method's scores add rows, not retrainings: only the base run's data, training and selection are guarded
    check_experiment_config(exp_dir, NAME, retraining_settings(cfg), result_settings(cfg), base, cfg.experiment, overwrite, identity=retraining_identity(base))
    outputs.write_table(exp_dir, "plan", plan.table, PLAN)
    subs = subruns.run_all(plan.specs, base, exp_dir, overwrite, desc=NAME)
    floor = noise.ensure(base, cfg, overwrite)
    return finish(base, cfg, exp_dir, methods, plan, subs, floor)


# ---------------------------------------------------------------- the results


def results(
    base: Base, cfg: Config, plan: Plan, runs: dict[str, RunDir], methods: list[str], floor: noise.NoiseFloor, base_preds: pd.DataFrame
) -> Results:
    x = cfg.experiment
    n_boot, seed = int(x.lds_resamples), int(x.seed)
    selected = base.selected
    uids = selected[schema.UID].astype(str).tolist()
    test_langs = selected[schema.LANG].astype(str).tolist()
    test_order = language_order(base.languages, test_langs)
    margins = margins_table(runs, plan.location, plan.names, uids)
    mixtures = mixtures_table(runs, plan, read_split(base.run, "train")) if plan.design == MIXTURE else None
    effects, fit_se = effects_table(plan, margins, mixtures, selected, base_preds)
    matrix = stats.matrix_table(effects, plan.design, test_order, plan.languages, stats.noise_by_language(floor.table, test_order), n_boot, seed, fit_se)
    within = {(r.test_lang, r.train_lang): bool(r.within_noise) for r in matrix.itertuples()}
    measured = effects.pivot(index="test_uid", columns="train_lang", values="delta_margin").reindex(index=uids, columns=plan.languages).to_numpy(dtype=np.float64)
    measured_cells = matrix.set_index(["test_lang", "train_lang"])["mean"]
    train_langs = base.train[schema.LANG].astype(str).tolist()
    fractions = pd.Series(train_langs).value_counts(normalize=True) * 100.0
    k = top_k(cfg)
    faith_rows, reading_rows, predicted_rows = [], [], []
    for method in methods:
        total = base.method_total(method)
        predictors = {SUMMED: stats.predicted_sums(total, train_langs, plan.languages), SHARE: stats.topk_shares(total, train_langs, k, plan.languages)}
        for predictor, values in predictors.items():
            row, rd = stats.faithfulness(method, predictor, values, measured, test_langs, test_order, plan.languages, within, n_boot, seed)
            faith_rows.append(row)
            reading_rows += rd
        sums = stats.cell_means(predictors[SUMMED], test_langs, test_order)
        shares = stats.cell_means(predictors[SHARE], test_langs, test_order)
        for r, xl in enumerate(test_order):
            for c, y in enumerate(plan.languages):
                predicted_rows.append(
                    {
                        "method": method,
                        "test_lang": xl,
                        "train_lang": y,
                        "n_test": int(sum(t == xl for t in test_langs)),
                        "predicted": float(sums[r, c]),
                        "share": float(shares[r, c]),
                        "train_fraction": float(fractions.get(y, 0.0)),
                        "measured": float(measured_cells.loc[(xl, y)]),
                    }
                )
    faith, readings = stats.faithfulness_tables(faith_rows, reading_rows)
    return Results(plan.design, plan.languages, test_order, margins, mixtures, effects, matrix, pd.DataFrame(predicted_rows, columns=list(PREDICTED)), faith, readings)


def finish(base: Base, cfg: Config, exp_dir: Path, methods: list[str], plan: Plan, subs: dict, floor: noise.NoiseFloor) -> dict[str, Any]:
    """The result tables, figures and section of the finished retrainings; returns the summary."""
    runs = {name: subs[name] if name in subs else plan.reused[name] for name in plan.names}
    base_preds = noise.base_predictions(base, base.run.experiment_dir(noise.NAME)).drop_duplicates(schema.UID)
    base_preds = base_preds.set_index(base_preds[schema.UID].astype(str))
    res = results(base, cfg, plan, runs, methods, floor, base_preds)
    tables = _write_tables(exp_dir, res)
    pngs = {
        "measured": outputs.write_figure(exp_dir, "languages_measured", section.measured_figure(res.matrix, res.test_order, res.languages, res.design)),
        "methods": outputs.write_figure(exp_dir, "languages_methods", section.methods_figure(res.predicted, methods, res.test_order, res.languages)),
    }
    cost = subruns.cost_summary({**subs, **{f"{noise.NAME}/{k}": v for k, v in floor.subs.items()}}, 0)
    verdict = section.verdict(res.faithfulness, res.matrix)
    readings = [
        *section.language_readings(res.matrix, res.readings, res.design, methods, res.test_order),
        *section.method_readings(res.faithfulness),
        verdict,
        noise.describe(floor),
    ]
    cost_text = _cost_text(plan, floor, cost, len(res.effects["test_uid"].unique()), methods)
    notes = _notes(res.design, top_k(cfg), len(plan.languages))
    summary = outputs.write_result(
        exp_dir,
        sys.modules[__name__],
        cfg,
        base,
        {"readings": readings, "cost": cost_text, "notes": notes, "body": section.body(pngs, res, tables, floor, verdict)},
        design=res.design,
        languages=res.languages,
        test_languages=res.test_order,
        methods=methods,
        n_test=int(res.effects["test_uid"].nunique()),
        reused={name: plan.location[name] for name in plan.reused},
        matrix={x: {y: _cell(res.matrix, x, y) for y in res.languages} for x in res.test_order},
        faithfulness=res.faithfulness.to_dict(orient="records"),
        supported=res.faithfulness[(res.faithfulness["predictor"] == SUMMED) & (res.faithfulness["lds_ci_low"] > 0)]["method"].tolist(),
        verdict=verdict,
        noise_floor=res.matrix.drop_duplicates("test_lang").set_index("test_lang")["noise"].to_dict(),
        cost={**cost, "reused": len(plan.reused), "note": cost_text},
        tables=tables,
        figures=[f"{outputs.FIGURES_DIR}/languages_measured.png", f"{outputs.FIGURES_DIR}/languages_methods.png"],
    )
    return summary


def _cell(matrix: pd.DataFrame, x: str, y: str) -> dict[str, Any]:
    row = matrix[(matrix["test_lang"] == x) & (matrix["train_lang"] == y)].iloc[0]
    return {k: row[k] for k in ("mean", "ci_low", "ci_high", "fit_se", "noise", "within_noise", "n_test")}


def _write_tables(exp_dir: Path, res: Results) -> list[str]:
    """Write the result tables; returns every table's file name (``plan``'s was written by ``run``)."""
    tables = []
    if res.mixtures is not None:
        tables.append(outputs.write_table(exp_dir, "mixtures", res.mixtures, MIXTURES))
    else:
        (exp_dir / "mixtures.parquet").unlink(missing_ok=True)  # of an earlier mixture design
    tables += [
        outputs.write_table(exp_dir, "margins", res.margins, MARGINS),
        outputs.write_table(exp_dir, "effects", res.effects, EFFECTS),
        outputs.write_table(exp_dir, "matrix", res.matrix, TABLES["matrix"]),
        outputs.write_table(exp_dir, "predicted", res.predicted, PREDICTED),
        outputs.write_table(exp_dir, "faithfulness", res.faithfulness, TABLES["faithfulness"]),
        outputs.write_table(exp_dir, "readings", res.readings, TABLES["readings"]),
        "plan.parquet",
    ]
    return tables


def _cost_text(plan: Plan, floor: noise.NoiseFloor, cost: dict[str, Any], n_test: int, methods: list[str]) -> str:
    if plan.design == LEAVE_ONE_OUT:
        what = f"{len(plan.names)} leave-one-out retrainings (one without each of {', '.join(plan.languages)}"
        what += f"; {len(plan.reused)} reused from the zero-shot experiment: {', '.join(plan.location[n] for n in plan.reused)})" if plan.reused else ")"
    else:
        what = f"{len(plan.names)} mixture retrainings (a random fraction of each of {', '.join(plan.languages)} kept)"
    text = (
        f"{what} and {len(floor.seeds)} on the unchanged training set with other seeds (the noise floor, shared with lds and k-selection), "
        f"all with the base run's model, training config and seed; no influence runs; {n_test} test examples; {len(methods)} method(s) compared."
    )
    if cost.get("train_seconds_mean"):
        text += f" Training took {cost['train_seconds_mean']:.0f} s per retraining on average here."
    return text


def _notes(kind: str, k: int, n_langs: int) -> list[str]:
    notes = [
        "Effect of removing a training language Y on a test example: the drop of its correct-class margin (gold logit minus the "
        "logsumexp of the other logits). Predicted effect of a method: the sum of its summed-over-checkpoints scores of the test example "
        f"over Y's training examples; Fig. 2 reading: Y's share of the test example's top-{k} most positively influential examples.",
        f"Language-level LDS: per test example, the Spearman correlation across the {n_langs} training languages between a predictor "
        "and the measured effects; its interval resamples the test examples with the retrainings held fixed, so it leaves out the "
        "noise the test examples share (see the noise floor and the within-noise cells).",
    ]
    if kind == MIXTURE:
        notes.append(
            "Mixture design: the effect is the least-squares coefficient of Y's kept fraction (margin per unit fraction, so removing all "
            "of Y is read as the coefficient under the linear model); the fit's standard error of a test language's mean margin "
            "(fit_se) is the uncertainty from the retrainings themselves."
        )
    else:
        notes.append("Leave-one-out removes Y's training and dev examples (the zero-shot change), so early stopping sees no Y data either.")
    return notes
