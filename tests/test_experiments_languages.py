"""The languages experiment (issue 22): cross-lingual reliance measured by retraining, and each method's
language-level picture against it. Statistics against independent computations (numpy/scipy), then
both designs end to end on the tiny base run, and end to end on a local CSV task made here.

Nothing asserts which language the tiny model relies on (it barely learns); every reported number is
recomputed from the saved tables, the sub-runs' predictions and the score stores instead.
"""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import linregress, pearsonr, spearmanr

from conftest import WORDS
from lingtrace.cli import main
from lingtrace.config import EXPERIMENTS, Config, apply_overrides
from lingtrace.errors import LingtraceError
from lingtrace.experiments import languages
from lingtrace.experiments.languages import columns, stats
from lingtrace.experiments.languages.plan import Plan
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.run import RunDir
from test_experiments import base_run, brute_topk  # noqa: F401 - the tiny base run fixture (module scope)

ROOT = Path(__file__).resolve().parents[1]


def _boot_by_hand(values, n_boot, seed, tag):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return np.nan, np.nan
    rng = np.random.default_rng([seed % 2**32, zlib.crc32(b"languages-bootstrap"), zlib.crc32(tag.encode())])
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _within_by_hand(mean, low, high, noise, fit_se):
    checks = []
    if np.isfinite(low) and np.isfinite(high):
        checks.append(low <= 0 <= high)
    if np.isfinite(noise):
        checks.append(abs(mean) <= noise)
    if np.isfinite(fit_se):
        checks.append(abs(mean) <= 1.959964 * fit_se)
    return any(checks) if checks else True


def _first_max(values, langs, exclude=None):
    """The language of the largest value (the first on a tie), by sorting."""
    cands = [(-v, i, lang) for i, (lang, v) in enumerate(zip(langs, values)) if lang != exclude and np.isfinite(v)]
    return min(cands)[2] if cands else None


# ---------------------------------------------------------------- the mixture fit


def test_mixture_fit_recovers_the_coefficients_within_their_standard_errors():
    rng = np.random.default_rng(0)
    m, n_langs, n = 60, 4, 40
    fractions = rng.uniform(0.25, 1.0, size=(m, n_langs))
    beta, intercept = rng.normal(size=(n, n_langs)), rng.normal(size=n)
    clean = intercept + fractions @ beta.T  # [m x n]: an exact linear function of the kept fractions
    noisy = clean + rng.normal(scale=0.05, size=clean.shape)
    fit = stats.fit_mixture(fractions, noisy)
    # the same numbers from numpy's least squares and the textbook covariance s^2 (X'X)^-1
    design = np.column_stack([np.ones(m), fractions])
    coef, *_ = np.linalg.lstsq(design, noisy, rcond=None)
    np.testing.assert_allclose(fit.coef, coef[1:].T, atol=1e-10)
    np.testing.assert_allclose(fit.intercept, coef[0], atol=1e-10)
    s2 = ((noisy - design @ coef) ** 2).sum(axis=0) / (m - n_langs - 1)
    np.testing.assert_allclose(fit.se, np.sqrt(s2[:, None] * np.diag(np.linalg.pinv(design.T @ design))[None, 1:]), rtol=1e-8)
    assert fit.df == m - n_langs - 1
    # within their standard errors: about 95% of |coef - true| < 1.96 se, none wildly off
    z = (fit.coef - beta) / fit.se
    assert 0.88 <= np.mean(np.abs(z) < 1.96) <= 1.0 and np.abs(z).max() < 5
    # noiseless margins give the coefficients exactly
    exact = stats.fit_mixture(fractions, clean)
    np.testing.assert_allclose(exact.coef, beta, atol=1e-9)
    assert np.abs(exact.se).max() < 1e-6
    # one language: scipy's simple regression gives the same slope and standard error
    one = stats.fit_mixture(fractions[:, :1], noisy[:, 0])
    ref = linregress(fractions[:, 0], noisy[:, 0])
    assert one.coef[0, 0] == pytest.approx(ref.slope, rel=1e-10) and one.se[0, 0] == pytest.approx(ref.stderr, rel=1e-8)


def test_mixture_fit_refuses_too_few_mixtures_and_dependent_fractions():
    f = np.random.default_rng(1).uniform(0.25, 1.0, size=(4, 3))
    with pytest.raises(LingtraceError, match="at least 5"):
        stats.fit_mixture(f, np.zeros(4))
    dependent = np.column_stack([f[:, 0], f[:, 0], f[:, 1]])
    with pytest.raises(LingtraceError, match="linearly dependent"):
        stats.fit_mixture(np.vstack([dependent, dependent + 0.01]), np.zeros(8))


def test_draw_mixture_is_seeded_per_language_and_keeps_the_others_whole():
    langs = np.array(["de"] * 20 + ["fr"] * 10 + ["ru"] * 8, dtype=object)
    f, keep = languages.draw_mixture(langs, ["de", "fr"], j=3, min_fraction=0.25, seed=7)
    assert ((0.25 <= f) & (f <= 1.0)).all()
    assert keep[langs == "ru"].all()  # not varied: kept whole
    for i, (lang, n) in enumerate((("de", 20), ("fr", 10))):
        assert keep[langs == lang].sum() == max(1, round(f[i] * n))
    f2, keep2 = languages.draw_mixture(langs, ["de", "fr"], j=3, min_fraction=0.25, seed=7)
    assert np.array_equal(f, f2) and np.array_equal(keep, keep2)
    # each language's draw depends on (seed, j, language) only
    f_fr, keep_fr = languages.draw_mixture(langs, ["fr"], j=3, min_fraction=0.25, seed=7)
    assert f_fr[0] == f[1] and np.array_equal(keep_fr[langs == "fr"], keep[langs == "fr"])
    assert not np.array_equal(languages.draw_mixture(langs, ["de", "fr"], 4, 0.25, 7)[0], f)
    assert not np.array_equal(languages.draw_mixture(langs, ["de", "fr"], 3, 0.25, 8)[0], f)


# ---------------------------------------------------------------- recovering planted effects


def _selected(test_langs):
    return pd.DataFrame({"uid": [f"t{i}" for i in range(len(test_langs))], "lang": test_langs, "label": [i % 2 for i in range(len(test_langs))]})


def _base_preds(selected, margin_base):
    p = 1 / (1 + np.exp(-margin_base))
    return pd.DataFrame({"uid": selected["uid"], "margin": margin_base, "p_label": p}).set_index("uid")


def _margins_frame(location, uids, test_langs, values):
    """``values``: {sub_run: margins [test]} -> the MARGINS table."""
    parts = []
    for name, m in values.items():
        parts.append(
            pd.DataFrame(
                {"sub_run": location[name], "test_uid": uids, "test_lang": test_langs, "label": 0, "margin": m, "p_label": 1 / (1 + np.exp(-m)), "loss": np.logaddexp(0, -m)}
            )
        )
    return pd.concat(parts, ignore_index=True)[list(columns.MARGINS)]


def test_leave_one_out_recovers_a_planted_effect_matrix():
    rng = np.random.default_rng(2)
    langs = ["de", "fr", "ru"]
    test_langs = [x for x in langs for _ in range(30)]
    planted = pd.DataFrame([[1.5, 0.6, 0.0], [0.4, 2.0, -0.2], [0.0, 0.1, 1.0]], index=langs, columns=langs)
    sel = _selected(test_langs)
    mb = rng.normal(2.0, 0.5, size=len(sel))
    names = [languages.loo_name(y) for y in langs]
    location = {n: f"languages/runs/{n}" for n in names}
    values = {f"no-{y}": mb - planted.loc[test_langs, y].to_numpy() + rng.normal(scale=0.02, size=len(sel)) for y in langs}
    plan = Plan(languages.LEAVE_ONE_OUT, langs, [], {}, pd.DataFrame(), None, names, location)
    margins = _margins_frame(location, sel["uid"].tolist(), test_langs, values)
    effects, fit_se = languages.effects_table(plan, margins, None, sel, _base_preds(sel, mb))
    assert list(effects.columns) == list(columns.EFFECTS) and fit_se == {}
    assert len(effects) == len(sel) * 3 and effects["test_uid"].iloc[:3].tolist() == ["t0"] * 3
    row = effects[(effects["test_uid"] == "t5") & (effects["train_lang"] == "fr")].iloc[0]
    assert row["delta_margin"] == pytest.approx(mb[5] - values["no-fr"][5]) and row["sub_run"] == "languages/runs/no-fr"
    assert row["delta_loss"] == pytest.approx(np.logaddexp(0, -values["no-fr"][5]) - np.logaddexp(0, -mb[5]))
    assert row["delta_p"] == pytest.approx(1 / (1 + np.exp(-mb[5])) - 1 / (1 + np.exp(-values["no-fr"][5])))
    matrix = stats.matrix_table(effects, languages.LEAVE_ONE_OUT, langs, langs, {x: 0.05 for x in langs}, 500, 0)
    got = matrix.pivot(index="test_lang", columns="train_lang", values="mean").loc[langs, langs]
    np.testing.assert_allclose(got.to_numpy(), planted.to_numpy(), atol=0.02)
    cells = matrix.set_index(["test_lang", "train_lang"])
    assert not cells.loc[("fr", "de"), "within_noise"] and cells.loc[("de", "ru"), "within_noise"]  # 0.4 vs 0.0 against noise 0.05


def test_mixture_recovers_planted_coefficients_and_the_cell_fit_is_the_fit_of_the_mean():
    rng = np.random.default_rng(3)
    langs = ["de", "fr", "ru"]
    test_langs = [x for x in langs for _ in range(8)]
    planted = pd.DataFrame([[1.5, 0.6, 0.0], [0.4, 2.0, -0.2], [0.0, 0.1, 1.0]], index=langs, columns=langs)
    sel = _selected(test_langs)
    mb = rng.normal(2.0, 0.5, size=len(sel))
    m = 16
    fractions = rng.uniform(0.25, 1.0, size=(m, 3))
    betas = planted.loc[test_langs].to_numpy() + rng.normal(scale=0.05, size=(len(sel), 3))  # per test example
    names = [languages.mixture_name(j) for j in range(m)]
    location = {n: f"languages/runs/{n}" for n in names}
    values = {n: mb - betas.sum(axis=1) + fractions[j] @ betas.T + rng.normal(scale=0.03, size=len(sel)) for j, n in enumerate(names)}
    mixtures = pd.DataFrame(
        [{"sub_run": location[n], "mixture": j, "train_lang": y, "fraction": fractions[j, i], "n_lang": 100, "n_kept": 0, "kept_fraction": fractions[j, i]} for j, n in enumerate(names) for i, y in enumerate(langs)]
    )
    plan = Plan(languages.MIXTURE, langs, [], {}, pd.DataFrame(), fractions, names, location)
    effects, fit_se = languages.effects_table(plan, _margins_frame(location, sel["uid"].tolist(), test_langs, values), mixtures, sel, _base_preds(sel, mb))
    coef = effects.pivot(index="test_uid", columns="train_lang", values="delta_margin").loc[sel["uid"], langs].to_numpy()
    se = effects.pivot(index="test_uid", columns="train_lang", values="effect_se").loc[sel["uid"], langs].to_numpy()
    assert np.mean(np.abs(coef - betas) < 1.96 * se) >= 0.85 and np.abs((coef - betas) / se).max() < 5
    # the mean of the per-example coefficients is the coefficient of the fit of the mean margin (least squares is linear)
    matrix = stats.matrix_table(effects, languages.MIXTURE, langs, langs, {}, 500, 0, fit_se)
    y_mean = np.column_stack([values[n] for n in names]).T  # [m x test]
    design = np.column_stack([np.ones(m), fractions])
    for x in langs:
        cols = np.array(test_langs) == x
        c, *_ = np.linalg.lstsq(design, y_mean[:, cols].mean(axis=1), rcond=None)
        for i, y in enumerate(langs):
            row = matrix[(matrix["test_lang"] == x) & (matrix["train_lang"] == y)].iloc[0]
            assert row["mean"] == pytest.approx(c[i + 1], abs=1e-9)
            assert abs(row["mean"] - planted.loc[x, y]) < 4 * row["fit_se"] + 0.1
    assert effects["margin"].isna().all() and effects["sub_run"].eq("").all()


# ---------------------------------------------------------------- aggregation, by hand


def test_bootstrap_noise_floor_and_matrix_by_hand():
    v = np.array([0.3, 0.1, 0.5, np.nan, 0.2])
    assert stats.bootstrap_interval(v, 1000, 5, "cell/de/fr") == _boot_by_hand(v, 1000, 5, "cell/de/fr")
    assert stats.bootstrap_interval(v, 1000, 5, "cell/de/fr") != stats.bootstrap_interval(v, 1000, 5, "cell/de/ru")
    assert np.isnan(stats.bootstrap_interval(np.array([1.0]), 100, 0, "x")[0])
    big = np.random.default_rng(0).normal(0.4, 0.2, size=200)
    low, high = stats.bootstrap_interval(big, 4000, 1, "t")
    sem = big.std(ddof=1) / np.sqrt(len(big))
    assert low == pytest.approx(big.mean() - 1.96 * sem, abs=0.01) and high == pytest.approx(big.mean() + 1.96 * sem, abs=0.01)

    table = pd.DataFrame(
        {
            "seed": [43, 43, 43, 44, 44, 44],
            "test_uid": ["a", "b", "c"] * 2,
            "test_lang": ["de", "de", "fr"] * 2,
            "margin_base": [1.0, 2.0, 3.0] * 2,
            "margin": [0.8, 2.4, 2.0, 1.1, 1.5, 3.5],
        }
    )
    floor = stats.noise_by_language(table, ["de", "fr", "ru"])
    de43, de44 = np.mean([0.2, -0.4]), np.mean([-0.1, 0.5])
    assert floor["de"] == pytest.approx(np.sqrt((de43**2 + de44**2) / 2))
    assert floor["fr"] == pytest.approx(np.sqrt((1.0 + 0.25) / 2)) and np.isnan(floor["ru"])
    assert np.isnan(stats.noise_by_language(table.iloc[:0], ["de"])["de"])

    assert not stats.within_noise(0.5, 0.1, 0.9, np.nan)
    assert stats.within_noise(0.5, -0.1, 0.9, np.nan)  # the interval includes 0
    assert stats.within_noise(0.5, 0.1, 0.9, 0.6)  # |mean| <= noise
    assert stats.within_noise(0.5, 0.1, 0.9, 0.2, 0.3) and not stats.within_noise(0.5, 0.1, 0.9, 0.2, 0.2)  # 1.96 fit_se
    assert stats.within_noise(0.5, np.nan, np.nan, np.nan)  # nothing to tell it from noise with

    effects = pd.DataFrame(
        {
            "test_lang": ["de"] * 3 * 2 + ["fr"] * 2,
            "train_lang": ["de", "fr"] * 3 + ["de", "fr"],
            "delta_margin": [1.0, 0.2, 0.8, 0.4, 1.2, 0.0, 0.1, 2.0],
            "delta_p": [0.1, 0.0, 0.2, 0.1, 0.3, 0.0, 0.0, 0.5],
            "delta_loss": [0.5, 0.1, 0.4, 0.2, 0.6, 0.0, 0.1, 1.0],
        }
    )
    matrix = stats.matrix_table(effects, "leave-one-out", ["de", "fr"], ["de", "fr"], {"de": 0.25, "fr": np.nan}, 300, 2)
    assert list(matrix.columns) == list(columns.MATRIX) and len(matrix) == 4
    for row in matrix.itertuples():
        cell = effects[(effects["test_lang"] == row.test_lang) & (effects["train_lang"] == row.train_lang)]
        assert row.n_test == len(cell) and row.mean == pytest.approx(cell["delta_margin"].mean())
        low, high = _boot_by_hand(cell["delta_margin"], 300, 2, f"cell/{row.test_lang}/{row.train_lang}")
        assert (row.ci_low, row.ci_high) == (low, high) or (np.isnan(low) and np.isnan(row.ci_low))
        assert row.within_noise == _within_by_hand(row.mean, row.ci_low, row.ci_high, row.noise, row.fit_se)
        assert row.mean_delta_p == pytest.approx(cell["delta_p"].mean()) and row.mean_delta_loss == pytest.approx(cell["delta_loss"].mean())
    cells = matrix.set_index(["test_lang", "train_lang"])
    assert cells.loc[("de", "fr"), "within_noise"]  # mean 0.2 <= noise 0.25
    assert cells.loc[("fr", "fr"), "within_noise"]  # one test example: no interval, no noise floor


# ---------------------------------------------------------------- the predictors and the faithfulness figures, by hand


def test_predicted_sums_and_topk_shares_by_hand():
    total = np.array([[3.0, -1.0, 2.0, 0.5, 4.0, 0.0], [0.0, 1.0, 0.2, 5.0, -2.0, 0.1]])
    train_langs = ["de", "de", "fr", "fr", "ru", "ru"]
    sums = stats.predicted_sums(total, train_langs, ["de", "fr", "ru"])
    np.testing.assert_allclose(sums, [[2.0, 2.5, 4.0], [1.0, 5.2, -1.9]])
    shares = stats.topk_shares(total, train_langs, 3, ["de", "fr", "ru"])
    # top-3 of row 0: 4.0 (ru), 3.0 (de), 2.0 (fr); of row 1: 5.0 (fr), 1.0 (de), 0.2 (fr)
    np.testing.assert_allclose(shares, [[100 / 3, 100 / 3, 100 / 3], [100 / 3, 200 / 3, 0.0]])
    for i in range(2):
        top = brute_topk(total[i], 3, True)
        assert shares[i, 1] == pytest.approx(100 * np.mean([train_langs[c] == "fr" for c in top]))


def test_faithfulness_figures_by_hand_with_scipy():
    langs = ["de", "fr", "ru"]
    test_langs = ["de", "de", "fr", "fr", "ru"]
    predicted = np.array([[3.0, 1.0, 2.0], [2.5, 0.5, 1.0], [0.1, 0.9, 0.4], [0.2, 1.1, 1.5], [0.3, 0.2, 0.7]])
    measured = np.array([[1.0, 0.2, 0.5], [0.8, 0.6, 0.1], [0.3, 1.4, 0.2], [0.1, 0.9, 0.4], [0.25, 0.05, 0.6]])
    within = {(x, y): (x, y) == ("ru", "de") for x in langs for y in langs}
    row, readings = stats.faithfulness("tracin", languages.SUMMED, predicted, measured, test_langs, langs, langs, within, 500, 9)
    per_example = [spearmanr(predicted[i], measured[i]).statistic for i in range(5)]
    assert row["n_test"] == 5 and row["n_langs"] == 3
    assert row["lds_mean"] == pytest.approx(np.mean(per_example))
    assert (row["lds_ci_low"], row["lds_ci_high"]) == _boot_by_hand(per_example, 500, 9, "lds/tracin/summed scores")
    assert row["distinguishable"] == (not row["lds_ci_low"] <= 0 <= row["lds_ci_high"])
    pred_cells = np.vstack([predicted[np.array(test_langs) == x].mean(axis=0) for x in langs])
    meas_cells = np.vstack([measured[np.array(test_langs) == x].mean(axis=0) for x in langs])
    assert row["n_cells"] == 9
    assert row["matrix_pearson"] == pytest.approx(pearsonr(pred_cells.ravel(), meas_cells.ravel()).statistic)
    assert row["matrix_spearman"] == pytest.approx(spearmanr(pred_cells.ravel(), meas_cells.ravel()).statistic)
    # by hand: de's measured cells (0.9, 0.4, 0.3): top de, top other fr; predicted (2.75, 0.75, 1.5): top de, top other ru (fr 2nd)
    by_lang = {r["test_lang"]: r for r in readings}
    assert (by_lang["de"]["measured_top"], by_lang["de"]["measured_top_other"], by_lang["de"]["predicted_top_other"]) == ("de", "fr", "ru")
    assert by_lang["de"]["agrees_top"] and not by_lang["de"]["agrees_top_other"] and by_lang["de"]["rank_of_measured_top_other"] == 2
    # fr: measured (0.2, 1.15, 0.3) -> fr, then ru; predicted (0.15, 1.0, 0.95) -> fr, then ru
    assert by_lang["fr"]["agrees_top"] and by_lang["fr"]["agrees_top_other"] and by_lang["fr"]["rank_of_measured_top_other"] == 1
    # ru: measured (0.25, 0.05, 0.6) -> ru, then de (within noise); predicted (0.3, 0.2, 0.7) -> ru, then de
    assert by_lang["ru"]["measured_top_other"] == "de" and by_lang["ru"]["measured_top_other_within_noise"]
    assert row["top_agree"] == 3 and row["top_other_agree"] == 2 and row["n_test_langs"] == 3
    for r, x in enumerate(langs):
        assert by_lang[x]["spearman"] == pytest.approx(spearmanr(pred_cells[r], meas_cells[r]).statistic)
    # a constant predictor: no correlation anywhere, not distinguishable from chance
    flat, _ = stats.faithfulness("flat", languages.SUMMED, np.ones_like(predicted), measured, test_langs, langs, langs, within, 100, 0)
    assert flat["n_test"] == 0 and np.isnan(flat["lds_mean"]) and not flat["distinguishable"] and np.isnan(flat["matrix_pearson"])
    assert stats.rank_of([1.0, 3.0, 2.0], langs, "ru", exclude="fr") == 1 and stats.rank_of([1.0, 3.0, 2.0], langs, "de") == 3


def test_readings_say_what_the_numbers_say():
    from lingtrace.experiments.languages import section

    cells = {("es", "es"): 1.2, ("es", "fr"): 0.31, ("es", "de"): 0.1, ("de", "de"): 0.9, ("de", "fr"): 0.03, ("de", "es"): 0.01}
    matrix = pd.DataFrame(
        [
            {"design": "leave-one-out", "test_lang": x, "train_lang": y, "n_test": 10, "mean": v, "ci_low": v - 0.13, "ci_high": v + 0.13, "fit_se": np.nan,
             "noise": 0.05, "within_noise": _within_by_hand(v, v - 0.13, v + 0.13, 0.05, np.nan), "mean_delta_p": 0.0, "mean_delta_loss": 0.0}
            for (x, y), v in cells.items()
        ],
        columns=list(columns.MATRIX),
    )

    def reading(method, predictor, x, other, rank):
        return {"method": method, "predictor": predictor, "test_lang": x, "measured_top": x, "measured_top_other": other,
                "measured_top_other_within_noise": x == "de", "predicted_top": x, "predicted_top_other": other, "agrees_top": True,
                "agrees_top_other": rank == 1, "rank_of_measured_top_other": rank, "spearman": 1.0}

    readings = pd.DataFrame(
        [reading("tracin", languages.SUMMED, "es", "fr", 2), reading("tracin", languages.SHARE, "es", "fr", 1), reading("trak", languages.SUMMED, "es", "fr", 1),
         reading("tracin", languages.SUMMED, "de", "fr", 1)],
        columns=list(columns.READINGS),
    )
    text = section.language_readings(matrix, readings, "leave-one-out", ["tracin", "trak"], ["es", "de"])
    assert text[0].startswith(
        "Removing the fr training data lowers es test margins by 0.31 (95% interval 0.18 to 0.44; seed noise 0.05): es relies on fr (removing es itself: 1.20)."
    )
    assert "tracin ranks fr second; trak ranks fr first among the other languages for es and the Fig. 2 top-k shares of tracin rank it first" in text[0]
    assert "within retraining noise" in text[1] and "replaceable by its translations" in text[1] and "de does not measurably rely" in text[1]
    assert text[1].startswith("Removing the fr training data lowers de test margins by 0.03 (95% interval")
    # a removal that raises the margins is said so, in both cases
    de = matrix["test_lang"] == "de"
    rising = matrix.assign(
        mean=np.where(de, -matrix["mean"], matrix["mean"]),
        ci_low=np.where(de, -matrix["ci_high"], matrix["ci_low"]),
        ci_high=np.where(de, -matrix["ci_low"], matrix["ci_high"]),
    )
    rising["within_noise"] = [x == "de" and y == "fr" for x, y in zip(rising["test_lang"], rising["train_lang"])]
    text = section.language_readings(rising, readings, "leave-one-out", ["tracin", "trak"], ["es", "de"])
    assert text[1].startswith("Removing the fr training data raises de test margins by 0.03 (95% interval -0.10 to 0.16;")  # the rise's interval
    rising["within_noise"] = False
    text = section.language_readings(rising, readings, "leave-one-out", ["tracin", "trak"], ["es", "de"])
    assert text[1].startswith("Removing the training data of any other language does not lower de test margins: removing fr, the smallest rise, raises them by 0.03 (95% interval -0.10 to 0.16;")
    faith = pd.DataFrame(
        [
            {"method": m, "predictor": p, "n_test": 10, "n_langs": 3, "lds_mean": v, "lds_ci_low": v - 0.2, "lds_ci_high": v + 0.2,
             "distinguishable": not v - 0.2 <= 0 <= v + 0.2, "n_cells": 9, "matrix_pearson": 0.5, "matrix_spearman": 0.4, "n_test_langs": 3,
             "top_agree": 3, "top_other_agree": 2}
            for m, p, v in [("tracin", languages.SUMMED, 0.5), ("tracin", languages.SHARE, 0.1), ("trak", languages.SUMMED, -0.5), ("trak", languages.SHARE, 0.3)]
        ],
        columns=list(columns.FAITHFULNESS),
    )
    methods = section.method_readings(faith)
    assert methods[0].startswith("tracin: by its summed scores, language-level LDS 0.50 (95% interval 0.30 to 0.70")
    assert "Fig. 2 top-k shares, language-level LDS 0.10 (95% interval -0.10 to 0.30, 10 test examples, 3 training languages: not distinguishable from chance)" in methods[0]
    assert "below chance" in methods[1]
    verdict = section.verdict(faith, matrix)
    assert verdict.startswith("The retraining supports the language-level picture of tracin (language-level LDS interval above 0); not of trak")
    assert "Fig. 2 top-k shares are supported for trak." in verdict and "Every removal effect" not in verdict


# ---------------------------------------------------------------- config, docs


@pytest.mark.parametrize(
    "override, message",
    [
        ("experiment.languages_design=both", "languages_design"),
        ("experiment.languages_removed=[xx]", "languages_removed"),
        ("experiment.languages_mixtures=2", "languages_mixtures"),
        ("experiment.languages_min_fraction=1", "languages_min_fraction"),
        ("experiment.languages_min_fraction=0", "languages_min_fraction"),
    ],
)
def test_config_validation(override, message):
    from lingtrace.config import validate

    with pytest.raises(LingtraceError, match=message):
        validate(apply_overrides(Config(), [override]))


def test_defaults_and_settings():
    cfg = Config()
    x = cfg.experiment
    assert (x.languages_design, x.languages_removed, x.languages_mixtures, x.languages_min_fraction) == ("leave-one-out", [], 12, 0.25)
    assert "languages" in EXPERIMENTS
    assert languages.removed_languages(apply_overrides(cfg, ["experiment.languages_removed=[zh,de]"])) == ["de", "zh"]  # data.languages order
    assert languages.retraining_settings(cfg) == {"languages_design": "leave-one-out"}
    mix = apply_overrides(cfg, ["experiment.languages_design=mixture"])
    assert set(languages.retraining_settings(mix)) == {"languages_design", "languages_varied", "languages_min_fraction", "seed"}
    assert "languages_mixtures" in languages.result_settings(mix)


def _doc_table(text: str, file: str) -> dict[str, str]:
    block = text.split(f"**`experiments/languages/{file}`**", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([^`]+)` \|", r).group(1): r.split(" | ", 1)[1].rstrip(" |") for r in rows}


def test_docs_document_every_table_with_the_code_s_columns():
    text = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    for name, cols in columns.TABLES.items():
        documented = _doc_table(text, f"{name}.parquet")
        assert list(documented) == list(cols), name
        for col, meaning in cols.items():
            assert documented[col] == meaning.replace("|", "\\|"), (name, col)
    for key in ("languages_design", "languages_removed", "languages_mixtures", "languages_min_fraction"):
        assert f"`experiment.{key}`" in text


# ---------------------------------------------------------------- end to end on the tiny base run


@pytest.fixture
def run(base_run, tmp_path):  # noqa: F811
    shutil.copytree(base_run.root, tmp_path / "base")
    return RunDir(tmp_path / "base")


def _sorted(frame):
    cols = ["uid", "lang", "translation_id", "text_a", "text_b", "label"]
    return frame[cols].sort_values("uid").reset_index(drop=True)


def _no_retraining(sub, cfg, stages, *args, **kwargs):
    assert all(RunDir(sub.root).is_complete(s) for s in stages), f"{sub.root} would be retrained"


def _check_reported(run: RunDir):
    """Every number of the tables, summary.json and section.html recomputed from the saved tables, the
    sub-runs' predictions, the noise floor and the score stores."""
    exp = run.root / "experiments" / "languages"
    experiments = exp.parent
    summary = read_json(exp / "summary.json")
    st = summary["settings"]
    n_boot, seed, k = st["lds_resamples"], st["seed"], st["top_k"]
    tables = {name: pd.read_parquet(exp / f"{name}.parquet") for name in columns.TABLES if (exp / f"{name}.parquet").exists()}
    for name, frame in tables.items():
        assert list(frame.columns) == list(columns.TABLES[name]), name
    effects, matrix, predicted, faith, readings = (tables[n] for n in ("effects", "matrix", "predicted", "faithfulness", "readings"))
    langs = summary["languages"]
    selected = pd.read_parquet(run.selection_path)
    uids = selected["uid"].astype(str).tolist()
    test_langs = selected.set_index("uid").loc[uids, "lang"].astype(str).tolist()
    test_order = [x for x in ["de", "fr", "ru"] if x in test_langs]
    assert summary["test_languages"] == test_order

    # the base side: the base final model's predictions (noise-floor/base_predictions.parquet)
    base_preds = pd.read_parquet(experiments / "noise-floor" / "base_predictions.parquet").set_index("uid")
    np.testing.assert_allclose(effects["margin_base"], base_preds.loc[effects["test_uid"], "margin"])
    np.testing.assert_allclose(effects["p_base"], base_preds.loc[effects["test_uid"], "p_label"])
    np.testing.assert_allclose(effects["loss_base"], np.log1p(np.exp(-effects["margin_base"])), rtol=1e-10)

    # the margins table is the sub-runs' own predictions
    margins = tables["margins"]
    for sub_run, rows in margins.groupby("sub_run"):
        preds = pd.read_parquet(experiments / sub_run / "selection" / "predictions.parquet").set_index("uid")
        np.testing.assert_allclose(rows["margin"], preds.loc[rows["test_uid"], "margin"])
        np.testing.assert_allclose(rows["p_label"], preds.loc[rows["test_uid"], "p_label"])
        np.testing.assert_allclose(rows["loss"], -np.log(preds.loc[rows["test_uid"], "p_label"]), rtol=1e-4)

    if summary["design"] == "leave-one-out":
        for row in effects.itertuples():
            m = margins[(margins["sub_run"] == row.sub_run) & (margins["test_uid"] == row.test_uid)].iloc[0]
            assert row.sub_run.endswith(f"no-{row.train_lang}")
            assert row.margin == m["margin"] and row.delta_margin == pytest.approx(row.margin_base - m["margin"])
            assert row.delta_p == pytest.approx(row.p_base - m["p_label"]) and row.delta_loss == pytest.approx(m["loss"] - row.loss_base)
    else:
        mixtures = tables["mixtures"]
        fractions = mixtures.pivot(index="mixture", columns="train_lang", values="kept_fraction")[langs].to_numpy()
        n_mix = len(fractions)
        design = np.column_stack([np.ones(n_mix), fractions])
        order = mixtures.drop_duplicates("mixture").sort_values("mixture")["sub_run"].tolist()
        for value, column, sign in (("margin", "delta_margin", 1), ("p_label", "delta_p", 1), ("loss", "delta_loss", -1)):
            y = margins.pivot(index="sub_run", columns="test_uid", values=value).loc[order, uids].to_numpy()
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            got = effects.pivot(index="test_uid", columns="train_lang", values=column).loc[uids, langs].to_numpy()
            np.testing.assert_allclose(got, sign * coef[1:].T, atol=1e-8)
            if value == "margin":
                s2 = ((y - design @ coef) ** 2).sum(axis=0) / (n_mix - len(langs) - 1)
                se = np.sqrt(s2[:, None] * np.diag(np.linalg.inv(design.T @ design))[None, 1:])
                np.testing.assert_allclose(effects.pivot(index="test_uid", columns="train_lang", values="effect_se").loc[uids, langs].to_numpy(), se, rtol=1e-6)
                for x in test_order:
                    cols = np.array(test_langs) == x
                    c, *_ = np.linalg.lstsq(design, y[:, cols].mean(axis=1), rcond=None)
                    r2 = ((y[:, cols].mean(axis=1) - design @ c) ** 2).sum() / (n_mix - len(langs) - 1)
                    cse = np.sqrt(r2 * np.diag(np.linalg.inv(design.T @ design))[1:])
                    mine = matrix[matrix["test_lang"] == x].set_index("train_lang").loc[langs, "fit_se"].to_numpy()
                    np.testing.assert_allclose(mine, cse, rtol=1e-6)

    # the matrix: means, intervals, the noise floor, within noise
    floor = pd.read_parquet(experiments / "noise-floor" / "noise.parquet")
    for row in matrix.itertuples():
        cell = effects[(effects["test_lang"] == row.test_lang) & (effects["train_lang"] == row.train_lang)]["delta_margin"]
        assert row.n_test == len(cell) and row.mean == pytest.approx(cell.mean(), abs=1e-12)
        low, high = _boot_by_hand(cell, n_boot, seed, f"cell/{row.test_lang}/{row.train_lang}")
        assert row.ci_low == pytest.approx(low, nan_ok=True) and row.ci_high == pytest.approx(high, nan_ok=True)
        mine = floor[floor["test_lang"] == row.test_lang]
        if st["noise_seeds"]:
            per_seed = (mine["margin_base"] - mine["margin"]).groupby(mine["seed"]).mean()
            assert row.noise == pytest.approx(np.sqrt(np.mean(per_seed**2)))
        else:
            assert np.isnan(row.noise)
        assert row.within_noise == _within_by_hand(row.mean, row.ci_low, row.ci_high, row.noise, row.fit_se)
        s = summary["matrix"][row.test_lang][row.train_lang]
        assert s["mean"] == pytest.approx(row.mean) and s["within_noise"] == row.within_noise

    # each method's predictions, from its store
    measured_cells = matrix.set_index(["test_lang", "train_lang"])["mean"]
    measured = effects.pivot(index="test_uid", columns="train_lang", values="delta_margin").loc[uids, langs].to_numpy()
    train = pd.read_parquet(run.split_path("train"))
    assert set(faith["method"]) == set(summary["methods"])
    for method in summary["methods"]:
        scores = load_scores(run, method=method)
        total = pd.DataFrame(scores.total(), index=scores.test_uids, columns=scores.train_uids).loc[uids, train["uid"]].to_numpy()
        tl = train["lang"].astype(str).to_numpy()
        sums = np.column_stack([total[:, tl == y].sum(axis=1) for y in langs])
        shares = np.array([[100 * np.mean(tl[brute_topk(total[i], k, True)] == y) for y in langs] for i in range(len(uids))])
        for predictor, values in ((languages.SUMMED, sums), (languages.SHARE, shares)):
            pred_cells = np.vstack([values[np.array(test_langs) == x].mean(axis=0) for x in test_order])
            meas_cells = np.vstack([[measured_cells.loc[(x, y)] for y in langs] for x in test_order])
            if predictor == languages.SUMMED:
                got = predicted[predicted["method"] == method].set_index(["test_lang", "train_lang"])
                for r, x in enumerate(test_order):
                    for c, y in enumerate(langs):
                        assert got.loc[(x, y), "predicted"] == pytest.approx(pred_cells[r, c], rel=1e-9, abs=1e-12)
                        assert got.loc[(x, y), "share"] == pytest.approx(np.vstack([shares[np.array(test_langs) == x].mean(axis=0)])[0, c])
                        assert got.loc[(x, y), "measured"] == measured_cells.loc[(x, y)]
                        assert got.loc[(x, y), "train_fraction"] == pytest.approx(100 * np.mean(tl == y))
            row = faith[(faith["method"] == method) & (faith["predictor"] == predictor)].iloc[0]
            with np.errstate(invalid="ignore"):
                per_example = np.array(
                    [spearmanr(values[i], measured[i]).statistic if np.ptp(values[i]) > 0 and np.ptp(measured[i]) > 0 else np.nan for i in range(len(uids))]
                )
            assert row["n_test"] == np.isfinite(per_example).sum()
            assert row["lds_mean"] == pytest.approx(np.nanmean(per_example) if np.isfinite(per_example).any() else np.nan, nan_ok=True)
            low, high = _boot_by_hand(per_example, n_boot, seed, f"lds/{method}/{predictor}")
            assert row["lds_ci_low"] == pytest.approx(low, nan_ok=True) and row["lds_ci_high"] == pytest.approx(high, nan_ok=True)
            assert row["distinguishable"] == bool(np.isfinite(low) and not low <= 0 <= high)
            flat_p, flat_m = pred_cells.ravel(), meas_cells.ravel()
            if np.ptp(flat_p) > 0 and np.ptp(flat_m) > 0:
                assert row["matrix_pearson"] == pytest.approx(pearsonr(flat_p, flat_m).statistic)
                assert row["matrix_spearman"] == pytest.approx(spearmanr(flat_p, flat_m).statistic)
            agree = agree_other = 0
            for r, x in enumerate(test_order):
                rd = readings[(readings["method"] == method) & (readings["predictor"] == predictor) & (readings["test_lang"] == x)].iloc[0]
                m_top, m_other = _first_max(meas_cells[r], langs), _first_max(meas_cells[r], langs, exclude=x)
                p_top, p_other = _first_max(pred_cells[r], langs), _first_max(pred_cells[r], langs, exclude=x)
                assert (rd["measured_top"], rd["measured_top_other"], rd["predicted_top"], rd["predicted_top_other"]) == (m_top, m_other, p_top, p_other)
                assert rd["measured_top_other_within_noise"] == bool(matrix.set_index(["test_lang", "train_lang"]).loc[(x, m_other), "within_noise"])
                others = [c for c, y in enumerate(langs) if y not in (x, m_other)]
                assert rd["rank_of_measured_top_other"] == 1 + sum(pred_cells[r, c] > pred_cells[r, langs.index(m_other)] for c in others)
                agree += m_top == p_top
                agree_other += m_other == p_other
            assert (row["top_agree"], row["top_other_agree"]) == (agree, agree_other)
    supported = faith[(faith["predictor"] == languages.SUMMED) & (faith["lds_ci_low"] > 0)]["method"].tolist()
    assert summary["supported"] == supported

    # the section: the readings, the verdict the report's method comparison repeats, the cost, the figures
    html = (exp / "section.html").read_text(encoding="utf-8")
    assert html.startswith('<section id="experiment-languages"') and html.rstrip().endswith("</section>")
    assert "What happens when a language&#x27;s data is removed?" in html and "data:image/png;base64," in html
    from lingtrace.report.html import esc

    for reading in summary["readings"]:
        assert esc(reading) in html
    assert f'<p class="reading" data-verdict="languages">{esc(summary["verdict"])}</p>' in html
    for f in summary["figures"]:
        assert (exp / f).read_bytes()[:4] == b"\x89PNG"
    for t in summary["tables"]:
        assert (exp / t).exists()
    return summary


def test_leave_one_out_end_to_end_reuses_the_zero_shot_retraining(run, capsys, monkeypatch):
    # the zero-shot experiment's retraining without fr (the fixture's zero_shot_languages) is reused
    assert main(["experiment", "zero-shot", str(run.root), "-q"]) == 0
    capsys.readouterr()
    assert main(["experiment", "languages", str(run.root), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "languages: 4 retraining(s)" in out and "no-fr reuses zero-shot/runs/no-fr" in out  # 3 languages + 1 noise seed
    assert main(["experiment", "languages", str(run.root), "-q"]) == 0
    exp = run.root / "experiments" / "languages"
    plan = pd.read_parquet(exp / "plan.parquet")
    assert list(plan.columns) == list(columns.PLAN)
    loo = plan[plan["purpose"] == "leave-one-out"].set_index("removed_lang")
    assert loo.loc["fr", "sub_run"] == "zero-shot/runs/no-fr" and loo.loc["fr", "reused_from"] == "zero-shot"
    assert loo.loc["de", "sub_run"] == "languages/runs/no-de" and loo.loc["de", "reused_from"] == ""
    assert not (exp / "runs" / "no-fr").exists() and sorted(p.name for p in (exp / "runs").iterdir()) == ["no-de", "no-ru"]
    base_train, base_dev = pd.read_parquet(run.split_path("train")), pd.read_parquet(run.split_path("dev"))
    for lang in ("de", "ru"):
        sub = RunDir(exp / "runs" / f"no-{lang}")
        pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path("train"))), _sorted(base_train[base_train["lang"] != lang]))
        pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path("dev"))), _sorted(base_dev[base_dev["lang"] != lang]))
        sub_cfg, base_cfg = read_json(sub.config_path), read_json(run.config_path)
        assert sub_cfg["data"]["exclude_lang"] == lang and all(sub_cfg[s] == base_cfg[s] for s in ("model", "train", "select"))
        # keeps only what the experiment reads: no scores, no checkpoints; predictions on every selected test example
        assert not list(sub.checkpoints_dir.glob("epoch-*")) and not sub.is_complete("influence") and not (sub.root / "influence").exists()
        assert sorted(pd.read_parquet(sub.root / "selection" / "predictions.parquet")["uid"]) == sorted(pd.read_parquet(run.selection_path)["uid"])
        assert loo.loc[lang, "n_removed"] == (base_train["lang"] == lang).sum() and loo.loc[lang, "n_train"] == (base_train["lang"] != lang).sum()
    summary = _check_reported(run)
    assert summary["design"] == "leave-one-out" and summary["reused"] == {"no-fr": "zero-shot/runs/no-fr"}
    assert summary["cost"]["retrainings"] == 3 and summary["cost"]["reused"] == 1  # no-de, no-ru + the noise seed
    assert "reused from the zero-shot experiment" in (exp / "section.html").read_text(encoding="utf-8")

    # a method added later adds rows without retraining anything
    assert main(["influence", str(run.root), "--method", "representation", "-q"]) == 0
    from lingtrace import pipeline

    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "run_stages", _no_retraining)
        assert main(["experiment", "languages", str(run.root), "-q", "--set", "experiment.lds_resamples=300"]) == 0
    summary = _check_reported(run)
    assert summary["methods"] == ["tracin", "representation"] and summary["settings"]["lds_resamples"] == 300
    # another design is other retrainings: refused without --overwrite, in one line
    capsys.readouterr()
    assert main(["experiment", "languages", str(run.root), "-q", "--set", "experiment.languages_design=mixture"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error:") and err.count("\n") == 1 and "--overwrite" in err


def test_mixture_end_to_end(run, capsys):
    settings = ["--set", "experiment.languages_design=mixture", "--set", "experiment.languages_mixtures=6", "--set", "experiment.lds_resamples=200"]
    assert main(["experiment", "languages", str(run.root), "--plan", *settings]) == 0
    assert "languages: 7 retraining(s)" in capsys.readouterr().out  # 6 mixtures + 1 noise seed
    assert main(["experiment", "languages", str(run.root), "-q", *settings]) == 0
    exp = run.root / "experiments" / "languages"
    base_train = pd.read_parquet(run.split_path("train"))
    mixtures = pd.read_parquet(exp / "mixtures.parquet")
    assert sorted(mixtures["mixture"].unique()) == list(range(6)) and set(mixtures["train_lang"]) == {"de", "fr", "ru"}
    langs = base_train["lang"].astype(str).to_numpy()
    for j in range(6):
        sub = RunDir(exp / "runs" / f"mix-{j:03d}")
        fractions, keep = languages.draw_mixture(langs, ["de", "fr", "ru"], j, 0.25, 0)
        # exactly the drawn mixture, in the base run's order
        pd.testing.assert_frame_equal(pd.read_parquet(sub.split_path("train")).reset_index(drop=True), base_train[keep].reset_index(drop=True))
        pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path("dev"))), _sorted(pd.read_parquet(run.split_path("dev"))))
        rows = mixtures[mixtures["mixture"] == j].set_index("train_lang")
        for i, lang in enumerate(("de", "fr", "ru")):
            assert rows.loc[lang, "fraction"] == pytest.approx(fractions[i])
            assert rows.loc[lang, "n_kept"] == keep[langs == lang].sum() and rows.loc[lang, "kept_fraction"] == pytest.approx(keep[langs == lang].mean())
        assert read_json(sub.root / "experiment.json")["fractions"]["fr"] == pytest.approx(fractions[1])
        assert not list(sub.checkpoints_dir.glob("epoch-*")) and not (sub.root / "influence").exists()
    summary = _check_reported(run)
    assert summary["design"] == "mixture" and summary["cost"]["retrainings"] == 7
    matrix = pd.read_parquet(exp / "matrix.parquet")
    assert matrix["fit_se"].notna().all() and (matrix["design"] == "mixture").all()


# ---------------------------------------------------------------- end to end on a local CSV task


def test_local_csv_task_end_to_end_with_the_report(tmp_path, tiny_model_dir, capsys):
    """A task of our own: a CSV with its own column names, two languages, no noise seeds; the report includes
    the section and the method comparison links to it with its verdict."""
    rng = np.random.default_rng(5)
    rows = []
    for split, n in (("train", 10), ("dev", 3), ("test", 5)):
        for i in range(n):
            label = i % 2
            k = int(rng.integers(4))
            for lang in ("de", "ru"):
                pos, neg = WORDS[lang]
                rows.append({"satz": f"{(pos if label else neg)[k]} {int(rng.integers(50))}", "gold": ["bad", "good"][label], "sprache": lang, "paar": f"{split}-{i}", "teil": split})
    data = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        f"""
data:
  task: local
  source: local
  path: {data}
  languages: [de, ru]
  train_per_lang: 10
  dev_per_lang: 3
  test_per_lang: 5
  columns: {{text_a: satz, label: gold, lang: sprache, translation_id: paar, split: teil}}
model:
  name: {tiny_model_dir}
  max_length: 16
train:
  lr: 0.003
  epochs: 2
  batch_size: 8
select:
  per_lang: 2
influence:
  batch_size: 8
  methods: [tracin, representation]
analysis:
  k: 4
experiment:
  noise_seeds: 0
""",
        encoding="utf-8",
    )
    out = RunDir(tmp_path / "run")
    assert main(["run", str(cfg), "--out", str(out.root), "-q"]) == 0
    capsys.readouterr()
    assert main(["experiment", "languages", str(out.root), "-q"]) == 0
    assert "report updated" in capsys.readouterr().out
    summary = _check_reported(out)
    assert summary["languages"] == ["de", "ru"] and summary["methods"] == ["tracin", "representation"]
    assert summary["cost"]["retrainings"] == 2 and all(v is None for v in summary["noise_floor"].values())  # NaN: no seeds
    assert pd.read_parquet(out.root / "experiments" / "languages" / "matrix.parquet")["noise"].isna().all()
    page = (out.report_dir / "index.html").read_text(encoding="utf-8")
    assert 'id="experiment-languages"' in page and "Experiment: languages" in page
    methods = page.split('<section id="methods">', 1)[1].split("</section>", 1)[0]
    from lingtrace.report.html import esc

    assert "href='#experiment-languages'" in methods and esc(summary["verdict"]) in methods
