"""The ``analyze`` stage end to end on a synthetic run directory: tables, summary, not-applicable
analyses, skip/refuse/overwrite, atomicity, and one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lingtrace.analysis import tables as T
from lingtrace.analysis.common import ALL, POSITIVE, SUMMED
from lingtrace.analysis.synthetic import make_synthetic_run
from lingtrace.cli import main
from lingtrace.errors import LingtraceError
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json, write_json
from lingtrace.pipeline import run_stages


@pytest.fixture
def synthetic(tmp_path):
    return make_synthetic_run(tmp_path / "run", languages=("de", "fr", "ru", "zh", "ko"), n_items=24, test_per_lang=3, epochs=3, k=6)


def _tables(run, method: str = "tracin") -> dict[str, pd.DataFrame]:
    folder = run.analysis_dir / method
    return {name: pd.read_parquet(folder / spec.file) for name, spec in T.TABLES.items() if (folder / spec.file).exists()}


def test_analyze_writes_every_documented_table(synthetic):
    run, cfg = synthetic
    run_stages(run, cfg, ["analyze"])
    assert run.is_complete("analyze")
    tables = _tables(run)
    assert set(tables) == set(T.TABLES)
    for name, frame in tables.items():
        assert list(frame.columns) == list(T.TABLES[name].columns), name
        assert len(frame) > 0, name
    summary = read_json(run.analysis_dir / "tracin" / T.SUMMARY)
    assert summary["not_applicable"] == {} and summary["method"] == "tracin"
    assert read_json(run.analysis_dir / T.SUMMARY)["methods"] == ["tracin"]
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
    summary = read_json(run.analysis_dir / "tracin" / T.SUMMARY)
    assert set(summary["not_applicable"]) == {"translation_overlap", "dynamics_wilcoxon", "word_embedding_share"}
    assert "not a parallel task" in summary["not_applicable"]["translation_overlap"]
    assert "at least two" in summary["not_applicable"]["dynamics_wilcoxon"]
    assert "breakdown" in summary["not_applicable"]["word_embedding_share"]
    for name in summary["not_applicable"]:
        assert not (run.analysis_dir / "tracin" / T.TABLES[name].file).exists()  # no table of zeros
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


def test_readme_documents_every_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert T.markdown_reference() in readme
