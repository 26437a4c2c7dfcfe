"""Test selection: seeded draw from the correctly predicted examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lingtrace.errors import LingtraceError
from lingtrace.evaluation import predict
from lingtrace.io import read_json
from lingtrace.pipeline import run_stages
from lingtrace.selection import PREDICTIONS, draw


def _pool():
    rows = [{"uid": f"{lang}{i}", "lang": lang, "translation_id": str(i), "text_a": "x", "text_b": "", "label": i % 2} for lang in ("de", "fr") for i in range(10)]
    return pd.DataFrame(rows)


def test_draw_only_correct_and_seeded():
    pool = _pool()
    # predict the true label for even i, the wrong one for odd i
    pred = np.array([lab if i % 4 < 2 else 1 - lab for i, lab in enumerate(pool["label"])])
    probs = np.zeros((len(pool), 2), dtype=np.float32)
    probs[np.arange(len(pool)), pred] = 0.9
    probs[np.arange(len(pool)), 1 - pred] = 0.1
    a = draw(pool, probs, per_lang=3, seed=7)
    b = draw(pool, probs, per_lang=3, seed=7)
    c = draw(pool, probs, per_lang=3, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert (a["pred"] == a["label"]).all()
    assert a.groupby("lang").size().to_dict() == {"de": 3, "fr": 3}
    assert np.allclose(a["confidence"], 0.9)
    correct_uids = set(pool["uid"][pred == pool["label"].to_numpy()])
    assert set(a["uid"]) <= correct_uids
    assert set(a["uid"]) != set(c["uid"]) or len(correct_uids) <= 6


def test_draw_with_too_few_correct_takes_all_and_none_raises():
    pool = _pool()
    probs = np.zeros((len(pool), 2), dtype=np.float32)
    probs[:, 0] = 1.0  # predicts class 0 everywhere: half correct
    out = draw(pool, probs, per_lang=50, seed=0)
    assert len(out) == (pool["label"] == 0).sum()
    probs = np.zeros((len(pool), 2), dtype=np.float32)
    probs[np.arange(len(pool)), 1 - pool["label"].to_numpy()] = 1.0
    with pytest.raises(LingtraceError, match="no test example"):
        draw(pool, probs, per_lang=2, seed=0)


def test_select_stage_uses_final_model(tiny_run):
    from lingtrace.models.loading import load_checkpoint

    run, cfg = tiny_run
    run_stages(run, cfg, ["train", "select"])
    chosen = pd.read_parquet(run.selection_path)
    preds = pd.read_parquet(run.selection_path.parent / PREDICTIONS)
    assert (chosen["pred"] == chosen["label"]).all()
    assert chosen.groupby("lang").size().max() <= cfg.select.per_lang
    final = read_json(run.manifest_path)["final_epoch"]
    model, tok = load_checkpoint(run.checkpoint_dir(final))
    test = pd.read_parquet(run.split_path("test"))
    import torch

    probs = predict(model, tok, test, cfg, torch.device("cpu"))
    np.testing.assert_allclose(preds["confidence"].to_numpy(), probs.max(1), rtol=1e-5)
    np.testing.assert_array_equal(preds["pred"].to_numpy(), probs.argmax(1))
