"""What the languages experiment measured: the retrained models' margins on the selected test examples, the
mixtures' kept fractions read back from the sub-runs, and the effect of removing each training language per
test example (leave-one-out differences, or the least-squares coefficients of the mixture design)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lingtrace import evaluation
from lingtrace.data import schema
from lingtrace.experiments.languages import stats
from lingtrace.experiments.languages.columns import EFFECTS, MARGINS, MIXTURES
from lingtrace.experiments.languages.plan import Plan
from lingtrace.experiments.languages.settings import LEAVE_ONE_OUT
from lingtrace.run import RunDir, read_predictions, read_split


def margins_table(runs: dict[str, RunDir], location: dict[str, str], names: list[str], uids: list[str]) -> pd.DataFrame:
    """One row per (retraining, selected test example): its margin, p_label and loss (columns ``MARGINS``)."""
    parts = []
    for name in names:
        preds = read_predictions(runs[name]).drop_duplicates(schema.UID).set_index(schema.UID).loc[uids]
        margin = preds[evaluation.MARGIN].to_numpy(dtype=np.float64)
        parts.append(
            pd.DataFrame(
                {
                    "sub_run": location[name],
                    "test_uid": uids,
                    "test_lang": preds[schema.LANG].astype(str).to_numpy(),
                    "label": preds[schema.LABEL].to_numpy(dtype=np.int64),
                    "margin": margin,
                    "p_label": preds[evaluation.P_LABEL].to_numpy(dtype=np.float64),
                    "loss": stats.loss_from_margin(margin),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[list(MARGINS)]


def mixtures_table(runs: dict[str, RunDir], plan: Plan, base_train: pd.DataFrame) -> pd.DataFrame:
    """One row per (mixture, varied language): the drawn fraction and the kept examples read back from the sub-run."""
    n_lang = base_train[schema.LANG].astype(str).value_counts()
    rows = []
    for j, name in enumerate(plan.names):
        kept = read_split(runs[name], "train")[schema.LANG].astype(str).value_counts()
        for i, lang in enumerate(plan.languages):
            rows.append(
                {
                    "sub_run": plan.location[name],
                    "mixture": j,
                    "train_lang": lang,
                    "fraction": float(plan.fractions[j, i]),
                    "n_lang": int(n_lang.get(lang, 0)),
                    "n_kept": int(kept.get(lang, 0)),
                    "kept_fraction": float(kept.get(lang, 0)) / float(n_lang.get(lang, 1)),
                }
            )
    return pd.DataFrame(rows, columns=list(MIXTURES))


def _pivot(margins: pd.DataFrame, value: str, uids: list[str], order: list[str]) -> np.ndarray:
    """[retrainings (in ``order``) x test examples (in ``uids``)] of one column of ``margins``."""
    return margins.pivot(index="sub_run", columns="test_uid", values=value).reindex(index=order, columns=uids).to_numpy(dtype=np.float64)


def effects_table(plan: Plan, margins: pd.DataFrame, mixtures: pd.DataFrame | None, selected: pd.DataFrame, base_preds: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(the ``EFFECTS`` table in selected x language order, the mixture cells' fit standard errors by (X, Y))."""
    uids = selected[schema.UID].astype(str).tolist()
    langs = selected[schema.LANG].astype(str).to_numpy()
    labels = selected[schema.LABEL].to_numpy(dtype=np.int64)
    mb = base_preds.loc[uids, evaluation.MARGIN].to_numpy(dtype=np.float64)
    pb = base_preds.loc[uids, evaluation.P_LABEL].to_numpy(dtype=np.float64)
    lb = stats.loss_from_margin(mb)
    order = [plan.location[n] for n in plan.names]
    parts, fit_se = [], {}
    common = {"design": plan.design, "test_uid": uids, "test_lang": langs, "label": labels, "margin_base": mb, "p_base": pb, "loss_base": lb}
    if plan.design == LEAVE_ONE_OUT:
        m, p, lo = (_pivot(margins, c, uids, order) for c in ("margin", "p_label", "loss"))
        for k, lang in enumerate(plan.languages):
            parts.append(
                pd.DataFrame(
                    {
                        **common,
                        "train_lang": lang,
                        "sub_run": order[k],
                        "margin": m[k],
                        "delta_margin": mb - m[k],
                        "effect_se": np.nan,
                        "p_label": p[k],
                        "delta_p": pb - p[k],
                        "loss": lo[k],
                        "delta_loss": lo[k] - lb,
                    }
                )
            )
    else:
        fractions = mixtures.pivot(index="mixture", columns="train_lang", values="kept_fraction").reindex(columns=plan.languages).to_numpy(dtype=np.float64)
        m, p, lo = (_pivot(margins, c, uids, order) for c in ("margin", "p_label", "loss"))
        fm, fp, fl = stats.fit_mixture(fractions, m), stats.fit_mixture(fractions, p), stats.fit_mixture(fractions, lo)
        for k, lang in enumerate(plan.languages):
            parts.append(
                pd.DataFrame(
                    {
                        **common,
                        "train_lang": lang,
                        "sub_run": "",
                        "margin": np.nan,
                        "delta_margin": fm.coef[:, k],
                        "effect_se": fm.se[:, k],
                        "p_label": np.nan,
                        "delta_p": fp.coef[:, k],
                        "loss": np.nan,
                        "delta_loss": -fl.coef[:, k],
                    }
                )
            )
        for x in dict.fromkeys(langs):
            cell = stats.fit_mixture(fractions, m[:, langs == x].mean(axis=1))
            fit_se.update({(str(x), lang): float(cell.se[0, k]) for k, lang in enumerate(plan.languages)})
    effects = pd.concat(parts, ignore_index=True)
    # test example by test example, languages in order within each
    effects["_row"] = np.tile(np.arange(len(uids)), len(plan.languages))
    effects = effects.sort_values(["_row"], kind="stable").drop(columns="_row").reset_index(drop=True)
    return effects[list(EFFECTS)], fit_se
