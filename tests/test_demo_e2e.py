"""The real embedded default end to end (minutes): `lingtrace demo` on multilingual-e5-small and the
CLDR emoji names, every output of the run directory, the model clearly above the majority class in
every language, the influence store, the analyses, and the report rendered in headless Chromium."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lingtrace.cli import main
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.run import STAGES, RunDir


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "majority-class baseline on dev" in printed and "report:" in printed
    run = RunDir(out)
    cfg = read_json(run.config_path)
    assert cfg["data"]["task"] == "emoji" and cfg["model"]["name"] == "embedded:multilingual-e5-small"
    assert all(run.is_complete(s) for s in STAGES)

    splits = {s: pd.read_parquet(run.split_path(s)) for s in ("train", "dev", "test")}
    langs = cfg["data"]["languages"]
    assert set(splits["train"]["lang"]) == set(langs) and splits["train"]["uid"].is_unique
    # parallel data: the same translation ids in every language
    ids = {lang: set(g["translation_id"]) for lang, g in splits["train"].groupby("lang")}
    assert len({frozenset(v) for v in ids.values()}) == 1

    manifest = read_json(run.manifest_path)
    assert manifest["complete"] and len(manifest["epochs"]) == cfg["train"]["epochs"]
    for e in manifest["epochs"]:
        model = AutoModelForSequenceClassification.from_pretrained(run.checkpoints_dir / e["path"])
        assert model.config.num_labels == 9
    final = next(e for e in manifest["epochs"] if e["epoch"] == manifest["final_epoch"])
    base = manifest["dev_majority_baseline"]
    for lang in langs:  # clearly above always predicting the most frequent group
        assert final["dev_accuracy_per_lang"][lang] > base[lang] + 0.25, (lang, final, base)

    chosen = pd.read_parquet(run.selection_path)
    assert (chosen["pred"] == chosen["label"]).all()
    assert chosen.groupby("lang").size().to_dict() == {lang: cfg["select"]["per_lang"] for lang in langs}

    scores = load_scores(run)
    assert scores.meta["complete"] and scores.meta["stats"]["gradient_passes"] == (len(splits["train"]) + len(chosen)) * len(scores.epochs)
    total = scores.total()
    assert total.shape == (len(chosen), len(splits["train"])) and np.isfinite(total).all()
    assert np.abs(total).max() <= len(scores.epochs) + 1e-4  # cosine per checkpoint

    summary = read_json(run.analysis_dir / "summary.json")
    assert summary["n_test"] == len(chosen)
    assert (run.analysis_dir / "tracin" / "language_shares.parquet").exists() and (run.analysis_dir / "tracin" / "translation_overlap.parquet").exists()

    page = run.report_dir / "index.html"
    assert page.exists()
    from support.browser_check import check_page, find_chromium

    if find_chromium() is not None:
        result = check_page(page, screenshot=tmp_path / "demo.png")
        assert result.ok, (result.errors, result.network)
        assert (tmp_path / "demo.png").stat().st_size > 10_000
