"""The command line end to end on a tiny model and local data: outputs, skipping, refusal, Ctrl-C."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import toy_examples
from lingtrace.cli import main
from lingtrace.io import read_json
from lingtrace.run import RunDir

BASE_STAGES = "prepare,train,select"


@pytest.fixture
def cli_config(tmp_path, tiny_model_dir):
    parts = []
    for split, n, seed in [("train", 12, 0), ("validation", 6, 1), ("test", 8, 2)]:
        frame = toy_examples(n_per_lang=n, split=split, seed=seed).drop(columns=["uid"])
        frame["split"] = split
        frame["label"] = frame["label"].map({0: "neg", 1: "pos"})
        parts.append(frame)
    data = tmp_path / "toy.csv"
    pd.concat(parts).to_csv(data, index=False)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(
        f"""
data:
  task: local
  source: local
  path: {data}
  languages: [de, fr, ru]
  train_per_lang: 10
  dev_per_lang: 6
  test_per_lang: 8
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
""",
        encoding="utf-8",
    )
    return cfg


def test_run_writes_every_output_and_skips_when_complete(cli_config, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES, "-q"]) == 0
    run = RunDir(out)
    for split in ("train", "dev", "test"):
        frame = pd.read_parquet(run.split_path(split))
        assert list(frame.columns) == ["uid", "lang", "translation_id", "text_a", "text_b", "label"]
        assert frame["uid"].is_unique
    assert len(pd.read_parquet(run.split_path("train"))) == 30
    manifest = read_json(run.manifest_path)
    assert [e["epoch"] for e in manifest["epochs"]] == [1, 2] and manifest["complete"]
    for e in manifest["epochs"]:
        model = AutoModelForSequenceClassification.from_pretrained(run.checkpoints_dir / e["path"])
        assert model.config.num_labels == 2
    chosen = pd.read_parquet(run.selection_path)
    assert (chosen["pred"] == chosen["label"]).all() and {"confidence", "pred"} <= set(chosen.columns)
    assert read_json(run.config_path)["data"]["task"] == "local"

    stamps = {p: p.stat().st_mtime_ns for p in (run.root / "checkpoints").rglob("*.safetensors")}
    capsys.readouterr()
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recomputed

    # a different training config is refused with one line, and nothing is touched
    assert main(["train", str(out), "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "--overwrite" in err and err.count("\n") == 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert read_json(run.config_path)["train"]["lr"] == 0.003


def test_ctrl_c_exits_130_and_rerun_resumes(cli_config, tmp_path, monkeypatch, capsys):
    from lingtrace import pipeline

    out = tmp_path / "run"
    real_select = pipeline.STAGE_FUNCS["select"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "select", interrupted)
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES, "-q"]) == 130
    assert "rerun" in capsys.readouterr().err
    run = RunDir(out)
    assert run.is_complete("train") and not run.is_complete("select")
    stamps = {p: p.stat().st_mtime_ns for p in (run.root / "checkpoints").rglob("*.safetensors")}

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "select", real_select)
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES, "-q"]) == 0
    assert run.is_complete("select")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # training was not redone


def test_bad_inputs_are_one_line_errors(cli_config, tmp_path, capsys):
    text = cli_config.read_text(encoding="utf-8")
    cases = {
        "missing data file": (text.replace("toy.csv", "nope.csv"), "nope.csv"),
        "unknown language": (text.replace("[de, fr, ru]", "[de, fr, xx]"), "xx"),
        "missing column": (text.replace("lang: lang", "lang: language"), "language"),
        "unreadable model": (text.replace("name: ", "name: /nonexistent/"), "nonexistent"),
    }
    for i, (name, (body, needle)) in enumerate(cases.items()):
        cfg = tmp_path / f"bad{i}.yaml"
        cfg.write_text(body, encoding="utf-8")
        out = tmp_path / f"bad{i}"
        code = main(["run", str(cfg), "--out", str(out), "--stages", "prepare,train", "-q"])
        err = capsys.readouterr().err
        assert code == 2, name
        assert needle in err and err.startswith("lingtrace: error:") and err.count("\n") == 1, (name, err)
        assert not RunDir(out).is_complete("train"), name
