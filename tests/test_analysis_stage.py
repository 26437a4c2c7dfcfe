"""The ``analyze`` stage end to end on a synthetic run directory: tables, summary, not-applicable
analyses, skip/refuse/overwrite, atomicity, and one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, POSITIVE, SUMMED
from lingtrace.cli import main
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json, write_json
from lingtrace.pipeline import run_stages
from support.synthetic import make_synthetic_run


@pytest.fixture
def synthetic(tmp_path):
    return make_synthetic_run(tmp_path / "run", languages=("de", "fr", "ru", "zh", "ko"), n_items=24, test_per_lang=3, epochs=3, k=6)


def _tables(run, method: str = "tracin") -> dict[str, pd.DataFrame]:
    folder = run.analysis_dir / method
    return {name: pd.read_parquet(folder / spec.file) for name, spec in table_specs.TABLES.items() if (folder / spec.file).exists()}


def test_analyze_writes_every_documented_table(synthetic):
    run, cfg = synthetic
    run_stages(run, cfg, ["analyze"])
    assert run.is_complete("analyze")
    tables = _tables(run)
    assert set(tables) == set(table_specs.TABLES)
    for name, frame in tables.items():
        assert list(frame.columns) == list(table_specs.TABLES[name].columns), name
        assert len(frame) > 0, name
    summary = read_json(run.analysis_dir / "tracin" / table_specs.SUMMARY)
    assert summary["not_applicable"] == {} and summary["method"] == "tracin"
    assert read_json(run.analysis_dir / table_specs.SUMMARY)["methods"] == ["tracin"]
    assert summary["epochs"] == [1, 2, 3] and summary["k"] == 6 and summary["n_test"] == 15
    assert {n: v["rows"] for n, v in summary["tables"].items()} == {n: len(f) for n, f in tables.items()}
    assert not [p for p in run.root.iterdir() if p.name.startswith(".analysis")]  # no temporary folder left


def test_analyze_tables_agree_with_a_brute_force_pass_over_the_store(synthetic):
    run, cfg = synthetic
    run_stages(run, cfg, ["analyze"])
    tables = _tables(run)
    scores = load_scores(run)
    total = scores.total()
    train = pd.read_parquet(run.split_path("train")).set_index("uid").loc[scores.train_uids]
    test = pd.read_parquet(run.selection_path).set_index("uid").loc[scores.test_uids]
    k = cfg.analysis.k
    top = np.argsort(-total, axis=1, kind="stable")[:, :k]
    topk = tables["topk"]
    summed_pos = topk[(topk["epoch"] == SUMMED) & (topk["direction"] == POSITIVE)]
    for i, uid in enumerate(scores.test_uids[:5]):
        got = summed_pos[summed_pos["test_uid"] == uid].sort_values("rank")["train_uid"].tolist()
        assert got == [scores.train_uids[j] for j in top[i]]
    # Fig. 2: ru's share of the top-k of the zh test examples
    langs = train["lang"].to_numpy()
    zh = np.flatnonzero(test["lang"].to_numpy() == "zh")
    expected = np.mean([(langs[top[i]] == "ru").mean() * 100 for i in zh])
    shares = tables["language_shares"]
    got = shares[(shares["epoch"] == SUMMED) & (shares["direction"] == POSITIVE) & (shares["test_lang"] == "zh") & (shares["train_lang"] == "ru")]
    assert got["share"].item() == pytest.approx(expected)
    # Table 3: mean summed score of the (ko test, de train) pairs
    avg = tables["average_influence"]
    ko = test["lang"].to_numpy() == "ko"
    got = avg[(avg["epoch"] == SUMMED) & (avg["test_lang"] == "ko") & (avg["train_lang"] == "de")]
    assert got["mean_score"].item() == pytest.approx(total[np.ix_(ko, langs == "de")].mean())
    # per-epoch rows use that epoch's matrix only
    e2 = np.asarray(scores.epoch(2), dtype=np.float64)
    got = avg[(avg["epoch"] == 2) & (avg["test_lang"] == "ko") & (avg["train_lang"] == "de")]
    assert got["mean_score"].item() == pytest.approx(e2[np.ix_(ko, langs == "de")].mean())
    # the Korean training texts mix in Latin words: the script table sees it
    sp = tables["script_purity"]
    ko_row = sp[(sp["direction"] == POSITIVE) & (sp["test_lang"] == ALL) & (sp["train_lang"] == "ko")]
    assert ko_row["pct_pure_train"].item() < 100 and "Latin" in ko_row["other_scripts"].item()


def test_analyze_records_analyses_that_do_not_apply(tmp_path):
    run, cfg = make_synthetic_run(tmp_path / "run", n_items=12, test_per_lang=2, epochs=1, k=4, parallel=False, breakdown=False)
    run_stages(run, cfg, ["analyze"])
    summary = read_json(run.analysis_dir / "tracin" / table_specs.SUMMARY)
    assert set(summary["not_applicable"]) == {"translation_overlap", "dynamics_wilcoxon", "word_embedding_share"}
    assert "not a parallel task" in summary["not_applicable"]["translation_overlap"]
    assert "at least two" in summary["not_applicable"]["dynamics_wilcoxon"]
    assert "breakdown" in summary["not_applicable"]["word_embedding_share"]
    for name in summary["not_applicable"]:
        assert not (run.analysis_dir / "tracin" / table_specs.TABLES[name].file).exists()  # no table of zeros
    assert (run.analysis_dir / "tracin" / "topk.parquet").exists()


def test_analyze_is_skipped_when_complete_refused_when_changed_and_redone_with_overwrite(synthetic, capsys):
    run, cfg = synthetic
    assert main(["analyze", str(run.root), "-q"]) == 0
    stamp = (run.analysis_dir / "tracin" / "topk.parquet").stat().st_mtime_ns
    assert main(["analyze", str(run.root), "-q"]) == 0
    assert (run.analysis_dir / "tracin" / "topk.parquet").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["analyze", str(run.root), "--set", "analysis.k=3", "-q"]) == 2
    err = capsys.readouterr().err
    assert "analysis.k" in err and "--overwrite" in err and err.count("\n") == 1
    assert (run.analysis_dir / "tracin" / "topk.parquet").stat().st_mtime_ns == stamp
    assert main(["analyze", str(run.root), "--set", "analysis.k=3", "--overwrite", "-q"]) == 0
    assert pd.read_parquet(run.analysis_dir / "tracin" / "topk.parquet")["rank"].max() == 3
    capsys.readouterr()
    assert main(["analyze", str(run.root), "--set", "analysis.browser_k=0", "-q"]) == 2
    assert "analysis.browser_k" in capsys.readouterr().err


def test_an_interrupted_analyze_keeps_the_previous_tables(synthetic, monkeypatch):
    from lingtrace.analysis import stage

    run, cfg = synthetic
    run_stages(run, cfg, ["analyze"])
    before = pd.read_parquet(run.analysis_dir / "tracin" / "language_shares.parquet")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "script_purity", crash)
    with pytest.raises(KeyboardInterrupt):
        run_stages(run, cfg, ["analyze"], overwrite=True)
    assert not run.is_complete("analyze")
    pd.testing.assert_frame_equal(pd.read_parquet(run.analysis_dir / "tracin" / "language_shares.parquet"), before)
    assert not [p for p in run.root.iterdir() if p.name.startswith(".analysis")]


def test_analyze_errors_are_one_line(synthetic, capsys):
    run, cfg = synthetic
    # a test uid of the scores that is not among the selected examples
    uids_path = run.influence_dir / "test_uids.json"
    good = read_json(uids_path)
    write_json(uids_path, ["someone-else", *good[1:]])
    assert main(["analyze", str(run.root), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error:") and "someone-else" in err and "--overwrite" in err and err.count("\n") == 1
    write_json(uids_path, good)
    # the selection changed after the influence stage
    sel = pd.read_parquet(run.selection_path)
    sel.iloc[:-1].to_parquet(run.selection_path, index=False)
    with pytest.raises(LingtraceError, match="cover 15 test examples but 14 are selected"):
        run_stages(run, cfg, ["analyze"])
    sel.to_parquet(run.selection_path, index=False)
    # no influence scores
    run.stage_marker("influence").unlink()
    assert main(["analyze", str(run.root), "-q"]) == 2
    err = capsys.readouterr().err
    assert "influence" in err and err.count("\n") == 1


def test_docs_document_every_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "analyses.md").read_text(encoding="utf-8")
    assert table_specs.markdown_reference() in readme


# ---------------------------------------------------------------- several influence methods

METHODS = ("tracin", "adam-cosine", "representation")


@pytest.fixture
def three_methods(tmp_path):
    return make_synthetic_run(tmp_path / "run", languages=("de", "fr", "ru", "zh"), n_items=16, test_per_lang=3, epochs=2, k=5, methods=METHODS)


def test_analyze_runs_every_analysis_for_every_method_and_compares_them(three_methods):
    from lingtrace.analysis.compare import topk_overlap
    from lingtrace.analysis.topk import top_k

    run, cfg = three_methods
    run_stages(run, cfg, ["analyze"])
    top = read_json(run.analysis_dir / table_specs.SUMMARY)
    assert top["layout"] == 2 and top["methods"] == list(METHODS) and top["reference_method"] == "tracin"
    assert set(top["comparison"]["tables"]) == set(table_specs.COMPARISON_TABLES) and top["comparison"]["not_applicable"] == {}
    for method in METHODS:
        summary = read_json(run.analysis_dir / method / table_specs.SUMMARY)
        assert summary["method"] == method and summary["influence"]["method_info"]["synthetic"].startswith("made by")
        tables = _tables(run, method)
        expected = set(table_specs.TABLES) - ({"dynamics_wilcoxon", "word_embedding_share"} if method == "representation" else set())
        assert set(tables) == expected, method
        # each method's top-k come from its own store
        scores = load_scores(run, method=method)
        best = top_k(scores.total(), 1).indices[:, 0]
        topk = tables["topk"]
        first = topk[(topk["epoch"] == SUMMED) & (topk["direction"] == POSITIVE) & (topk["rank"] == 1)]
        assert first["train_uid"].tolist() == [scores.train_uids[j] for j in best]
    rep = read_json(run.analysis_dir / "representation" / table_specs.SUMMARY)
    assert rep["epochs"] == [2] and "at least two" in rep["not_applicable"]["dynamics_wilcoxon"]
    comparison = {name: pd.read_parquet(run.analysis_dir / "comparison" / spec.file) for name, spec in table_specs.COMPARISON_TABLES.items()}
    for name, frame in comparison.items():
        assert list(frame.columns) == list(table_specs.COMPARISON_TABLES[name].columns) and len(frame) > 0, name
    # the comparison is the per-method tables side by side
    inl = comparison["methods_in_language_share"]
    for method in METHODS:
        own = _tables(run, method)["in_language_share"]
        own = own[own["epoch"] == SUMMED].drop(columns="epoch").reset_index(drop=True)
        mine = inl[inl["method"] == method].drop(columns=["method", "p_vs_chance"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own)
    # the test against chance: scipy's one-sample t-test on the test examples' in-language %
    from scipy import stats

    from lingtrace.analysis.shares import per_example_in_language_share

    topk = _tables(run, "adam-cosine")["topk"]
    per = per_example_in_language_share(topk[(topk["epoch"] == SUMMED) & (topk["direction"] == POSITIVE)])
    row = inl[(inl["method"] == "adam-cosine") & (inl["direction"] == POSITIVE) & (inl["test_lang"] == "ru")].iloc[0]
    values = per[per["test_lang"] == "ru"]["value"].to_numpy()
    assert values.std() > 0 and row["p_vs_chance"] == pytest.approx(stats.ttest_1samp(values, 25.0).pvalue)
    # top-k overlap from the stores directly: set intersections of numpy's top-5 of the summed scores
    per_example = comparison["methods_topk_overlap"]
    a, b = load_scores(run, method="tracin"), load_scores(run, method="representation")
    top_a = np.argsort(-a.total(), axis=1, kind="stable")[:, :5]
    top_b = np.argsort(-b.total(), axis=1, kind="stable")[:, :5]
    common = [len(set(np.array(a.train_uids)[ra]) & set(np.array(b.train_uids)[rb])) for ra, rb in zip(top_a, top_b)]
    got = per_example[(per_example["method_a"] == "tracin") & (per_example["method_b"] == "representation") & (per_example["direction"] == POSITIVE)]
    assert dict(zip(got["test_uid"], got["n_common"])) == dict(zip(a.test_uids, common))
    pd.testing.assert_frame_equal(
        per_example, topk_overlap({m: _tables(run, m)["topk"] for m in METHODS}), check_dtype=False
    )


def test_a_method_added_later_gets_its_analyses_and_the_others_are_kept(three_methods, monkeypatch):
    import shutil

    from lingtrace.analysis import stage
    from lingtrace.config import apply_overrides

    run, cfg = three_methods
    parked = run.root / "parked-representation"
    shutil.move(run.influence_store("representation"), parked)
    two = apply_overrides(cfg, ["influence.methods=[tracin,adam-cosine]"])
    run.stage_marker("influence").unlink()
    run.mark_complete(two, "influence", {})
    run_stages(run, two, ["analyze"])
    assert read_json(run.analysis_dir / table_specs.SUMMARY)["methods"] == ["tracin", "adam-cosine"]
    assert "methods_topk_overlap" in read_json(run.analysis_dir / table_specs.SUMMARY)["comparison"]["tables"]
    before = (run.analysis_dir / "tracin" / "topk.parquet").stat().st_ino

    # the influence stage adds representation's store
    shutil.move(parked, run.influence_store("representation"))
    run.mark_complete(cfg, "influence", {})
    analysed = []
    real = stage.analyze

    def counting(scores, *args, **kwargs):
        analysed.append(scores.method)
        return real(scores, *args, **kwargs)

    monkeypatch.setattr(stage, "analyze", counting)
    run_stages(run, cfg, ["analyze"])  # influence.methods changed: analyze reruns without --overwrite
    assert analysed == ["representation"]
    summary = read_json(run.analysis_dir / table_specs.SUMMARY)
    assert summary["methods"] == list(METHODS)
    assert (run.analysis_dir / "tracin" / "topk.parquet").stat().st_ino == before  # kept (hard-linked), not rewritten
    pairs = pd.read_parquet(run.analysis_dir / "comparison" / "methods_topk_overlap_summary.parquet")[["method_a", "method_b"]]
    assert pairs.drop_duplicates().values.tolist() == [["tracin", "adam-cosine"], ["tracin", "representation"], ["adam-cosine", "representation"]]

    analysed.clear()
    run_stages(run, cfg, ["analyze"], overwrite=True)
    assert analysed == list(METHODS)
    # a changed store (rerun influence) is analysed again, the others kept
    analysed.clear()
    meta = read_json(run.influence_store("adam-cosine") / "meta.json")
    write_json(run.influence_store("adam-cosine") / "meta.json", {**meta, "stats": {"rerun": True}})
    run.stage_marker("analyze").unlink()
    run_stages(run, cfg, ["analyze"])
    assert analysed == ["adam-cosine"]


def test_an_incomplete_store_is_left_out_and_said_so(three_methods):
    run, cfg = three_methods
    path = run.influence_store("adam-cosine") / "meta.json"
    write_json(path, {**read_json(path), "complete": False})
    run_stages(run, cfg, ["analyze"])
    summary = read_json(run.analysis_dir / table_specs.SUMMARY)
    assert summary["methods"] == ["tracin", "representation"]
    assert "incomplete" in summary["skipped_stores"]["adam-cosine"]
    assert not (run.analysis_dir / "adam-cosine").exists()


def test_a_store_of_an_older_run_in_influence_itself_is_tracins(tmp_path):
    import shutil

    run, cfg = make_synthetic_run(tmp_path / "run", n_items=10, test_per_lang=2, epochs=2, k=3)
    store = run.influence_store("tracin")
    for p in store.iterdir():
        shutil.move(p, run.influence_root / p.name)
    store.rmdir()
    assert run.influence_store("tracin") == run.influence_root
    run_stages(run, cfg, ["analyze"])
    assert read_json(run.analysis_dir / table_specs.SUMMARY)["methods"] == ["tracin"]
    assert (run.analysis_dir / "tracin" / "topk.parquet").exists()
