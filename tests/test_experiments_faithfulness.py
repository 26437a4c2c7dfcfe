"""The faithfulness experiments (lds, k-selection per method) and the noise floor: statistics against independent
computations, and tiny runs end to end."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from lingtrace import evaluation
from lingtrace.cli import main
from lingtrace.experiments import lds, noise
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.run import RunDir, read_predictions
from test_experiments import base_run  # noqa: F401 - the tiny base run fixture (module scope)

# ---------------------------------------------------------------- statistics (pure functions)


def test_lds_per_example_equals_scipy_spearman_row_by_row():
    predicted = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [0.3, -1.0, 2.0, 2.0, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
    measured = np.array([[2.0, 1.0, 4.0, 3.0, 6.0], [5.0, 4.0, 4.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    got = lds.lds_per_example(predicted, measured)
    for i in range(2):
        assert got[i] == pytest.approx(spearmanr(predicted[i], measured[i]).statistic, abs=1e-12)
    assert np.isnan(got[2])  # a constant prediction has no rank correlation
    assert got[0] == pytest.approx(0.8)  # by hand: rank differences 1,1,1,1,0 -> 1 - 6*4/(5*24)


def test_lds_recovers_a_known_correlation_from_a_linear_datamodel():
    """Margins that are an exact linear function of the subset plus Gaussian noise: the LDS of the true
    weights is the (rank) correlation the noise level implies, and a predictor unrelated to the data is ~0."""
    rng = np.random.default_rng(0)
    n_test, n_train, m = 40, 300, 400
    weights = rng.normal(size=(n_test, n_train))
    masks = lds.draw_subsets(n_train, m, 0.5, seed=3)
    signal = lds.predicted_sums(weights, masks)
    sd_signal = signal.std(axis=1, keepdims=True)
    rho = 0.6  # the Pearson correlation between signal and margin the noise level sets
    noise_sd = sd_signal * np.sqrt(1 / rho**2 - 1)
    measured = signal + rng.normal(size=signal.shape) * noise_sd
    expected = 6 / np.pi * np.arcsin(rho / 2)  # Spearman of a bivariate normal with Pearson rho
    got = lds.lds_per_example(signal, measured)
    assert got.mean() == pytest.approx(expected, abs=0.02)
    unrelated = lds.predicted_sums(rng.normal(size=weights.shape), masks)
    assert abs(np.mean(lds.lds_per_example(unrelated, measured))) < 0.03
    null = lds.permutation_null(signal, measured, 200, seed=1)
    assert abs(null.mean()) < 0.02 and null.std() < 0.05


def test_permutation_null_equals_the_mean_lds_of_shuffled_margins():
    import zlib

    rng = np.random.default_rng(4)
    predicted, measured = rng.normal(size=(7, 9)), rng.normal(size=(7, 9))
    predicted[3] = 1.0  # a constant row is left out of every mean, as in the observed LDS
    draws = np.random.default_rng([11, zlib.crc32(b"lds-permutation")])
    by_hand = [np.nanmean(lds.lds_per_example(predicted, measured[:, draws.permutation(9)])) for _ in range(25)]
    np.testing.assert_allclose(lds.permutation_null(predicted, measured, 25, seed=11), by_hand, atol=1e-12)


def test_draw_subsets_is_seeded_nested_in_m_and_sized_by_the_fraction():
    a = lds.draw_subsets(100, 5, 0.3, seed=7)
    assert a.shape == (5, 100) and (a.sum(axis=1) == 30).all()
    np.testing.assert_array_equal(lds.draw_subsets(100, 3, 0.3, seed=7), a[:3])  # more subsets keep the earlier ones
    assert not np.array_equal(lds.draw_subsets(100, 5, 0.3, seed=8), a)
    assert len({a[j].tobytes() for j in range(5)}) == 5
    with pytest.raises(Exception, match="lds_fraction"):
        lds.draw_subsets(3, 2, 0.01, seed=0)


def test_bootstrap_interval_is_reproducible_by_seed_and_brackets_the_mean():
    values = np.random.default_rng(2).normal(0.2, 0.1, size=30)
    a = lds.bootstrap_interval(values, 2000, seed=5)
    assert a == lds.bootstrap_interval(values, 2000, seed=5)
    assert a != lds.bootstrap_interval(values, 2000, seed=6)
    assert a[0] < values.mean() < a[1]
    # close to the normal-theory interval of the mean
    sem = values.std(ddof=1) / np.sqrt(len(values))
    assert a[0] == pytest.approx(values.mean() - 1.96 * sem, abs=0.01) and a[1] == pytest.approx(values.mean() + 1.96 * sem, abs=0.01)
    assert np.isnan(lds.bootstrap_interval(np.array([np.nan, 1.0]), 100, seed=0)[0])


def test_summary_row_and_ceiling_by_hand():
    values = np.array([0.1, 0.3, np.nan, 0.5])
    null = np.array([-0.2, 0.05, 0.1, 0.4, -0.01])
    row = lds.summary_row(values, null, np.array([0.5, np.nan, 0.7, 0.9]), n_subsets=8, n_boot=200, seed=0)
    assert row["n_test"] == 3 and row["mean_lds"] == pytest.approx(0.3)
    assert row["sem_lds"] == pytest.approx(0.2 / np.sqrt(3))
    assert row["p_vs_null"] == pytest.approx((1 + 1) / 6)  # |null| >= 0.3: only 0.4
    assert row["null_sd"] == pytest.approx(np.std(null, ddof=1))
    assert row["detectable_lds"] == pytest.approx(2.801585 * np.std(null, ddof=1), rel=1e-5)
    assert row["mean_ceiling"] == pytest.approx(0.7)
    ceiling = lds.noise_ceiling(np.array([1.0, 3.0, np.nan, 1.0]), np.array([2.0, 2.0, 1.0, 0.0]))
    assert ceiling[0] == pytest.approx(np.sqrt(0.75)) and ceiling[1] == 0.0 and np.isnan(ceiling[2]) and np.isnan(ceiling[3])


def test_correct_class_margin_is_the_log_odds_of_the_gold_label():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [40.0, 0.0, -3.0]], dtype=np.float32)
    labels = np.array([0, 2, 0])
    got = evaluation.correct_class_margin(logits, labels)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    assert got[:2] == pytest.approx(np.log(p[[0, 1], labels[:2]]) - np.log(1 - p[[0, 1], labels[:2]]))
    assert got[2] == pytest.approx(40.0 - np.log(1 + np.exp(-3.0)))  # no rounding of 1 - p at p ~ 1


def test_noise_tables_by_hand():
    base = pd.DataFrame({"uid": ["a", "b"], "lang": ["de", "fr"], "label": [0, 1], "margin": [1.0, 2.0], "p_label": [0.6, 0.8]})
    s1 = base.assign(margin=[1.5, 1.0], p_label=[0.7, 0.5])
    s2 = base.assign(margin=[0.5, 2.0], p_label=[0.5, 0.8])
    table = noise.noise_table(base, {43: s1, 44: s2})
    assert list(table.columns) == list(noise.NOISE) and len(table) == 4
    np.testing.assert_allclose(table["delta_p"], [0.1, -0.3, -0.1, 0.0])
    summary = noise.summarize(table, ["de", "fr"]).set_index("test_lang")
    allrow = summary.loc["all"]
    assert allrow["n_test"] == 2 and allrow["n_seeds"] == 2
    assert allrow["p_sd"] == pytest.approx(np.mean([np.std([0.6, 0.7, 0.5], ddof=1), np.std([0.8, 0.5, 0.8], ddof=1)]))
    assert allrow["margin_sd"] == pytest.approx(np.mean([np.std([1.0, 1.5, 0.5], ddof=1), np.std([2.0, 1.0, 2.0], ddof=1)]))
    assert allrow["mean_abs_delta_p"] == pytest.approx(0.125) and allrow["mean_delta_p"] == pytest.approx(-0.075)
    assert allrow["max_abs_mean_delta_p"] == pytest.approx(0.1)  # seed 43: mean(0.1, -0.3)
    assert summary.loc["de", "n_test"] == 1
    only_a = noise.summarize(table, ["de", "fr"], uids=["a"])
    assert set(only_a["test_lang"]) == {"de", "all"}
    assert noise.detectable_difference(0.1, 50) == pytest.approx(2.801585 * np.sqrt(2) * 0.1 / np.sqrt(50), rel=1e-5)


# ---------------------------------------------------------------- end to end on a tiny run


@pytest.fixture
def run(base_run, tmp_path):  # noqa: F811
    shutil.copytree(base_run.root, tmp_path / "base")
    return RunDir(tmp_path / "base")


def test_lds_end_to_end_scores_every_method_and_reuses_the_retrainings(run, capsys, monkeypatch):
    from lingtrace import pipeline

    settings = ["--set", "experiment.lds_subsets=4", "--set", "experiment.noise_seeds=1", "--set", "experiment.lds_resamples=200"]
    assert main(["experiment", "lds", str(run.root), "--plan", *settings]) == 0
    assert "lds: 5 retraining(s)" in capsys.readouterr().out  # 4 subsets + 1 noise seed
    assert main(["experiment", "lds", str(run.root), "-q", *settings]) == 0
    exp = run.root / "experiments" / "lds"
    assert set(pd.read_parquet(exp / "lds.parquet")["method"]) == {"tracin"}
    # a method added later is scored from the same retrainings: nothing is retrained
    assert main(["influence", str(run.root), "--method", "representation", "-q"]) == 0
    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "run_stages", _no_retraining)
        assert main(["experiment", "lds", str(run.root), "-q", *settings]) == 0
    base_train = pd.read_parquet(run.split_path("train"))
    masks = lds.draw_subsets(len(base_train), 4, 0.5, seed=0)
    margins = pd.read_parquet(exp / "margins.parquet")
    selected = pd.read_parquet(run.selection_path)
    for j in range(4):
        sub = RunDir(exp / "runs" / f"subset-{j:03d}")
        kept = pd.read_parquet(sub.split_path("train"))
        # exactly the drawn subset, in the base run's order, nothing else changed
        pd.testing.assert_frame_equal(kept.reset_index(drop=True), base_train[masks[j]].reset_index(drop=True))
        assert not list(sub.checkpoints_dir.glob("epoch-*"))  # pruned: LDS reads only the kept ids and the logits
        preds = read_predictions(sub)
        logits = np.stack(preds["logits"].to_numpy())
        np.testing.assert_allclose(preds["margin"], evaluation.correct_class_margin(logits, preds["label"].to_numpy()))
        mine = margins[margins["subset"] == j].set_index("test_uid").loc[selected["uid"].astype(str)]
        np.testing.assert_allclose(mine["margin"].to_numpy(), preds.set_index("uid").loc[selected["uid"], "margin"].to_numpy())

    # the LDS of each method, recomputed by hand with scipy from the stores and the margins
    table = pd.read_parquet(exp / "lds.parquet")
    assert set(table["method"]) == {"tracin", "representation"}
    assert list(table.columns) == list(lds.LDS)
    for method in ("tracin", "representation"):
        scores = load_scores(run, method=method)
        total = pd.DataFrame(scores.total(), index=scores.test_uids, columns=scores.train_uids)
        per_example = []
        for uid in selected["uid"].astype(str):
            pred = [total.loc[uid, base_train["uid"][masks[j]]].sum() for j in range(4)]
            meas = margins[margins["test_uid"] == uid].sort_values("subset")["margin"].to_numpy()
            per_example.append(spearmanr(pred, meas).statistic)
        row = table[(table["method"] == method) & (table["test_lang"] == "all")].iloc[0]
        assert row["mean_lds"] == pytest.approx(np.nanmean(per_example), abs=1e-9)
        assert row["n_subsets"] == 4 and row["ci_low"] <= row["mean_lds"] <= row["ci_high"]

    # the noise floor: a sub-run on the unchanged data with train.seed + 1
    seed_sub = RunDir(run.root / "experiments" / "noise-floor" / "runs" / "seed-43")
    pd.testing.assert_frame_equal(pd.read_parquet(seed_sub.split_path("train")), base_train)
    assert read_json(seed_sub.config_path)["train"]["seed"] == 43
    floor = pd.read_parquet(run.root / "experiments" / "noise-floor" / "noise.parquet")
    assert len(floor) == len(selected) and (floor["seed"] == 43).all()
    section = (exp / "section.html").read_text(encoding="utf-8")
    assert section.startswith('<section id="experiment-lds"') and "Noise floor" in section and "representation" in section
    summary = read_json(exp / "summary.json")
    assert summary["methods"] == ["tracin", "representation"] and summary["complete"]
    # the verdict on the methods at chance, from the table's permutation p-values (a warning when some are)
    from lingtrace.report.html import esc

    overall = table[table["test_lang"] == "all"].set_index("method")
    flag = ' data-warning="1"' if lds.at_chance(overall) else ""
    assert f'<p class="reading" data-verdict="lds"{flag}>{esc(lds.chance_verdict(overall))}</p>' in section

    # another fraction is another set of retrainings: refused without --overwrite
    assert main(["experiment", "lds", str(run.root), "-q", *settings, "--set", "experiment.lds_fraction=0.4"]) == 2
    assert "other settings" in capsys.readouterr().err


def _no_retraining(sub, cfg, stages, *args, **kwargs):
    from lingtrace.run import RunDir

    assert all(RunDir(sub.root).is_complete(s) for s in stages), f"{sub.root} would be retrained"


def test_k_selection_runs_for_every_method_and_shares_identical_retrainings(run):
    from test_experiments import brute_topk

    assert main(["influence", str(run.root), "--method", "representation", "-q"]) == 0
    argv = ["experiment", "k-selection", str(run.root), "-q", "--set", "experiment.k_grouping=all", "--set", "experiment.ks=[2]", "--set", "experiment.noise_seeds=1"]
    assert main(argv) == 0
    exp = run.root / "experiments" / "k-selection"
    plan = pd.read_parquet(exp / "plan.parquet")
    changes = pd.read_parquet(exp / "changes.parquet")
    train = pd.read_parquet(run.split_path("train"))
    removed_by_sub = {name: set(train["uid"]) - set(pd.read_parquet(exp / "runs" / name / "data" / "train.parquet")["uid"]) for name in plan["sub_run"]}
    # one retraining per distinct training set, each serving every method whose removal it is
    assert len({frozenset(v) for v in removed_by_sub.values()}) == len(plan)
    assert set(changes["method"]) == {"tracin", "representation"}
    for method in ("tracin", "representation"):
        scores = load_scores(run, method=method)
        total = scores.total()
        rows = [scores.test_uids.index(u) for u in changes[changes["method"] == method]["test_uid"].unique()]
        mine = changes[changes["method"] == method].drop_duplicates("direction").set_index("direction")
        for direction in ("positive", "negative"):
            cols = set().union(*(brute_topk(total[i], 2, direction == "positive") for i in rows))
            assert removed_by_sub[mine.loc[direction, "sub_run"]] == {scores.train_uids[c] for c in cols}
        # the random control is as large as this method's positive removal, and independent of the scores
        assert len(removed_by_sub[mine.loc["random", "sub_run"]]) == len(removed_by_sub[mine.loc["positive", "sub_run"]])
        assert method in plan.set_index("sub_run").loc[mine.loc["random", "sub_run"], "methods"].split(",")
    assert (plan[plan["direction"] != "random"]["sub_run"].str.contains("representation") == plan[plan["direction"] != "random"]["methods"].eq("representation")).all()
    faith = pd.read_parquet(exp / "faithfulness.parquet")
    assert set(faith["method"]) == {"tracin", "representation"}
    for row in faith[faith["test_lang"] == "all"].itertuples():
        sub = changes[(changes["method"] == row.method) & (changes["direction"] == row.direction)]
        assert row.mean_delta == pytest.approx(sub["delta"].mean())
    section = (exp / "section.html").read_text(encoding="utf-8")
    assert "representation:" in section and "tracin:" in section and "Noise floor" in section


def test_without_noise_seeds_the_tables_are_empty_and_say_so():
    base = pd.DataFrame({"uid": ["a"], "lang": ["de"], "label": [0], "margin": [1.0], "p_label": [0.6]})
    table = noise.noise_table(base, {})
    assert table.empty and list(table.columns) == list(noise.NOISE)
    summary = noise.summarize(table, ["de"])
    assert summary.empty and list(summary.columns) == list(noise.NOISE_SUMMARY)
    floor = noise.NoiseFloor([], table, summary, {})
    assert floor.overall() == {} and "No noise floor" in noise.describe(floor)
    rng = np.random.default_rng(0)
    examples, overall = lds.lds_tables({"m": rng.normal(size=(3, 5))}, rng.normal(size=(3, 5)), ["a", "b", "c"], ["de", "de", "fr"], ["de", "fr"], np.full(3, np.nan), 100, 100, 0)
    assert examples["ceiling"].isna().all() and overall["mean_ceiling"].isna().all()
    assert list(overall["test_lang"]) == ["de", "fr", "all"] and (overall["n_subsets"] == 5).all()


def test_fewer_noise_seeds_leave_the_shared_tables_alone(tmp_path):
    """An experiment asking for fewer noise seeds than the shared floor holds (e.g. noise_seeds 0 after an
    lds run with 3) uses its own subset and does not overwrite the shared tables."""
    assert noise.covers_stored(tmp_path, [])  # nothing stored yet
    (tmp_path / "summary.json").write_text('{"seeds": [43, 44, 45]}')
    assert not noise.covers_stored(tmp_path, [])
    assert not noise.covers_stored(tmp_path, [43, 44])
    assert noise.covers_stored(tmp_path, [43, 44, 45])
    assert noise.covers_stored(tmp_path, [43, 44, 45, 46])


def test_methods_at_chance_are_named_by_the_permutation_p_and_flagged_in_the_method_comparison():
    from types import SimpleNamespace

    from lingtrace.experiments import html as fragments
    from lingtrace.report.html import find_verdict, verdict_paragraph
    from lingtrace.report.sections.comparison import _lds_check

    overall = pd.DataFrame(
        {"mean_lds": [0.397, 0.088, 0.2], "p_vs_null": [0.0005, 0.084, 0.05]}, index=pd.Index(["tracin", "trak", "ekfac"], name="method")
    )
    assert lds.at_chance(overall) == ["trak", "ekfac"]  # p = 0.05 is not below 0.05
    text = lds.chance_verdict(overall)
    assert text.startswith("At chance on this run: trak, ekfac are not distinguishable")
    assert "trak: mean LDS 0.088, permutation p = 0.084" in text and "tracin" not in text
    clean = lds.chance_verdict(overall.loc[["tracin"]])
    assert clean == "Every method (tracin) predicts retraining better than chance on this run (permutation p < 0.05)."
    assert lds.chance_verdict(overall.assign(p_vs_null=np.nan)) == "No method could be tested against chance."

    def inputs(verdict, warning):
        body = verdict_paragraph(lds.NAME, verdict, warning)
        return SimpleNamespace(experiments=[("lds", fragments.section("lds", lds.TITLE, lds.REPRODUCES, [], "", [], body))])

    assert find_verdict(inputs(text, True).experiments[0][1], "lds") == (text, True)
    assert find_verdict(inputs(clean, False).experiments[0][1], "lds") == (clean, False)
    assert find_verdict(inputs(clean, False).experiments[0][1], "languages") is None
    flagged = _lds_check(inputs(text, True))
    assert flagged.startswith("<p class='warning'>") and "href='#experiment-lds'" in flagged and fragments.esc(text) in flagged
    assert _lds_check(inputs(clean, False)).startswith("<p class='reading'>")
    assert _lds_check(SimpleNamespace(experiments=[])) == ""
