"""Retraining experiments: the plan's pure functions, then each experiment end to end on a tiny model.

The end-to-end tests build one tiny base run (prepare, train, select, influence on local toy data) and
copy it per test. They check the training set of every sub-run against a removal / exclusion / addition
recomputed here from the saved base data and scores, recompute every reported number from the saved
scores and predictions, and check resuming, refusals and one-line errors.
"""

from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pandas as pd
import pytest

from conftest import toy_examples
from lingtrace.cli import main
from lingtrace.config import Config, apply_overrides
from lingtrace.errors import LingtraceError
from lingtrace.experiments import kselect, zeroshot
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.run import RunDir

EXAMPLE_COLUMNS = ["uid", "lang", "translation_id", "text_a", "text_b", "label"]


# ---------------------------------------------------------------- pure functions of the plan


def brute_topk(row: np.ndarray, k: int, largest: bool) -> list[int]:
    """Top-k columns of one row, ties broken by the lower column (the project's rule), by full sorting."""
    key = -row if largest else row
    return [int(c) for c in np.lexsort((np.arange(len(row)), key))[:k]]


def test_topk_union_is_the_union_of_each_rows_topk_with_best_rank_and_count():
    rng = np.random.default_rng(0)
    m = np.round(rng.normal(size=(3, 40)), 1)  # rounded: ties occur
    for k in (1, 5, 12):
        for largest in (True, False):
            cols, best, counts = kselect.topk_union(m, k, largest)
            per_row = [brute_topk(m[i], k, largest) for i in range(3)]
            expected = sorted(set().union(*per_row))
            assert cols.tolist() == expected
            for c, b, n in zip(cols, best, counts):
                assert b == min(r.index(c) + 1 for r in per_row if c in r)
                assert n == sum(c in r for r in per_row)


def test_removal_plan_sets_and_random_control_independent_of_scores():
    rng = np.random.default_rng(1)
    n_train = 60
    a = rng.normal(size=(4, n_train))
    b = a[:, rng.permutation(n_train)]  # other scores, same union sizes (same values in other columns)
    groups = [kselect.Group("lang-de", (0, 1)), kselect.Group("lang-fr", (2, 3))]
    ks = [3, 6, 10]
    plan_a = {(r.group.name, r.direction, r.k): r for r in kselect.plan_removals(a, groups, ks, ["positive", "negative", "random"], seed=7)}
    plan_b = {(r.group.name, r.direction, r.k): r for r in kselect.plan_removals(b, groups, ks, ["positive", "negative", "random"], seed=7)}
    other_seed = {(r.group.name, r.direction, r.k): r for r in kselect.plan_removals(a, groups, ks, ["random"], seed=8)}
    assert len(plan_a) == 2 * 3 * 3
    for (g, d, k), r in plan_a.items():
        rows = [0, 1] if g == "lang-de" else [2, 3]
        if d != "random":
            expected = sorted(set().union(*(brute_topk(a[i], k, d == "positive") for i in rows)))
            assert r.columns.tolist() == expected
            continue
        pos = plan_a[(g, "positive", k)]
        assert len(r.columns) == len(pos.columns)  # as many as the positive removal of the group
        # the draw does not depend on the scores: other scores with the same removal size give the same draw
        assert plan_b[(g, "positive", k)].columns.tolist() != pos.columns.tolist()
        assert plan_b[(g, "random", k)].columns.tolist() == r.columns.tolist()
        # it is the seeded permutation's prefix of that size (nested across k), and another seed differs
        perm = np.random.default_rng([7, zlib.crc32(b"random-removal"), zlib.crc32(g.encode())]).permutation(n_train)
        assert r.columns.tolist() == sorted(perm[: len(r.columns)].tolist())
        assert (perm[r.draw_position] == r.columns).all()  # draw_position: where each removed column is in the draw
        assert other_seed[(g, "random", k)].columns.tolist() != r.columns.tolist()
    # different groups draw differently; random draws are nested across k like the top-k unions
    assert plan_a[("lang-de", "random", 10)].columns.tolist() != plan_a[("lang-fr", "random", 10)].columns.tolist()
    for g in ("lang-de", "lang-fr"):
        for d in ("positive", "negative", "random"):
            assert set(plan_a[(g, d, 3)].columns) <= set(plan_a[(g, d, 6)].columns) <= set(plan_a[(g, d, 10)].columns)
    # the random function itself takes no scores
    c1, _ = kselect.random_removal(n_train, 5, 7, "lang-de")
    c2, _ = kselect.random_removal(n_train, 5, 7, "lang-de")
    assert c1.tolist() == c2.tolist()


def test_plan_rejects_k_not_below_the_training_set():
    m = np.zeros((2, 10))
    with pytest.raises(LingtraceError, match="only 10 training examples"):
        kselect.plan_removals(m, [kselect.Group("all", (0, 1))], [10], ["positive"], 0)
    with pytest.raises(LingtraceError, match="removes all 10"):
        kselect.plan_removals(np.arange(20.0).reshape(2, 10) * np.array([[1], [-1]]), [kselect.Group("all", (0, 1))], [5], ["positive"], 0)


def test_choose_tests_and_groups():
    langs = ["de"] * 5 + ["fr"] * 3 + ["ru"] * 2
    uids = [f"t{i}" for i in range(10)]
    rows = kselect.choose_tests(langs, ["de", "fr"], 2, seed=3)
    assert [langs[r] for r in rows].count("de") == 2 and [langs[r] for r in rows].count("fr") == 2
    assert rows.tolist() == kselect.choose_tests(langs, ["de", "fr"], 2, seed=3).tolist()
    assert {tuple(kselect.choose_tests(langs, ["de"], 2, seed=s)) for s in range(10)} != {tuple(rows[:2])}
    assert kselect.choose_tests(langs, ["de", "fr", "ru"], None, 0).tolist() == list(range(10))
    groups = kselect.make_groups(uids, langs, rows, "language", ["de", "fr"])
    assert [g.name for g in groups] == ["lang-de", "lang-fr"] and sum(len(g.rows) for g in groups) == 4
    assert [g.name for g in kselect.make_groups(uids, langs, rows, "example", ["de", "fr"])] == [f"ex-t{r}" for r in rows]
    assert kselect.make_groups(uids, langs, rows, "all", ["de"])[0].rows == tuple(rows.tolist())


def test_levels_off_definition():
    # change grows then stays within 10% of its range (0.2): levels off at the first k of the plateau
    assert kselect.levels_off([10, 20, 40, 80], [-0.1, -0.19, -0.2, -0.195], 10.0)[0] == 20
    # still moving at the end: not levelled off within the sweep
    assert kselect.levels_off([10, 20, 40], [-0.1, -0.2, -0.3], 10.0)[0] is None
    # range includes the k = 0 anchor, so a flat curve at -0.3 levels off at once
    k, rng, tol = kselect.levels_off([10, 20, 40], [-0.3, -0.31, -0.3], 10.0)
    assert k == 10 and rng == pytest.approx(0.31) and tol == pytest.approx(0.031)
    assert kselect.levels_off([50], [-0.2], 10.0)[0] is None


def test_zero_shot_compare_on_a_hand_made_case():
    full_train = pd.DataFrame(
        {"uid": ["fr-1", "fr-2", "de-1", "de-2", "de-3"], "lang": ["fr", "fr", "de", "de", "de"], "translation_id": ["1", "2", "1", "2", "3"]}
    )
    zero_train = full_train[full_train["lang"] != "fr"].reset_index(drop=True)
    full = np.array([[5.0, 1.0, 4.0, 0.0, 3.0]])  # top-3: fr-1, de-1, de-3
    zero = np.array([[1.0, 0.5, 3.0]])  # top-2: de-3, de-1
    out = zeroshot.compare(full, full_train, zero, zero_train, "fr", 3, "positive")
    row = out.iloc[0]
    # full top-3 = {fr-1, de-1, de-3}: in-language tids {1}; zero-shot top-3 = all of de (3 examples): 1 is a translation
    assert row["n_full_in_language"] == 1 and row["pct_translations"] == pytest.approx(100 / 3)
    assert row["pct_translations_chance"] == pytest.approx(100 / 3)
    assert row["n_full_other"] == 2 and row["pct_other_retained"] == pytest.approx(100.0)
    out2 = zeroshot.compare(full, full_train, zero, zero_train, "fr", 2, "positive")  # full top-2: fr-1, de-1; zero top-2: de-3, de-1
    assert out2.iloc[0]["pct_translations"] == pytest.approx(50.0) and out2.iloc[0]["pct_other_retained"] == pytest.approx(100.0)



def test_zero_shot_summary_and_share_rows_by_hand():
    comp = pd.DataFrame(
        {
            "pct_translations": [50.0, np.nan, 100.0],
            "pct_translations_chance": [30.0, np.nan, 30.0],
            "pct_other_retained": [0.0, 50.0, 100.0],
            "pct_other_retained_chance": [10.0, 10.0, 10.0],
        }
    )
    row = zeroshot.summary_row(comp, "fr", "positive", 2)
    assert row["n_test"] == 3 and row["n_test_without_in_language"] == 1
    assert row["pct_translations"] == pytest.approx(75.0) and row["pct_translations_std"] == pytest.approx(25.0)
    assert row["pct_translations_chance"] == pytest.approx(30.0)
    assert row["pct_other_retained"] == pytest.approx(50.0) and row["pct_other_retained_std"] == pytest.approx(np.sqrt(5000 / 3))
    train = pd.DataFrame({"lang": ["de", "de", "fr", "es"]})
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])  # top-2: (de, de) and (es, fr)
    rows = {r["train_lang"]: r for r in zeroshot.language_share_rows(scores, train, "fr", "full", "positive", 2, ["de", "fr", "es"])}
    assert rows["de"]["share"] == pytest.approx(50.0) and rows["fr"]["share"] == pytest.approx(25.0) and rows["es"]["share"] == pytest.approx(25.0)
    assert rows["de"]["share_std"] == pytest.approx(50.0) and rows["de"]["train_fraction"] == pytest.approx(50.0)
    assert all(r["n_test"] == 2 for r in rows.values())

@pytest.mark.parametrize(
    "override, message",
    [
        ("experiment.k_grouping=lang", "k_grouping"),
        ("experiment.ks=[0,10]", "experiment.ks"),
        ("experiment.k_directions=[up]", "k_directions"),
        ("experiment.zero_shot_languages=[xx]", "zero_shot_languages"),
        ("experiment.imbalance_pcts=[-5]", "imbalance_pcts"),
        ("experiment.level_tolerance=0", "level_tolerance"),
        ("experiment.lds_subsets=2", "lds_subsets"),
        ("experiment.lds_fraction=1", "lds_fraction"),
        ("experiment.lds_resamples=10", "lds_resamples"),
        ("experiment.noise_seeds=-1", "noise_seeds"),
    ],
)
def test_experiment_config_validation(override, message):
    from lingtrace.config import validate

    with pytest.raises(LingtraceError, match=message):
        validate(apply_overrides(Config(), [override]))


# ---------------------------------------------------------------- end to end on a tiny model


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_model_dir):
    """A tiny base run complete through influence; train pool larger than the sample (for imbalance)."""
    root = tmp_path_factory.mktemp("exp")
    parts = []
    for split, n, seed in [("train", 16, 0), ("validation", 4, 1), ("test", 6, 2)]:
        frame = toy_examples(n_per_lang=n, split=split, seed=seed).drop(columns=["uid"])
        frame["split"] = split
        frame["translation_id"] = split + "-" + frame["translation_id"]
        frame["label"] = frame["label"].map({0: "neg", 1: "pos"})
        parts.append(frame)
    data = root / "toy.csv"
    pd.concat(parts).to_csv(data, index=False)
    cfg = root / "toy.yaml"
    cfg.write_text(
        f"""
data:
  task: local
  source: local
  path: {data}
  languages: [de, fr, ru]
  train_per_lang: 8
  dev_per_lang: 4
  test_per_lang: 6
  columns: {{text_a: text_a, label: label, lang: lang, translation_id: translation_id, split: split}}
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
experiment:
  ks: [2, 4]
  k_grouping: language
  k_languages: [de, fr]
  k_test_per_lang: null
  top_k: 5
  zero_shot_languages: [fr]
  imbalance_languages: [de]
  imbalance_pcts: [50, 100]
  noise_seeds: 1
""",
        encoding="utf-8",
    )
    out = root / "base"
    assert main(["run", str(cfg), "--out", str(out), "--stages", "prepare,train,select,influence", "-q"]) == 0
    return RunDir(out)


@pytest.fixture
def run(base_run, tmp_path):
    shutil.copytree(base_run.root, tmp_path / "base")
    return RunDir(tmp_path / "base")


def _mtimes(path):
    """Modification times of the sub-runs' outputs (config.json is rewritten, unchanged, by every pipeline call)."""
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file() and p.name != "config.json"}


def _sorted(frame):
    return frame[EXAMPLE_COLUMNS].sort_values("uid").reset_index(drop=True)


def _base_files(run):
    return {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file() and "experiments" not in p.relative_to(run.root).parts}


def _check_before_pruning(monkeypatch, check):
    """Run ``check(sub RunDir)`` on each sub-run just before its checkpoints are pruned."""
    from lingtrace import run as run_module

    real = run_module.prune_checkpoints

    def checking(sub, by, kept):
        check(sub)
        return real(sub, by, kept)

    monkeypatch.setattr(run_module, "prune_checkpoints", checking)


def _check_pruned(sub, experiment, influence):
    """The sub-run's checkpoints are gone, recorded in its manifest and experiment.json; its results remain."""
    assert not list(sub.checkpoints_dir.glob("epoch-*")) and not (sub.checkpoints_dir / "trainer_state.safetensors").exists()
    manifest = read_json(sub.manifest_path)
    assert manifest["complete"] and manifest["pruned"]["by"] == f"experiment {experiment}"
    assert manifest["pruned"]["removed"] == [e["path"] for e in manifest["epochs"]]
    record = read_json(sub.root / "experiment.json")["checkpoints"]
    assert record["pruned"] and record["bytes_freed"] > 0 and record["removed"] == manifest["pruned"]["removed"]
    assert ("influence/ (when the experiment scores the sub-run)" in record["kept"]) == influence
    for path in (sub.selection_path, sub.selection_path.parent / "predictions.parquet", sub.split_path("train")):
        assert path.exists()
    assert sub.is_complete("influence") == influence


def test_k_selection_end_to_end(run, capsys, monkeypatch):
    before = _base_files(run)
    checked = []
    _check_before_pruning(monkeypatch, lambda sub: checked.append(_check_p_label(sub.root)))
    assert main(["experiment", "k-selection", str(run.root), "-q"]) == 0
    monkeypatch.undo()
    assert _base_files(run) == before  # the base run is only read
    exp = run.root / "experiments" / "k-selection"
    # p_label is the gold-label probability of every retrained final model: one per distinct removal set the run
    # planned (identical sets share one retraining; how many coincide depends on near-tied scores of this
    # fixture), plus the noise-floor seed
    retrained = pd.read_parquet(exp / "plan.parquet")["sub_run"].nunique() + read_json(run.config_path)["experiment"]["noise_seeds"]
    assert len(checked) == retrained
    base_train = pd.read_parquet(run.split_path("train"))
    scores = load_scores(run)
    total = scores.total()
    selected = pd.read_parquet(run.selection_path).set_index("uid").loc[scores.test_uids].reset_index()
    train_al = base_train.set_index("uid").loc[scores.train_uids].reset_index()
    plan = pd.read_parquet(exp / "plan.parquet")
    assert len(plan) == 2 * 2 * 3  # groups de, fr x k 2, 4 x positive, negative, random (one method: tracin)
    assert set(plan["methods"]) == {"tracin"}
    assert set(plan["group"]) == {"lang-de", "lang-fr"}

    for row in plan.itertuples():
        sub = RunDir(exp / "runs" / row.sub_run)
        lang = row.group.removeprefix("lang-")
        rows = np.flatnonzero(selected["lang"] == lang)
        if row.direction == "random":
            n = int(plan[(plan.group == row.group) & (plan.k == row.k) & (plan.direction == "positive")]["n_removed"].iloc[0])
            perm = np.random.default_rng([0, zlib.crc32(b"random-removal"), zlib.crc32(row.group.encode())]).permutation(len(train_al))
            removed = set(train_al["uid"].iloc[perm[:n]])
        else:
            cols = set().union(*(brute_topk(total[i], row.k, row.direction == "positive") for i in rows))
            removed = set(train_al["uid"].iloc[sorted(cols)])
        sub_train = pd.read_parquet(sub.split_path("train"))
        # exactly the base training set minus the removal, nothing else changed
        assert set(sub_train["uid"]) == set(base_train["uid"]) - removed and len(sub_train) == len(base_train) - len(removed)
        pd.testing.assert_frame_equal(_sorted(sub_train), _sorted(base_train[~base_train["uid"].isin(removed)]))
        changed = pd.read_parquet(sub.data_dir / "changed.parquet")
        assert set(changed["uid"]) == removed and (changed["change"] == "removed").all()
        for split in ("dev", "test"):
            pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path(split))), _sorted(pd.read_parquet(run.split_path(split))))
        sub_cfg, base_cfg = read_json(sub.config_path), read_json(run.config_path)
        for section in ("data", "model", "train", "select", "influence"):
            assert sub_cfg[section] == base_cfg[section]  # only the data differs
        record = read_json(sub.root / "experiment.json")
        assert record["k"] == row.k and record["direction"] == row.direction and record["n_changed"] == len(removed)
        assert row.n_removed == len(removed)
        # its evaluation is on the base run's selected test examples of the group
        assert sorted(pd.read_parquet(sub.selection_path)["uid"]) == sorted(selected["uid"].iloc[rows])

    # every reported number recomputed from the saved predictions
    base_preds = pd.read_parquet(exp / "base_predictions.parquet").set_index("uid")
    changes = pd.read_parquet(exp / "changes.parquet")
    assert list(changes.columns) == list(kselect.CHANGES)
    for row in changes.itertuples():
        sel = pd.read_parquet(exp / "runs" / row.sub_run / "selection" / "test.parquet").set_index("uid")
        assert row.p_retrained == pytest.approx(sel.loc[row.test_uid, "p_label"])
        assert row.p_base == pytest.approx(base_preds.loc[row.test_uid, "p_label"])
        assert row.delta == pytest.approx(row.p_retrained - row.p_base)
        assert row.flipped == (sel.loc[row.test_uid, "pred"] != sel.loc[row.test_uid, "label"])
    # the base predictions agree with the base run's own selection (same model, same examples)
    sel_base = selected.set_index("uid")
    np.testing.assert_allclose(base_preds.loc[sel_base.index.intersection(base_preds.index), "p_label"], sel_base.loc[sel_base.index.intersection(base_preds.index), "confidence"], atol=1e-5)
    for name in plan["sub_run"]:
        _check_pruned(RunDir(exp / "runs" / name), "k-selection", influence=False)

    faith = pd.read_parquet(exp / "faithfulness.parquet")
    for row in faith.itertuples():
        sub = changes[(changes.direction == row.direction) & (changes.k == row.k)]
        if row.test_lang != "all":
            sub = sub[sub.test_lang == row.test_lang]
        assert row.n_test == len(sub) and row.mean_delta == pytest.approx(sub["delta"].mean())
        assert row.std_delta == pytest.approx(sub["delta"].std(ddof=0)) and row.flip_pct == pytest.approx(100 * sub["flipped"].mean())
        if row.direction != "random":
            rand = changes[(changes.direction == "random") & (changes.k == row.k)].set_index(["group", "test_uid"])["delta"]
            diff = sub.set_index(["group", "test_uid"])["delta"] - rand.reindex(sub.set_index(["group", "test_uid"]).index)
            assert row.mean_minus_random == pytest.approx(diff.mean())
    summary = read_json(exp / "summary.json")
    assert summary["methods"] == ["tracin"]
    for d, by_k in summary["mean_delta"]["tracin"].items():
        for k, v in by_k.items():
            assert v == pytest.approx(faith[(faith.direction == d) & (faith.k == int(k)) & (faith.test_lang == "all")]["mean_delta"].iloc[0])
    lo = pd.read_parquet(exp / "levels_off.parquet")
    for row in lo.itertuples():
        allrows = faith[(faith.direction == row.direction) & (faith.test_lang == "all")].sort_values("k")
        expected = _levels_off_by_hand(allrows["k"].tolist(), allrows["mean_delta"].tolist(), 10.0)
        assert (None if pd.isna(row.levels_off_k) else int(row.levels_off_k)) == expected == summary["levels_off"]["tracin"][row.direction]
    assert summary["cost"]["retrainings"] == 13 and summary["cost"]["grouping"] == "language"  # 12 + the noise seed
    _check_section(exp, "12 retrainings for 1 method(s) (tracin)")
    # next to the figures: the noise floor of the chosen test examples and the difference they can detect
    floor = pd.read_parquet(run.root / "experiments" / "noise-floor" / "noise.parquet")
    chosen = floor[floor["test_uid"].isin(set(changes["test_uid"]))]
    p_sd = np.mean([np.std([g["p_base"].iloc[0], *g["p_label"]], ddof=1) for _, g in chosen.groupby("test_uid")])
    row = faith[(faith.direction == "positive") & (faith.test_lang == "all")].iloc[0]
    assert row.detectable_vs_random == pytest.approx(2.801585 * np.sqrt(2) * p_sd / np.sqrt(row.n_test), rel=1e-5)
    assert "Noise floor" in (exp / "section.html").read_text(encoding="utf-8")

    # rerun: nothing is retrained (training would fail), results are rewritten
    stamps = _mtimes(exp / "runs")
    from lingtrace import pipeline

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "train", _fail)
    capsys.readouterr()
    assert main(["experiment", "k-selection", str(run.root), "-q"]) == 0
    assert _mtimes(exp / "runs") == stamps
    # a result-only setting is applied without retraining
    assert main(["experiment", "k-selection", str(run.root), "-q", "--set", "experiment.level_tolerance=50"]) == 0
    assert read_json(exp / "summary.json")["settings"]["level_tolerance"] == 50
    # a changed retraining setting is refused with one line, and nothing is touched
    capsys.readouterr()
    assert main(["experiment", "k-selection", str(run.root), "-q", "--set", "experiment.ks=[2,3]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error:") and err.count("\n") == 1 and "--overwrite" in err and "ks" in err
    assert (exp / "summary.json").exists() and _mtimes(exp / "runs") == stamps
    # with --overwrite only the new retrainings run; the unchanged ones (k = 2) are reused
    monkeypatch.undo()
    assert main(["experiment", "k-selection", str(run.root), "-q", "--overwrite", "--set", "experiment.ks=[2,3]"]) == 0
    after = _mtimes(exp / "runs")
    kept = {p: t for p, t in stamps.items() if "-k2" in str(p.relative_to(exp / "runs")).split("/")[0]}
    assert kept and all(after[p] == t for p, t in kept.items())
    assert any("-k3" in str(p) for p in after)
    assert sorted(pd.read_parquet(exp / "plan.parquet")["k"].unique()) == [2, 3]


def _fail(*args, **kwargs):
    raise AssertionError("a completed retraining was redone")


def _levels_off_by_hand(ks, means, tol):
    r = max([0.0, *means]) - min([0.0, *means])
    for i in range(len(ks) - 1):
        if all(abs(m - means[i]) <= tol / 100 * r for m in means[i + 1 :]):
            return ks[i]
    return None


def _check_p_label(sub_root):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sub = RunDir(sub_root)
    final = read_json(sub.manifest_path)["final_epoch"]
    sel = pd.read_parquet(sub.selection_path)
    model = AutoModelForSequenceClassification.from_pretrained(sub.checkpoint_dir(final)).eval()
    tok = AutoTokenizer.from_pretrained(sub.checkpoint_dir(final))
    for row in sel.itertuples():
        with torch.no_grad():
            probs = torch.softmax(model(**tok([row.text_a], return_tensors="pt")).logits, -1)[0]
        assert float(probs[int(row.label)]) == pytest.approx(row.p_label, abs=1e-4)


def _check_section(exp, cost_text):
    html = (exp / "section.html").read_text(encoding="utf-8")
    name = exp.name
    assert html.startswith(f'<section id="experiment-{name}"') and html.rstrip().endswith("</section>")
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html
    assert cost_text in html and 'class="reading"' in html
    summary = read_json(exp / "summary.json")
    assert summary["complete"] and summary["section"] == "section.html" and summary["readings"]
    for t in summary["tables"]:
        assert (exp / t).exists()
    for f in summary["figures"]:
        assert (exp / f).read_bytes()[:4] == b"\x89PNG"
    json.loads((exp / "summary.json").read_text())  # strict JSON


def test_zero_shot_end_to_end(run):
    assert main(["experiment", "zero-shot", str(run.root), "-q"]) == 0
    exp = run.root / "experiments" / "zero-shot"
    sub = RunDir(exp / "runs" / "no-fr")
    base_train, base_dev = pd.read_parquet(run.split_path("train")), pd.read_parquet(run.split_path("dev"))
    sub_train = pd.read_parquet(sub.split_path("train"))
    pd.testing.assert_frame_equal(_sorted(sub_train), _sorted(base_train[base_train["lang"] != "fr"]))
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path("dev"))), _sorted(base_dev[base_dev["lang"] != "fr"]))
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path("test"))), _sorted(pd.read_parquet(run.split_path("test"))))
    changed = pd.read_parquet(sub.data_dir / "changed.parquet")
    assert sorted(changed["uid"]) == sorted(pd.concat([base_train, base_dev]).query("lang == 'fr'")["uid"]) and (changed["change"] == "excluded").all()
    cfg = read_json(sub.config_path)
    assert cfg["data"]["exclude_lang"] == "fr" and cfg["train"] == read_json(run.config_path)["train"]

    # same test examples as the full model; influence recomputed on the zero-shot model
    base_scores, zs = load_scores(run), load_scores(sub)
    base_sel = pd.read_parquet(run.selection_path)
    fr_uids = sorted(base_sel.loc[base_sel["lang"] == "fr", "uid"])
    assert sorted(zs.test_uids) == fr_uids and zs.train_uids == sub_train["uid"].tolist()
    k = 5
    full_train = base_train.set_index("uid").loc[base_scores.train_uids].reset_index()
    zs_train = sub_train.set_index("uid").loc[zs.train_uids].reset_index()
    per_test = pd.read_parquet(exp / "per_test.parquet")
    summ = pd.read_parquet(exp / "zero_shot.parquet")
    shares = pd.read_parquet(exp / "language_shares.parquet")
    for direction in ("positive", "negative"):
        a_vals, b_vals = [], []
        zs_shares = []
        for uid in fr_uids:
            f = brute_topk(base_scores.total()[base_scores.test_uids.index(uid)], k, direction == "positive")
            z = brute_topk(zs.total()[zs.test_uids.index(uid)], k, direction == "positive")
            f_rows, z_rows = full_train.iloc[f], zs_train.iloc[z]
            tids = set(f_rows.loc[f_rows["lang"] == "fr", "translation_id"])
            other = set(f_rows.loc[f_rows["lang"] != "fr", "uid"])
            a = 100 * z_rows["translation_id"].isin(tids).mean() if tids else np.nan
            b = 100 * len(other & set(z_rows["uid"])) / len(other) if other else np.nan
            row = per_test[(per_test.direction == direction) & (per_test.test_uid == uid)].iloc[0]
            assert row.pct_translations == pytest.approx(a, nan_ok=True) and row.pct_other_retained == pytest.approx(b, nan_ok=True)
            a_vals.append(a)
            b_vals.append(b)
            zs_shares.append(z_rows["lang"].value_counts(normalize=True) * 100)
        s = summ[summ.direction == direction].iloc[0]
        assert s.pct_translations == pytest.approx(np.nanmean(a_vals) if not np.all(np.isnan(a_vals)) else np.nan, nan_ok=True)
        assert s.pct_other_retained == pytest.approx(np.nanmean(b_vals), nan_ok=True)
        assert s.pct_other_retained_chance == pytest.approx(100 * k / len(zs_train))
        for lang in ("de", "fr", "ru"):
            got = shares[(shares.direction == direction) & (shares.model == "zero-shot") & (shares.train_lang == lang)]["share"].iloc[0]
            assert got == pytest.approx(np.mean([x.get(lang, 0.0) for x in zs_shares]))
    assert (shares[(shares.model == "zero-shot") & (shares.train_lang == "fr")]["share"] == 0).all()
    # accuracy recomputed from the saved predictions
    acc = pd.read_parquet(exp / "accuracy.parquet")
    preds = pd.read_parquet(sub.selection_path.parent / "predictions.parquet")
    fr = preds[preds["lang"] == "fr"]
    got = acc[(acc.model == "zero-shot") & (acc.examples == "pool") & (acc.test_lang == "fr")]["accuracy"].iloc[0]
    assert got == pytest.approx(100 * (fr["pred"] == fr["label"]).mean()) and len(fr) == 6
    summary = read_json(exp / "summary.json")
    assert summary["accuracy_zero_shot_on_language"]["fr"] == pytest.approx(got)
    _check_section(exp, "1 retraining(s)")
    _check_pruned(sub, "zero-shot", influence=True)  # pruned after its influence scores were computed


def test_imbalance_end_to_end(run):
    assert main(["experiment", "imbalance", str(run.root), "-q"]) == 0
    exp = run.root / "experiments" / "imbalance"
    base_train = pd.read_parquet(run.split_path("train"))
    base_scores = load_scores(run)
    base_sel = pd.read_parquet(run.selection_path)
    share = pd.read_parquet(exp / "in_language_share.parquet")
    k = 5
    for pct, n_extra in ((50.0, 4), (100.0, 8)):
        sub = RunDir(exp / "runs" / f"extra-de-p{pct:g}")
        sub_train = pd.read_parquet(sub.split_path("train"))
        added = sub_train[~sub_train["uid"].isin(base_train["uid"])]
        # the base training set is kept exactly, plus n_extra new de examples
        pd.testing.assert_frame_equal(_sorted(sub_train[sub_train["uid"].isin(base_train["uid"])]), _sorted(base_train))
        assert len(sub_train) == len(base_train) + n_extra and len(added) == n_extra and (added["lang"] == "de").all()
        assert not set(added["translation_id"]) & set(base_train.query("lang == 'de'")["translation_id"])
        changed = pd.read_parquet(sub.data_dir / "changed.parquet")
        assert sorted(changed["uid"]) == sorted(added["uid"]) and (changed["change"] == "added").all()
        for split in ("dev", "test"):
            pd.testing.assert_frame_equal(_sorted(pd.read_parquet(sub.split_path(split))), _sorted(pd.read_parquet(run.split_path(split))))
        cfg = read_json(sub.config_path)
        assert cfg["data"]["extra_lang"] == "de" and cfg["data"]["extra_pct"] == pct
        scores = load_scores(sub)
        assert sorted(scores.test_uids) == sorted(base_sel["uid"])
        _check_shares(share, pct, scores, sub_train, base_sel, k)
    _check_shares(share, 0.0, base_scores, base_train, base_sel, k)
    summary = read_json(exp / "summary.json")
    assert set(summary["in_language_share"]["de"]["positive"]) == {"0", "50", "100"}
    for pct in (50, 100):
        _check_pruned(RunDir(exp / "runs" / f"extra-de-p{pct}"), "imbalance", influence=True)
    _check_section(exp, "2 retraining(s)")


def _check_shares(share, pct, scores, train, selected, k):
    train_al = train.set_index("uid").loc[scores.train_uids].reset_index()
    test_al = selected.set_index("uid").loc[scores.test_uids].reset_index()
    total = scores.total()
    for direction in ("positive", "negative"):
        own = np.array([100 * (train_al["lang"].iloc[brute_topk(total[i], k, direction == "positive")] == test_al["lang"].iloc[i]).mean() for i in range(len(test_al))])
        for lang in ("de", "fr", "all"):
            m = np.ones(len(test_al), bool) if lang == "all" else (test_al["lang"] == lang).to_numpy()
            row = share[(share.pct == pct) & (share.direction == direction) & (share.test_lang == lang)].iloc[0]
            assert row.share == pytest.approx(own[m].mean()) and row.n_test == m.sum()
            if lang == "de":
                assert row.train_fraction == pytest.approx(100 * (train_al["lang"] == "de").mean())


def test_bad_inputs_are_one_line_errors(run, tmp_path, capsys, base_run):
    incomplete = RunDir(tmp_path / "incomplete")
    shutil.copytree(base_run.root, incomplete.root)
    incomplete.stage_marker("influence").unlink()
    cases = [
        (["experiment", "nope", str(run.root)], "unknown experiment"),
        (["experiment", "zero-shot", str(run.root), "--set", "experiment.zero_shot_languages=[xx]"], "xx"),
        (["experiment", "k-selection", str(run.root), "--set", "experiment.ks=[24]"], "k=24"),
        (["experiment", "k-selection", str(run.root), "--set", "experiment.k_grouping=all", "--set", "experiment.ks=[23]"], "removes all 24"),
        (["experiment", "k-selection", str(incomplete.root)], "lingtrace influence"),
        (["experiment", "k-selection", str(tmp_path / "missing")], "not a lingtrace run"),
        (["experiment", "imbalance", str(run.root), "--set", "train.lr=1"], "experiment.*"),
        (["experiment", "imbalance", str(run.root), "--set", "experiment.imbalance_pcts=[500]"], "extra_pct"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main([*argv, "-q"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("lingtrace: error:") and err.count("\n") == 1 and needle in err, (argv, err)
    assert not (run.root / "experiments" / "k-selection" / "summary.json").exists()
    # a failed first attempt made no retraining, so other settings are not refused afterwards
    assert main(["experiment", "imbalance", str(run.root), "-q", "--set", "experiment.imbalance_pcts=[50]"]) == 0


def test_ctrl_c_keeps_completed_retrainings_and_rerun_resumes(run, monkeypatch, capsys):
    from lingtrace.experiments import subruns

    real = subruns.execute
    calls = []

    def interrupt_second(sub, spec):
        calls.append(spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(sub, spec)

    monkeypatch.setattr(subruns, "execute", interrupt_second)
    argv = ["experiment", "k-selection", str(run.root), "-q", "--set", "experiment.k_grouping=all", "--set", "experiment.ks=[2]"]
    assert main(argv) == 130
    exp = run.root / "experiments" / "k-selection"
    first = RunDir(exp / "runs" / calls[0])
    assert first.is_complete("train") and first.is_complete("select") and not (exp / "summary.json").exists()
    stamps = _mtimes(first.root)
    monkeypatch.setattr(subruns, "execute", real)
    assert main(argv) == 0
    assert _mtimes(first.root) == stamps and (exp / "summary.json").exists()
    assert "--plan" not in argv and main([*argv, "--plan"]) == 0
    assert "3 retraining(s)" in capsys.readouterr().out


def test_pruned_sub_run_retrains_when_its_weights_are_needed(run, monkeypatch, capsys):
    from lingtrace.experiments import subruns
    from lingtrace.experiments.base import load_base
    from lingtrace.experiments.identity import resolve_config
    from lingtrace.models.loading import load_checkpoint

    overrides = ["experiment.k_grouping=all", "experiment.ks=[2]", "experiment.k_directions=[positive]"]
    argv = ["experiment", "k-selection", str(run.root), "-q"] + [x for o in overrides for x in ("--set", o)]
    assert main(argv) == 0
    exp = run.root / "experiments" / "k-selection"
    (name,) = pd.read_parquet(exp / "plan.parquet")["sub_run"]
    sub = RunDir(exp / "runs" / name)
    _check_pruned(sub, "k-selection", influence=False)
    before = pd.read_parquet(sub.selection_path)
    # a stage command that needs the weights says why they are missing, in one line, and changes nothing
    contents = {p: p.read_bytes() for p in sub.root.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["influence", str(sub.root), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error:") and err.count("\n") == 1 and "epoch-" in err and "lingtrace train" in err
    assert {p: p.read_bytes() for p in sub.root.rglob("*") if p.is_file()} == contents
    final = read_json(sub.manifest_path)["final_epoch"]
    with pytest.raises(LingtraceError, match="deleted after experiment k-selection"):
        load_checkpoint(sub.checkpoint_dir(final))

    # evaluating other test examples needs the weights: the sub-run is retrained (kept this time: the opt-out)
    cfg = resolve_config(run, "k-selection", overrides)
    base = load_base(run)
    (spec,) = kselect.build(base, cfg)[1]
    spec.eval_frame = base.test_pool
    monkeypatch.setattr(subruns, "keep_checkpoints", lambda cfg: True)
    took = subruns.execute(sub, spec)
    assert "train_seconds" in took and "evaluate_seconds" in took
    assert (sub.checkpoint_dir(final) / "config.json").exists() and "pruned" not in read_json(sub.manifest_path)
    assert "checkpoints" not in read_json(sub.root / "experiment.json")
    after = pd.read_parquet(sub.selection_path)
    np.testing.assert_allclose(after["p_label"], before["p_label"], atol=1e-6)  # seeded: the same model again
    assert len(pd.read_parquet(sub.selection_path.parent / "predictions.parquet")) == len(base.test_pool)
    _check_p_label(sub.root)
    # with the default, a complete sub-run is pruned without retraining
    monkeypatch.undo()
    assert subruns.execute(sub, spec) == {}
    _check_pruned(sub, "k-selection", influence=False)
