"""The noise floor: how much retraining the unchanged training set with another seed moves a test example.

Every faithfulness figure (``lds``, ``k-selection``) compares retrained models with the base model.
Part of any difference comes from retraining itself: a different seed changes the head's initialisation,
the shuffling and dropout. The noise floor measures that part directly: the base run's training set,
unchanged and in the same order, retrained with ``experiment.noise_seeds`` other training seeds
(``train.seed + 1``, ``+ 2``, ...), each evaluated on the base run's selected test examples.

The sub-runs live in ``RUN/experiments/noise-floor/runs/seed-S/`` and are shared: whichever experiment
asks first trains them, the others reuse them (and asking for more seeds later adds only the new ones).
``RUN/experiments/noise-floor/`` holds the per-seed table ``noise.parquet`` and ``noise_summary.parquet``;
it has no report section of its own: each faithfulness section shows the floor next to its figures.

Statistics (pure functions below): per test example, the change from the base model under seed s,
``delta_p = p_s - p_base`` (gold-label probability) and ``delta_margin = margin_s - margin_base``
(correct-class margin), and the spread over all models of the unchanged data (base included).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lingtrace import evaluation
from lingtrace.analysis.common import ALL
from lingtrace.config import Config, apply_overrides
from lingtrace.data import schema
from lingtrace.experiments import outputs, subruns
from lingtrace.experiments.base import Base
from lingtrace.experiments.identity import check_experiment_config, retraining_identity
from lingtrace.io import write_parquet
from lingtrace.run import read_predictions, read_split

log = logging.getLogger(__name__)

NAME = "noise-floor"
#: the base final model's predictions (with logits and margins) on every selected test example
BASE_PREDICTIONS = outputs.BASE_PREDICTIONS

NOISE = {
    "seed": "training seed of the retraining (the base run's train.seed + 1, + 2, ...)",
    "sub_run": "sub-run directory under experiments/noise-floor/runs/",
    "test_uid": "the selected test example",
    "test_lang": "its language",
    "label": "its gold label (class index)",
    "margin_base": "correct-class margin (gold logit - logsumexp of the other logits) under the base final model",
    "margin": "the same under the model retrained with this seed",
    "delta_margin": "margin - margin_base",
    "p_base": "probability of the gold label under the base final model",
    "p_label": "the same under the model retrained with this seed",
    "delta_p": "p_label - p_base",
}
NOISE_SUMMARY = {
    "test_lang": "test language, or all",
    "n_test": "selected test examples",
    "n_seeds": "retrainings with another seed (the base model is one more model of the unchanged data)",
    "margin_sd": "mean over test examples of the standard deviation of the margin over the base and reseeded models",
    "p_sd": "the same for the probability of the gold label",
    "mean_delta_p": "mean of delta_p over test examples and seeds (the drift of selected examples from seed alone)",
    "mean_abs_delta_p": "mean of |delta_p|",
    "mean_abs_delta_margin": "mean of |delta_margin|",
    "max_abs_mean_delta_p": "largest |mean delta_p over the test examples| among the seeds: how far seed alone moves a mean change",
}
TABLES = {"noise": NOISE, "noise_summary": NOISE_SUMMARY}


def noise_seeds(cfg: Config) -> list[int]:
    """The training seeds of the noise-floor retrainings: the base seed + 1 ... + ``experiment.noise_seeds``."""
    return [int(cfg.train.seed) + i for i in range(1, int(cfg.experiment.noise_seeds) + 1)]


# ---------------------------------------------------------------- statistics (pure functions)


def noise_table(base_preds: pd.DataFrame, seeded: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per (seed, test example): the reseeded model's margin and gold-label probability against
    the base model's. ``base_preds`` and every frame of ``seeded`` hold uid, lang, label, margin, p_label."""
    by_uid = base_preds.set_index(base_preds[schema.UID].astype(str))
    parts = []
    for seed, preds in sorted(seeded.items()):
        uids = preds[schema.UID].astype(str)
        base_rows = by_uid.loc[uids]
        parts.append(
            pd.DataFrame(
                {
                    "seed": int(seed),
                    "sub_run": f"seed-{seed}",
                    "test_uid": uids.to_numpy(),
                    "test_lang": preds[schema.LANG].astype(str).to_numpy(),
                    "label": preds[schema.LABEL].to_numpy(dtype=np.int64),
                    "margin_base": base_rows[evaluation.MARGIN].to_numpy(dtype=np.float64),
                    "margin": preds[evaluation.MARGIN].to_numpy(dtype=np.float64),
                    "p_base": base_rows[evaluation.P_LABEL].to_numpy(dtype=np.float64),
                    "p_label": preds[evaluation.P_LABEL].to_numpy(dtype=np.float64),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(NOISE))
    out["delta_margin"] = out["margin"] - out["margin_base"]
    out["delta_p"] = out["p_label"] - out["p_base"]
    return out[list(NOISE)]


def spread_per_example(noise: pd.DataFrame, value: str) -> pd.Series:
    """Per test example (indexed by uid): the standard deviation (ddof 1) of ``value`` (``margin`` or
    ``p_label``) over every model of the unchanged data, the base model and each reseeded one."""
    base_value = {"margin": "margin_base", "p_label": "p_base"}[value]
    return noise.groupby("test_uid").apply(lambda g: np.std(np.r_[g[base_value].iloc[0], g[value]], ddof=1), include_groups=False)


def summarize(noise: pd.DataFrame, languages: Sequence[str], uids: Sequence[str] | None = None) -> pd.DataFrame:
    """Per test language and overall (``all``): the spread the seed alone causes (columns ``NOISE_SUMMARY``).
    ``uids`` restricts it to some test examples (k-selection's chosen ones)."""
    if uids is not None:
        noise = noise[noise["test_uid"].isin(set(map(str, uids)))]
    rows = []
    langs = [lang for lang in languages if (noise["test_lang"] == lang).any()]
    for lang in [*langs, ALL]:
        sub = noise if lang == ALL else noise[noise["test_lang"] == lang]
        if sub.empty:
            continue
        margins, probs = spread_per_example(sub, "margin"), spread_per_example(sub, "p_label")
        seed_means = sub.groupby("seed")["delta_p"].mean()
        rows.append(
            {
                "test_lang": lang,
                "n_test": int(sub["test_uid"].nunique()),
                "n_seeds": int(sub["seed"].nunique()),
                "margin_sd": float(margins.mean()),
                "p_sd": float(probs.mean()),
                "mean_delta_p": float(sub["delta_p"].mean()),
                "mean_abs_delta_p": float(sub["delta_p"].abs().mean()),
                "mean_abs_delta_margin": float(sub["delta_margin"].abs().mean()),
                "max_abs_mean_delta_p": float(seed_means.abs().max()),
            }
        )
    return pd.DataFrame(rows, columns=list(NOISE_SUMMARY))


def detectable_difference(p_sd: float, n_test: int) -> float:
    """The smallest mean paired difference in gold-label probability (e.g. a removal against its random
    control) that ``n_test`` test examples detect with 80% power at the two-sided 5% level, when each
    retrained model carries the seed noise ``p_sd``: (1.96 + 0.84) * sqrt(2) * p_sd / sqrt(n_test)
    (normal approximation; both models of a pair carry the noise)."""
    if n_test < 1 or not np.isfinite(p_sd):
        return float("nan")
    return float((1.959964 + 0.841621) * np.sqrt(2.0) * p_sd / np.sqrt(n_test))


# ---------------------------------------------------------------- the sub-runs


@dataclass
class NoiseFloor:
    """The measured noise floor: the per-seed table and its summary over all selected test examples."""

    seeds: list[int]
    table: pd.DataFrame  # columns NOISE
    summary: pd.DataFrame  # columns NOISE_SUMMARY
    subs: dict[str, Any]  # sub-run name -> RunDir

    def overall(self, uids: Sequence[str] | None = None, languages: Sequence[str] = ()) -> dict[str, Any]:
        """The ``all`` row of the summary (for ``uids`` only, when given) as a dict; empty without seeds."""
        frame = self.summary if uids is None else summarize(self.table, languages, uids)
        row = frame[frame["test_lang"] == ALL]
        return row.iloc[0].to_dict() if len(row) else {}


def specs(base: Base, cfg: Config) -> list[subruns.SubRunSpec]:
    """One sub-run per noise seed: the base run's training, dev and test data unchanged, another train.seed."""
    fix = f"rerun `lingtrace prepare {base.run.root} --overwrite` and the stages after it"
    train = read_split(base.run, "train", fix)  # the base run's own order
    empty = train.iloc[:0][schema.EXAMPLE_COLUMNS].assign(split=pd.Series(dtype=str), change=pd.Series(dtype=str), reason=pd.Series(dtype=str))
    out = []
    for seed in noise_seeds(cfg):
        reason = f"noise floor: the base run's training set unchanged, retrained with train.seed={seed} instead of {cfg.train.seed}"
        out.append(
            subruns.SubRunSpec(
                name=f"seed-{seed}",
                cfg=apply_overrides(cfg, [f"train.seed={seed}"]),
                change="reseeded",
                reason=reason,
                test_examples=base.selected,
                eval_frame=base.selected,
                influence=False,
                train=train,
                dev=base.dev,
                test=base.test_pool,
                changed=empty,
                info={"train_seed": seed, "same_as_base": "data, model, training, selection and influence config; only train.seed differs"},
            )
        )
    return out


def plan_rows(cfg: Config, n_train: int) -> list[dict[str, Any]]:
    """The noise-floor retrainings as rows of an experiment's plan."""
    return [
        {"sub_run": f"{NAME}/runs/seed-{seed}", "purpose": "noise floor", "train_seed": seed, "n_train": n_train, "n_removed": 0}
        for seed in noise_seeds(cfg)
    ]


def base_predictions(base: Base, exp_dir) -> pd.DataFrame:
    """The base final model's predictions (margin and logits included) on every selected test example,
    computed once and kept in ``exp_dir``."""
    path = exp_dir / BASE_PREDICTIONS
    if path.exists():
        old = pd.read_parquet(path)
        if evaluation.MARGIN in old.columns and set(old[schema.UID].astype(str)) >= set(base.selected[schema.UID].astype(str)):
            return old
    preds = evaluation.predict_frame(base.run, base.cfg, base.selected[schema.EXAMPLE_COLUMNS])
    write_parquet(path, preds)
    return preds


def covers_stored(exp_dir, seeds: Sequence[int]) -> bool:
    """Whether ``seeds`` include every seed of the shared tables already written in ``exp_dir``."""
    import json

    path = exp_dir / "summary.json"
    try:
        stored = json.loads(path.read_text()).get("seeds", []) if path.is_file() else []
    except (OSError, ValueError):
        return True
    return set(int(x) for x in stored) <= set(int(x) for x in seeds)


def ensure(base: Base, cfg: Config, overwrite: bool = False) -> NoiseFloor:
    """Train (or reuse) the noise-floor sub-runs and write their tables; returns the floor."""
    exp_dir = base.run.experiment_dir(NAME)
    seeds = noise_seeds(cfg)
    # the seeds are additive (each sub-run stands alone): only the base run's identity is guarded
    check_experiment_config(
        exp_dir, NAME, {}, {"noise_seeds": len(seeds)}, base, cfg.experiment, overwrite, identity=retraining_identity(base)
    )
    base_preds = base_predictions(base, exp_dir)
    subs = subruns.run_all(specs(base, cfg), base, exp_dir, overwrite, desc=NAME) if seeds else {}
    seeded = {seed: read_predictions(subs[f"seed-{seed}"]) for seed in seeds}
    table = noise_table(base_preds, seeded)
    summary = summarize(table, base.languages)
    if not covers_stored(exp_dir, seeds):  # an experiment asking for fewer seeds leaves the shared tables alone
        return NoiseFloor(seeds, table, summary, subs)
    outputs.write_table(exp_dir, "noise", table, NOISE)
    outputs.write_table(exp_dir, "noise_summary", summary, NOISE_SUMMARY)
    outputs.write_summary(
        exp_dir,
        {
            "experiment": NAME,
            "complete": True,
            "seeds": seeds,
            "base_train_seed": int(cfg.train.seed),
            "summary": summary.to_dict(orient="records"),
            "cost": subruns.cost_summary(subs, 0),
            "tables": ["noise.parquet", "noise_summary.parquet"],
        },
    )
    return NoiseFloor(seeds, table, summary, subs)


def describe(floor: NoiseFloor, uids: Sequence[str] | None = None, languages: Sequence[str] = ()) -> str:
    """One sentence: how much seed alone moves these test examples."""
    row = floor.overall(uids, languages)
    if not row:
        return "No noise floor was measured (experiment.noise_seeds is 0): the figures cannot be compared with retraining noise."
    return (
        f"Noise floor: retraining the unchanged training set with {row['n_seeds']} other seed(s) moves the probability of the "
        f"correct class of these {row['n_test']} test examples by {row['mean_abs_delta_p']:.3f} on average (|Δ|; mean Δ "
        f"{row['mean_delta_p']:+.3f}, up to {row['max_abs_mean_delta_p']:.3f} for the mean of one seed) and their correct-class "
        f"margin by {row['mean_abs_delta_margin']:.2f} (standard deviation over the models of the unchanged data: "
        f"{row['p_sd']:.3f} in probability, {row['margin_sd']:.2f} in margin)."
    )
