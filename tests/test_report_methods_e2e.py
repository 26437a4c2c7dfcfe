"""Every method on a real tiny run: the toy task trained with the tiny model, influence by tracin, then
adam-cosine and representation added later; analyze and report cover every method, the comparison
tables agree with the stores, and the page renders in headless Chromium (when installed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lingtrace.analysis import tables as table_specs
from lingtrace.cli import main
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.run import RunDir
from test_cli import toy_table, write_toy_config


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("methods-e2e")
    data = root / "toy.csv"
    toy_table().to_csv(data, index=False)
    cfg = write_toy_config(root, data, tiny_model_dir)
    out = root / "run"
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 0
    return RunDir(out)


def test_methods_added_later_are_analysed_and_reported(real_run):
    run = real_run
    assert read_json(run.analysis_dir / table_specs.SUMMARY)["methods"] == ["tracin"]
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert "Only one influence method (tracin)" in page
    tracin_topk = (run.analysis_dir / "tracin" / "topk.parquet").stat().st_ino

    assert main(["influence", str(run.root), "--method", "tracin,adam-cosine,representation", "-q"]) == 0
    assert main(["analyze", str(run.root), "-q"]) == 0
    assert main(["report", str(run.root), "-q"]) == 0
    summary = read_json(run.analysis_dir / table_specs.SUMMARY)
    assert summary["methods"] == ["tracin", "adam-cosine", "representation"]
    assert (run.analysis_dir / "tracin" / "topk.parquet").stat().st_ino == tracin_topk  # kept
    rep = read_json(run.analysis_dir / "representation" / table_specs.SUMMARY)
    assert rep["influence"]["method"] == "representation" and len(rep["epochs"]) == 1
    assert read_json(run.analysis_dir / "adam-cosine" / table_specs.SUMMARY)["influence"]["method_info"]["steps"]

    # the overlap of tracin's and adam-cosine's positive top-k, from the stores
    k = summary["k"]
    a, b = load_scores(run, method="tracin"), load_scores(run, method="adam-cosine")
    assert a.train_uids == b.train_uids and a.test_uids == b.test_uids
    top_a = np.argsort(-a.total(), axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b.total(), axis=1, kind="stable")[:, :k]
    expected = [len(set(ra) & set(rb)) for ra, rb in zip(top_a, top_b)]
    per = pd.read_parquet(run.analysis_dir / "comparison" / "methods_topk_overlap.parquet")
    got = per[(per["method_a"] == "tracin") & (per["method_b"] == "adam-cosine") & (per["direction"] == "positive")]
    assert dict(zip(got["test_uid"], got["n_common"])) == dict(zip(a.test_uids, expected))

    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert "Do the conclusions depend on the method?" in page and ("holds under every method" in page or "depends on the method" in page)
    for method in ("tracin", "adam-cosine", "representation"):
        assert f'data-method="{method}"' in page
    from support.browser_check import check_page, find_chromium

    if find_chromium() is not None:
        res = check_page(run.report_dir / "index.html")
        assert res.ok, (res.errors, res.network, res.ready)
