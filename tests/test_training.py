"""Fine-tuning: checkpoint per epoch, manifest, early stopping, resume after an interruption, refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from lingtrace.config import apply_overrides
from lingtrace.errors import LingtraceError
from lingtrace.io import read_json
from lingtrace.pipeline import run_stages
from lingtrace.training import trainer


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_checkpoint_every_epoch_and_manifest(tiny_run):
    run, cfg = tiny_run
    manifest = trainer.train(run, cfg)
    assert manifest["complete"] and len(manifest["epochs"]) == cfg.train.epochs
    on_disk = read_json(run.manifest_path)
    assert on_disk == manifest
    lrs = []
    for rec in on_disk["epochs"]:
        path = run.checkpoints_dir / rec["path"]
        model = AutoModelForSequenceClassification.from_pretrained(path)
        assert model.config.num_labels == 2
        assert set(rec["dev_accuracy_per_lang"]) == {"de", "fr", "ru"}
        assert 0.0 <= rec["dev_accuracy"] <= 1.0
        assert rec["steps"] == 5  # ceil(36 / 8)
        assert rec["lr_start"] >= rec["lr_end"] or rec["epoch"] == 1
        lrs.append(rec["lr_mean"])
    # linear warm-up then decay: the mean learning rate falls after the first epoch
    assert lrs[2] < lrs[1]
    best = max(on_disk["epochs"], key=lambda r: r["dev_accuracy"])
    assert on_disk["best_epoch"] == on_disk["final_epoch"]
    assert next(r for r in on_disk["epochs"] if r["epoch"] == on_disk["best_epoch"])["dev_accuracy"] == best["dev_accuracy"]
    # checkpoints differ from each other (training moved the weights)
    w1, w3 = _weights(run.checkpoint_dir(1)), _weights(run.checkpoint_dir(3))
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_resume_after_interruption_equals_uninterrupted(tiny_run, tmp_path, monkeypatch):
    run, cfg = tiny_run
    ref = type(run)(tmp_path / "ref")
    shutil.copytree(run.root, ref.root)
    trainer.train(ref, cfg)

    real_predict = trainer.predict
    calls = {"n": 0}

    def interrupted_predict(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # during epoch 2's dev evaluation
            raise KeyboardInterrupt
        return real_predict(*a, **k)

    monkeypatch.setattr(trainer, "predict", interrupted_predict)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(run, cfg)
    partial = read_json(run.manifest_path)
    assert [e["epoch"] for e in partial["epochs"]] == [1] and not partial["complete"]
    assert not run.checkpoint_dir(2).exists()
    assert not list(run.checkpoints_dir.glob(".*tmp"))
    monkeypatch.setattr(trainer, "predict", real_predict)
    resumed = trainer.train(run, cfg)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    for epoch in (1, 2, 3):
        a, b = _weights(run.checkpoint_dir(epoch)), _weights(ref.checkpoint_dir(epoch))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ref_m = read_json(ref.manifest_path)
    for x, y in zip(resumed["epochs"], ref_m["epochs"]):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert x["dev_accuracy"] == y["dev_accuracy"]


def test_early_stopping_with_patience(tiny_run):
    run, cfg = tiny_run
    # a learning rate of ~0 never improves dev accuracy after epoch 1: stop after 1 + patience epochs
    cfg = apply_overrides(cfg, ["train.lr=1e-12", "train.epochs=6", "train.patience=2"])
    manifest = trainer.train(run, cfg)
    assert [e["epoch"] for e in manifest["epochs"]] == [1, 2, 3]
    assert manifest["stopped_early"] and manifest["final_epoch"] == 1


def test_different_config_is_refused_and_overwrite_retrains(tiny_run):
    run, cfg = tiny_run
    run_stages(run, cfg, ["train"])
    before = run.manifest_path.read_bytes()
    changed = apply_overrides(cfg, ["train.lr=0.001"])
    with pytest.raises(LingtraceError, match="different config"):
        run_stages(run, changed, ["train"])
    assert run.manifest_path.read_bytes() == before  # nothing damaged
    run_stages(run, changed, ["train"], overwrite=True)
    after = read_json(run.manifest_path)
    assert after["fingerprint"] != json.loads(before)["fingerprint"] and after["complete"]


def test_damaged_trainer_state_gives_clear_error(tiny_run, monkeypatch):
    run, cfg = tiny_run
    real_predict = trainer.predict
    calls = {"n": 0}

    def interrupted_predict(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_predict(*a, **k)

    monkeypatch.setattr(trainer, "predict", interrupted_predict)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(run, cfg)
    monkeypatch.setattr(trainer, "predict", real_predict)
    (run.checkpoints_dir / trainer.TRAINER_STATE).write_bytes(b"not a torch file")
    with pytest.raises(LingtraceError, match="damaged"):
        trainer.train(run, cfg)
    assert run.checkpoint_dir(1).exists()  # the completed epoch survives
