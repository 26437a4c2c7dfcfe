"""The linear datamodeling score (LDS; Park et al. 2023, TRAK): how well each method's scores predict retraining.

Plan: ``experiment.lds_subsets`` (m) random subsets of the base run's training set, each holding
``experiment.lds_fraction`` (alpha) of it. Subset j is drawn without replacement with the seed
``(experiment.seed, "lds-subset", j)`` alone, so it never sees the scores and a larger m keeps the
earlier subsets. Each subset is a sub-run ``runs/subset-JJJ/`` retrained with the base run's recipe and
seed (its ``data/train.parquet`` is exactly the kept examples, in the base run's order).

Measured: for every selected test example i and subset j, the retrained final model's correct-class
margin ``f_ij`` (gold logit minus the logsumexp of the other logits).

Predicted, per method M present in ``RUN/influence/`` (discovered, so a method added later is scored
from the same retrainings): ``g_ij = sum of M's summed score tau(i, z) over the training examples z kept
in subset j``.

LDS of M on test example i: the Spearman correlation over the m subsets between ``g_i.`` and ``f_i.``.
The tables give its mean over the test examples, the standard error, a bootstrap 95% interval
(test examples resampled, ``experiment.lds_resamples`` draws, seeded) and, for the power of the
setting, a permutation null: the mean LDS when the subsets' margins are shuffled (one permutation for
all test examples, which keeps their dependence), whose spread says how large a mean LDS this number of
subsets and test examples can tell from zero. The noise floor (``noise``) bounds what any method can
reach: with the margin's seed spread s_i (unchanged data) and its spread over the subsets t_i, the
share of t_i^2 a perfect predictor of the expected margin could explain is 1 - s_i^2 / t_i^2, so its
correlation is at most ``sqrt(max(0, 1 - s_i^2 / t_i^2))`` (the ceiling; s_i is measured at the full
training set, an approximation for the subsets).
"""

from __future__ import annotations

import logging
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lingtrace import evaluation
from lingtrace.analysis.common import ALL
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.experiments import html as fragments
from lingtrace.experiments import noise, outputs, subruns
from lingtrace.experiments.base import Base, methods_present
from lingtrace.experiments.identity import check_experiment_config, retraining_identity
from lingtrace.report.html import pvalue, verdict_paragraph
from lingtrace.run import read_selection, read_split

log = logging.getLogger(__name__)

NAME = "lds"
TITLE = "Faithfulness: the linear datamodeling score of every method"
REPRODUCES = "Park et al. 2023 (LDS), not in the paper"
#: two-sided 5% and 80% power quantiles of the standard normal (power of the permutation test)
Z_95, Z_80 = 1.959964, 0.841621

PLAN = {
    "sub_run": "sub-run directory under experiments/",
    "purpose": "lds subset (a random subset of the training set) or noise floor (the unchanged training set, another seed)",
    "train_seed": "training seed of the retraining",
    "n_train": "training examples it is trained on",
    "n_removed": "training examples of the base run left out",
}
MARGINS = {
    "subset": "subset index j (0-based)",
    "sub_run": "sub-run directory under runs/",
    "test_uid": "the selected test example",
    "test_lang": "its language",
    "label": "its gold label (class index)",
    "margin": "correct-class margin of the model retrained on subset j: gold logit - logsumexp of the other logits",
    "p_label": "probability of the gold label under that model",
}
EXAMPLES = {
    "method": "influence method (a store under RUN/influence/)",
    "test_uid": "the selected test example",
    "test_lang": "its language",
    "lds": "Spearman correlation over the subsets between the method's predicted sum of scores and the measured margin (empty when either is constant)",
    "margin_sd_subsets": "standard deviation of the measured margin over the subsets",
    "margin_sd_seed": "standard deviation of the margin over the models of the unchanged training set (base + noise seeds; empty without them)",
    "ceiling": "sqrt(max(0, 1 - margin_sd_seed^2 / margin_sd_subsets^2)): the correlation a perfect predictor of the expected margin could reach (empty without noise seeds)",
}
LDS = {
    "method": "influence method",
    "test_lang": "test language, or all",
    "n_test": "test examples with a defined LDS",
    "n_subsets": "subsets (retrainings) behind each correlation",
    "mean_lds": "mean LDS over the test examples",
    "sem_lds": "standard error of the mean (std with ddof 1 / sqrt(n_test))",
    "ci_low": "bootstrap 95% interval of the mean (test examples resampled, subsets held fixed): lower end",
    "ci_high": "upper end",
    "null_sd": "standard deviation of the mean LDS under the permutation null (margins shuffled over the subsets)",
    "p_vs_null": "two-sided permutation p-value of the mean LDS against zero",
    "detectable_lds": "(1.96 + 0.84) * null_sd: the true mean LDS this setting detects with 80% power at the 5% level",
    "mean_ceiling": "mean over the test examples of the noise ceiling (empty without noise seeds)",
}
TABLES = {"plan": PLAN, "margins": MARGINS, "lds_examples": EXAMPLES, "lds": LDS}


def retraining_settings(cfg: Config) -> dict[str, Any]:
    """What the retrainings depend on (a change is refused unless --overwrite); m is not: more subsets add."""
    return {"lds_fraction": float(cfg.experiment.lds_fraction), "seed": int(cfg.experiment.seed)}


def result_settings(cfg: Config) -> dict[str, Any]:
    x = cfg.experiment
    return {"lds_subsets": int(x.lds_subsets), "lds_resamples": int(x.lds_resamples), "noise_seeds": int(x.noise_seeds)}


# ---------------------------------------------------------------- statistics (pure functions)


def draw_subsets(n_train: int, m: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean masks [m x n_train]: subset j keeps round(fraction * n_train) training rows drawn without
    replacement with the seed (seed, "lds-subset", j) alone."""
    size = int(round(fraction * n_train))
    if not 1 <= size < n_train:
        raise LingtraceError(
            f"experiment.lds_fraction={fraction} keeps {size} of the {n_train} training examples",
            "choose a fraction that keeps at least one example and leaves at least one out",
        )
    masks = np.zeros((m, n_train), dtype=bool)
    for j in range(m):
        rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(b"lds-subset"), j])
        masks[j, rng.choice(n_train, size=size, replace=False)] = True
    return masks


def predicted_sums(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[test x subsets]: per test example and subset, the sum of its scores over the kept training examples."""
    return np.asarray(scores, dtype=np.float64) @ np.asarray(masks, dtype=np.float64).T


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    """Per row: the ranks of ``values`` (average ranks for ties) minus their mean."""
    from scipy.stats import rankdata

    ranks = rankdata(np.asarray(values, dtype=np.float64), axis=1)
    return ranks - ranks.mean(axis=1, keepdims=True)


def lds_per_example(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Per row: the Spearman correlation between ``predicted[i]`` and ``measured[i]`` (average ranks for
    ties; NaN when a row is constant). Both [test x subsets]."""
    a, b = _centred_ranks(predicted), _centred_ranks(measured)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a * b).sum(axis=1) / denom
    out[denom == 0] = np.nan
    return out


def bootstrap_interval(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped), resampling with ``seed``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(b"lds-bootstrap")])
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def permutation_null(predicted: np.ndarray, measured: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """The mean LDS over the rows when the subsets' measured margins are shuffled (the same permutation
    for every row), ``n_perm`` times: the distribution of the mean LDS of a predictor unrelated to retraining.

    Ranks are taken once: the ranks of a permuted row are the permuted ranks, and a permutation leaves
    the rows' sums of squares unchanged."""
    rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(b"lds-permutation")])
    perms = np.stack([rng.permutation(measured.shape[1]) for _ in range(n_perm)])
    a, b = _centred_ranks(predicted), _centred_ranks(measured)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    defined = denom > 0
    out = np.full(n_perm, np.nan)
    if not defined.any():
        return out
    a, b, denom = a[defined], b[defined], denom[defined]
    block = max(1, (8 << 20) // max(1, b.size))  # about 64 MiB of permuted ranks at a time
    for start in range(0, n_perm, block):
        shuffled = b[:, perms[start : start + block]]  # [rows x perms x subsets]
        out[start : start + block] = (np.einsum("nm,npm->np", a, shuffled) / denom[:, None]).mean(axis=0)
    return out


def summary_row(lds: np.ndarray, null: np.ndarray, ceiling: np.ndarray, n_subsets: int, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean, standard error, bootstrap interval, permutation test and power of one set of per-example LDS."""
    v = lds[np.isfinite(lds)]
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    low, high = bootstrap_interval(v, n_boot, seed)
    null_sd = float(np.std(null, ddof=1)) if len(null) > 1 else float("nan")
    p = float((1 + np.sum(np.abs(null) >= abs(mean))) / (1 + len(null))) if n and len(null) else float("nan")
    ceil = ceiling[np.isfinite(ceiling)]
    return {
        "n_test": n,
        "n_subsets": int(n_subsets),
        "mean_lds": mean,
        "sem_lds": float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "null_sd": null_sd,
        "p_vs_null": p,
        "detectable_lds": (Z_95 + Z_80) * null_sd,
        "mean_ceiling": float(ceil.mean()) if len(ceil) else float("nan"),
    }


def noise_ceiling(sd_seed: np.ndarray, sd_subsets: np.ndarray) -> np.ndarray:
    """sqrt(max(0, 1 - sd_seed^2 / sd_subsets^2)) per test example (NaN where either is undefined)."""
    s, t = np.asarray(sd_seed, dtype=np.float64), np.asarray(sd_subsets, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(s) & (t > 0), np.sqrt(np.clip(1.0 - (s * s) / (t * t), 0.0, 1.0)), np.nan)


def lds_tables(
    predicted: dict[str, np.ndarray],
    measured: np.ndarray,
    test_uids: Sequence[str],
    test_langs: Sequence[str],
    languages: Sequence[str],
    sd_seed: np.ndarray,
    n_boot: int,
    n_perm: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-example table ``EXAMPLES``, summary ``LDS``) for every method's predicted sums [test x subsets]."""
    langs = np.asarray([str(x) for x in test_langs], dtype=object)
    sd_subsets = measured.std(axis=1, ddof=1) if measured.shape[1] > 1 else np.full(len(measured), np.nan)
    ceiling = noise_ceiling(sd_seed, sd_subsets)
    groups = [lang for lang in languages if (langs == lang).any()]
    example_parts, rows = [], []
    for method, pred in predicted.items():
        lds = lds_per_example(pred, measured)
        example_parts.append(
            pd.DataFrame(
                {
                    "method": method,
                    "test_uid": [str(u) for u in test_uids],
                    "test_lang": langs,
                    "lds": lds,
                    "margin_sd_subsets": sd_subsets,
                    "margin_sd_seed": np.asarray(sd_seed, dtype=np.float64),
                    "ceiling": ceiling,
                }
            )
        )
        for lang in [*groups, ALL]:
            keep = np.ones(len(langs), dtype=bool) if lang == ALL else langs == lang
            null = permutation_null(pred[keep], measured[keep], n_perm, seed)
            rows.append({"method": method, "test_lang": lang, **summary_row(lds[keep], null, ceiling[keep], measured.shape[1], n_boot, seed)})
    examples = pd.concat(example_parts, ignore_index=True) if example_parts else pd.DataFrame(columns=list(EXAMPLES))
    return examples[list(EXAMPLES)], pd.DataFrame(rows, columns=list(LDS))


# ---------------------------------------------------------------- the plan


def _base_train(base: Base) -> pd.DataFrame:
    return read_split(base.run, "train", f"rerun `lingtrace prepare {base.run.root} --overwrite` and the stages after it")


def build(base: Base, cfg: Config) -> tuple[np.ndarray, list[subruns.SubRunSpec], pd.DataFrame]:
    """(masks over the base run's training split, sub-run specs, plan with the noise-floor rows)."""
    x = cfg.experiment
    train = _base_train(base)
    masks = draw_subsets(len(train), int(x.lds_subsets), float(x.lds_fraction), int(x.seed))
    specs, plan = [], []
    for j, mask in enumerate(masks):
        name = f"subset-{j:03d}"
        reason = (
            f"LDS subset {j}: {int(mask.sum())} of the {len(train)} training examples (fraction {x.lds_fraction}) drawn "
            f"with seed ({x.seed}, 'lds-subset', {j}), independent of the scores; the others left out"
        )
        info = {"subset": j, "fraction": float(x.lds_fraction), "n_kept": int(mask.sum())}
        specs.append(subruns.SubRunSpec.kept_subset(base, cfg, train, name, mask, reason, info))
        plan.append({"sub_run": f"{NAME}/runs/{name}", "purpose": "lds subset", "train_seed": int(cfg.train.seed), "n_train": int(mask.sum()), "n_removed": int((~mask).sum())})
    plan += noise.plan_rows(cfg, len(train))
    return masks, specs, pd.DataFrame(plan, columns=list(PLAN))


def kept_masks(subs: dict[str, Any], names: Sequence[str], train_uids: Sequence[str]) -> np.ndarray:
    """[subsets x train] masks read back from each sub-run's own training split (what it was trained on)."""
    position = {str(u): i for i, u in enumerate(train_uids)}
    masks = np.zeros((len(names), len(position)), dtype=bool)
    for j, name in enumerate(names):
        kept = read_split(subs[name], "train")[schema.UID].astype(str)
        masks[j, [position[u] for u in kept]] = True
    return masks


def margins_table(subs: dict[str, Any], names: Sequence[str]) -> pd.DataFrame:
    parts = []
    for j, name in enumerate(names):
        sel = read_selection(subs[name])
        parts.append(
            pd.DataFrame(
                {
                    "subset": j,
                    "sub_run": name,
                    "test_uid": sel[schema.UID].astype(str).to_numpy(),
                    "test_lang": sel[schema.LANG].astype(str).to_numpy(),
                    "label": sel[schema.LABEL].to_numpy(dtype=np.int64),
                    "margin": sel[evaluation.MARGIN].to_numpy(dtype=np.float64),
                    "p_label": sel[evaluation.P_LABEL].to_numpy(dtype=np.float64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[list(MARGINS)]


# ---------------------------------------------------------------- running it


def run(base: Base, cfg: Config, overwrite: bool = False, plan_only: bool = False) -> dict[str, Any]:
    exp_dir = base.run.experiment_dir(NAME)
    _masks, specs, plan = build(base, cfg)
    if plan_only:
        return {"experiment": NAME, "plan": plan}
    methods = methods_present(base.run)
    check_experiment_config(
        exp_dir, NAME, retraining_settings(cfg), result_settings(cfg), base, cfg.experiment, overwrite, identity=retraining_identity(base)
    )
    outputs.write_table(exp_dir, "plan", plan, PLAN)
    subs = subruns.run_all(specs, base, exp_dir, overwrite, desc=NAME)
    floor = noise.ensure(base, cfg, overwrite)
    return finish(base, cfg, exp_dir, methods, [s.name for s in specs], subs, floor)


def _seed_sd(floor: noise.NoiseFloor, uids: Sequence[str]) -> np.ndarray:
    """Per test example: the margin's standard deviation over the base and reseeded models (NaN without seeds)."""
    if floor.table.empty:
        return np.full(len(uids), np.nan)
    return noise.spread_per_example(floor.table, "margin").reindex([str(u) for u in uids]).to_numpy(dtype=np.float64)


def finish(base: Base, cfg: Config, exp_dir: Path, methods: list[str], names: list[str], subs: dict, floor: noise.NoiseFloor) -> dict[str, Any]:
    x = cfg.experiment
    margins = margins_table(subs, names)
    test_uids = base.selected[schema.UID].astype(str).tolist()
    test_langs = base.selected[schema.LANG].astype(str).tolist()
    measured = margins.pivot(index="test_uid", columns="subset", values="margin").reindex(test_uids).to_numpy(dtype=np.float64)
    masks = kept_masks(subs, names, base.train[schema.UID].astype(str))
    predicted = {m: predicted_sums(base.method_total(m), masks) for m in methods}
    examples, table = lds_tables(predicted, measured, test_uids, test_langs, base.languages, _seed_sd(floor, test_uids), int(x.lds_resamples), int(x.lds_resamples), int(x.seed))
    tables = [
        outputs.write_table(exp_dir, "margins", margins, MARGINS),
        outputs.write_table(exp_dir, "lds_examples", examples, EXAMPLES),
        outputs.write_table(exp_dir, "lds", table, LDS),
        "plan.parquet",
    ]
    overall = table[table["test_lang"] == ALL].set_index("method")
    png = outputs.write_figure(exp_dir, "lds", _figure(overall))
    cost = subruns.cost_summary({**subs, **{f"{noise.NAME}/{k}": v for k, v in floor.subs.items()}}, 0)
    readings = _readings(overall, floor, len(names), len(test_uids))
    cost_text = (
        f"{len(names)} retrainings on random subsets of {x.lds_fraction:g} of the training set (seed {x.seed}) and "
        f"{len(floor.seeds)} on the unchanged training set with other seeds (the noise floor, shared with k-selection), all with the base run's "
        f"model and training config; {len(test_uids)} test examples; {len(methods)} method(s) scored from the same retrainings."
        + (f" Training took {cost['train_seconds_mean']:.0f} s per retraining on average here." if cost["train_seconds_mean"] else "")
    )
    notes = [
        "LDS of a method on a test example: Spearman correlation over the subsets between the sum of its scores over the subset's "
        "training examples and the correct-class margin (gold logit minus logsumexp of the others) of the model retrained on the subset.",
        "The interval is a bootstrap over the test examples with the subsets held fixed, so it leaves out the uncertainty from "
        "the draw of the subsets (large when they are few); the permutation null shuffles the margins over the subsets and is the "
        "test to read; the ceiling is what a perfect predictor of the expected margin could reach given the margin's spread from "
        "the training seed alone.",
        "For reference, published LDS values: 0.02 for gradient cosine, 0.22 TRAK, 0.45 EK-FAC (GPT-2 on WikiText, bergson "
        "leaderboard); 0.10 plain gradient dot product, 0.32 EK-FAC (BERT on GLUE, kronfluence).",
    ]
    body = [
        verdict_paragraph(NAME, chance_verdict(overall), warning=bool(at_chance(overall))),
        fragments.figure(png, "mean LDS per method with its bootstrap interval", "Mean LDS per method (bootstrap 95% interval); grey band: ±1.96 sd of the permutation null; dashed: mean noise ceiling."),
        "<h3>LDS per method (all test examples)</h3>",
        fragments.table(table[table["test_lang"] == ALL].drop(columns=["test_lang"]), formats={"p_vs_null": pvalue}, text_columns=["method"]),
        f"<p class='note'>{fragments.esc(noise.describe(floor))}</p>",
        "<details class='more'><summary>Per test language</summary>"
        + fragments.table(table[table["test_lang"] != ALL], formats={"p_vs_null": pvalue}, text_columns=["method", "test_lang"])
        + "</details>",
        *(fragments.columns_doc(NAME, t, TABLES[t.removesuffix(".parquet")]) for t in tables),
        fragments.columns_doc(NAME, f"../{noise.NAME}/noise_summary.parquet", noise.NOISE_SUMMARY),
    ]
    section = {"readings": readings, "cost": cost_text, "notes": notes, "body": "\n".join(body)}
    return outputs.write_result(
        exp_dir,
        sys.modules[__name__],
        cfg,
        base,
        section,
        methods=methods,
        n_test=len(test_uids),
        n_subsets=len(names),
        lds={m: {k: overall.loc[m, k] for k in ("mean_lds", "sem_lds", "ci_low", "ci_high", "p_vs_null", "detectable_lds", "mean_ceiling")} for m in overall.index},
        noise_floor=floor.overall(),
        cost={**cost, "note": cost_text},
        tables=tables,
        figures=[f"{outputs.FIGURES_DIR}/lds.png"],
    )


#: the permutation p at or above which a method's mean LDS counts as at chance
CHANCE_P = 0.05


def at_chance(overall: pd.DataFrame) -> list[str]:
    """The methods whose mean LDS the permutation test does not separate from zero (p >= ``CHANCE_P``)."""
    p = overall["p_vs_null"].astype(float)
    return [str(m) for m in overall.index[np.isfinite(p.to_numpy()) & (p.to_numpy() >= CHANCE_P)]]


def chance_verdict(overall: pd.DataFrame) -> str:
    """One sentence naming the methods at chance on this run's LDS, with their figures, or saying there are none."""
    chance = at_chance(overall)
    if not chance:
        tested = [str(m) for m in overall.index if np.isfinite(float(overall.loc[m, "p_vs_null"]))]
        return (
            f"Every method ({', '.join(tested)}) predicts retraining better than chance on this run (permutation p < {CHANCE_P:g})."
            if tested
            else "No method could be tested against chance."
        )
    figures = "; ".join(f"{m}: mean LDS {overall.loc[m, 'mean_lds']:.3f}, permutation p = {overall.loc[m, 'p_vs_null']:.3g}" for m in chance)
    verb = "is" if len(chance) == 1 else "are"
    return (
        f"At chance on this run: {', '.join(chance)} {verb} not distinguishable from a predictor unrelated to retraining ({figures}). "
        f"Conclusions drawn from {'its' if len(chance) == 1 else 'their'} scores are not supported by this run's retraining."
    )


def _readings(overall: pd.DataFrame, floor: noise.NoiseFloor, n_subsets: int, n_test: int) -> list[str]:
    out = []
    for method, row in overall.iterrows():
        text = (
            f"{method}: mean LDS {row['mean_lds']:.3f} (95% interval {row['ci_low']:.3f} to {row['ci_high']:.3f}, "
            f"{int(row['n_test'])} test examples, {n_subsets} subsets)"
        )
        if np.isfinite(row["p_vs_null"]):
            distinct = row["p_vs_null"] < CHANCE_P
            text += (
                f"; {'distinguishable' if distinct else 'not distinguishable'} from a predictor unrelated to retraining "
                f"(permutation p = {row['p_vs_null']:.3g})"
            )
            if not distinct and (row["ci_low"] > 0 or row["ci_high"] < 0):
                text += (
                    ". The bootstrap interval excludes 0 only because it resamples the test examples with the subsets held fixed; "
                    "all test examples share the same few subsets, and the permutation test, which accounts for that, does not separate it from chance"
                )
        out.append(text + ".")
    if len(overall):
        detectable = float(overall["detectable_lds"].iloc[0])
        ceiling = float(overall["mean_ceiling"].iloc[0])
        power = (
            f"With {n_subsets} subsets and {n_test} test examples this setting detects a true mean LDS of {detectable:.2f} or more "
            f"with 80% power (5% level); smaller differences from zero are within its noise."
        )
        if detectable > 0.2:
            power += " That is underpowered for the values published for gradient methods (0.02 to 0.3): raise experiment.lds_subsets."
        out.append(power)
        if np.isfinite(ceiling):
            out.append(
                f"The training seed alone limits the LDS any method could reach here to about {ceiling:.2f} on average "
                f"(the margin's spread from the seed against its spread over the subsets)."
            )
    out.append(noise.describe(floor))
    return out


def _figure(overall: pd.DataFrame):
    from lingtrace.report.figures import subplots

    fig, ax = subplots(figsize=(6.4, 3.8))
    x = np.arange(len(overall))
    means = overall["mean_lds"].to_numpy(dtype=float)
    err = np.vstack([means - overall["ci_low"].to_numpy(dtype=float), overall["ci_high"].to_numpy(dtype=float) - means])
    if len(overall):
        band = Z_95 * float(np.nanmax(overall["null_sd"].to_numpy(dtype=float)))
        ax.axhspan(-band, band, color="#bbbbbb", alpha=0.4, label="permutation null (±1.96 sd)")
        ceiling = float(np.nanmean(overall["mean_ceiling"].to_numpy(dtype=float))) if overall["mean_ceiling"].notna().any() else float("nan")
        if np.isfinite(ceiling):
            ax.axhline(ceiling, color="#555555", linestyle="--", linewidth=1, label="noise ceiling")
    ax.errorbar(x, means, yerr=np.nan_to_num(err), fmt="o", capsize=4, color="#2b7bba", label="mean LDS (95% interval)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([str(m) for m in overall.index], rotation=0)
    ax.set_ylabel("LDS (Spearman)")
    ax.set_title("Linear datamodeling score per method", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig
