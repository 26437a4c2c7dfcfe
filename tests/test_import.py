"""`lingtrace import`: a real transformers.Trainer output folder of a tiny model becomes a run on which
select, influence, analyze and report work unchanged; bad inputs are one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import toy_examples
from lingtrace.cli import main
from lingtrace.io import read_json
from lingtrace.run import RunDir
from test_cli import snapshot

LR = 0.01
BATCH = 8
TRAIN_PER_LANG = 24  # 3 languages x 24 = 72 examples = 9 steps per epoch: checkpoint-9, checkpoint-18
LABELS = {0: "neg", 1: "pos"}


def _tokenized(tokenizer, frame: pd.DataFrame) -> list[dict]:
    enc = tokenizer(list(frame["text_a"]), truncation=True, max_length=16)
    return [{"input_ids": ids, "attention_mask": mask, "labels": int(y)} for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], frame["label"])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny XLM-R fine-tuned for two epochs by transformers.Trainer (a checkpoint per epoch, logging
    every step, evaluated every epoch), and its data as local CSV files with label names."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    root = tmp_path_factory.mktemp("elsewhere")
    splits = {"train": toy_examples(n_per_lang=TRAIN_PER_LANG, split="train", seed=0), "dev": toy_examples(n_per_lang=6, split="dev", seed=1), "test": toy_examples(n_per_lang=8, split="test", seed=2)}
    data = root / "data"
    data.mkdir()
    for name, frame in splits.items():
        frame.drop(columns=["uid"]).assign(label=frame["label"].map(LABELS)).to_csv(data / f"{name}.csv", index=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    args = TrainingArguments(
        output_dir=str(root / "out"),
        num_train_epochs=2,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        save_strategy="epoch",
        eval_strategy="epoch",
        logging_strategy="steps",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_tokenized(tokenizer, splits["train"]),
        eval_dataset=_tokenized(tokenizer, splits["dev"]),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        processing_class=tokenizer,
    )
    trainer.train()
    return root / "out", data


def _import(run: Path, *args: str) -> int:
    return main(["import", str(run), *args, "--set", "model.max_length=16", "--set", "select.per_lang=2", "--set", "analysis.k=5", "-q"])


def test_trainer_output_becomes_a_run(trained, tmp_path, capsys):
    """Checkpoints ordered by step, their numbers from trainer_state.json, the dev accuracy evaluated
    (equal to the Trainer's own evaluation), the source untouched; then the analysis stages run."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out, data = trained
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-18", "checkpoint-9"]  # by name, the wrong order
    source_before = snapshot(out)
    run_dir = tmp_path / "run"
    assert _import(run_dir, str(out), "--data", str(data)) == 0
    assert "epoch 1:" in capsys.readouterr().out
    run = RunDir(run_dir)
    manifest = read_json(run.manifest_path)
    epochs = manifest["epochs"]
    assert [Path(e["source"]).name for e in epochs] == ["checkpoint-9", "checkpoint-18"]
    assert [e["global_step"] for e in epochs] == [9, 18] and [e["steps"] for e in epochs] == [9, 9]
    assert [e["trainer_epoch"] for e in epochs] == [1.0, 2.0]
    # the Trainer's linear schedule (no warm-up) logs the learning rate of step s as LR * (1 - (s - 1) / 18)
    for e, steps in zip(epochs, (range(1, 10), range(10, 19))):
        expected = [LR * (1 - (s - 1) / 18) for s in steps]
        assert e["lr_start"] == pytest.approx(expected[0]) and e["lr_end"] == pytest.approx(expected[-1])
        assert e["lr_mean"] == pytest.approx(np.mean(expected))
        assert e["train_loss"] is not None and math.isfinite(e["train_loss"])
        # evaluated here on data/dev.parquet = the Trainer's eval set, by the Trainer itself
        assert e["dev_accuracy"] == pytest.approx(e["trainer_eval_accuracy"]) and e["dev_accuracy_source"].startswith("evaluated")
        assert set(e["dev_accuracy_per_lang"]) == {"de", "fr", "ru"}
        model = AutoModelForSequenceClassification.from_pretrained(run.checkpoints_dir / e["path"])
        assert model.config.id2label == LABELS
        mine, theirs = load_file(run.checkpoints_dir / e["path"] / "model.safetensors"), load_file(Path(e["source"]) / "model.safetensors")
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert manifest["final_epoch"] == 2 and manifest["complete"]
    native_keys = {"fingerprint", "epochs", "best_epoch", "final_epoch", "stopped_early", "complete", "dev_majority_baseline", "processes"}
    assert native_keys <= set(manifest)
    native_epoch_keys = {"epoch", "path", "lr_start", "lr_end", "lr_mean", "train_loss", "dev_accuracy", "dev_accuracy_per_lang", "steps"}
    assert all(native_epoch_keys <= set(e) for e in epochs)
    imported = manifest["imported"]
    assert imported["training_recipe"] is False and imported["order"].startswith("global step")
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"} <= set(imported["taken"]["not_carried"])
    assert not [p for p in run_dir.rglob("*") if p.suffix in (".pt", ".pth", ".bin")]  # no pickles in the run
    assert read_json(run.task_path)["label_names"] == ["neg", "pos"]  # the model's class order
    assert len(pd.read_parquet(run.split_path("train"))) == 3 * TRAIN_PER_LANG  # every training example
    cfg = run.load_config()
    assert run.check_stage(cfg, "prepare") and run.check_stage(cfg, "train")
    assert snapshot(out) == source_before  # the source is never modified

    # rerunning the same import changes nothing
    before = snapshot(run_dir)
    assert _import(run_dir, str(out), "--data", str(data)) == 0
    assert snapshot(run_dir) == before

    for stage in ("select", "influence", "analyze", "report"):
        assert main([stage, str(run_dir), "-q"]) == 0, stage
    html = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert "imported: 2 checkpoint(s) trained elsewhere" in html
    scores = read_json(run.influence_dir / "meta.json")
    assert scores["complete"] and scores["epochs"] == [1, 2]

    # the retraining experiments need a training recipe, which an imported run does not have
    capsys.readouterr()
    before = snapshot(run_dir)
    assert main(["experiment", "k-selection", str(run_dir), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error:") and err.count("\n") == 1 and "no training recipe" in err and "--training-recipe" in err
    # other checkpoints into the same run are refused (the analyses would be of the old ones)
    assert _import(run_dir, str(out / "checkpoint-9"), str(out / "checkpoint-18"), "--data", str(data), "--final", "1") == 2
    assert "holds other checkpoints" in capsys.readouterr().err
    assert snapshot(run_dir) == before


def test_save_pretrained_folders_in_order_and_other_data_sources(trained, tmp_path, capsys, tiny_model_dir):
    """Folders without trainer_state.json are taken in the order given; their learning rates are
    unknown; a missing tokenizer comes from --tokenizer; the data may come from another run."""
    out, data = trained
    folders = []
    for name in ("checkpoint-18", "checkpoint-9"):  # deliberately the reverse of training: given order wins
        folder = tmp_path / f"saved-{name}"
        shutil.copytree(out / name, folder)
        for extra in ("trainer_state.json", "tokenizer.json", "tokenizer_config.json"):
            (folder / extra).unlink()
        folders.append(str(folder))
    first = tmp_path / "first"
    assert _import(first, *folders, "--data", str(data)) == 2
    assert "has no tokenizer" in capsys.readouterr().err
    assert _import(first, *folders, "--data", str(data), "--tokenizer", str(out / "checkpoint-9"), "--final", "1") == 0
    manifest = read_json(RunDir(first).manifest_path)
    assert [Path(e["source"]).name for e in manifest["epochs"]] == ["saved-checkpoint-18", "saved-checkpoint-9"]
    assert manifest["final_epoch"] == 1 and manifest["imported"]["order"] == "as given"
    assert all(math.isnan(e["lr_mean"]) and e["train_loss"] is None for e in manifest["epochs"])
    assert main(["select", str(first), "-q"]) == 0
    capsys.readouterr()
    assert main(["influence", str(first), "--set", "influence.lr_weighted=true", "-q"]) == 2
    assert "learning rate" in capsys.readouterr().err

    # the data of another run, and the dev accuracy the Trainer logged
    second = tmp_path / "second"
    assert _import(second, str(out), "--data-from", str(first), "--dev-accuracy", "trainer-state") == 0
    manifest = read_json(RunDir(second).manifest_path)
    assert all(e["dev_accuracy_source"].startswith("trainer_state.json") for e in manifest["epochs"])
    assert pd.read_parquet(RunDir(second).split_path("train")).equals(pd.read_parquet(RunDir(first).split_path("train")))

    # with a declared training recipe the retraining experiments are allowed (this run lacks influence)
    recipe = tmp_path / "recipe"
    assert _import(recipe, str(out), "--data", str(data), "--training-recipe", "--set", f"model.name={tiny_model_dir}") == 0
    assert read_json(RunDir(recipe).manifest_path)["imported"]["training_recipe"] is True
    capsys.readouterr()
    assert main(["experiment", "zero-shot", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not complete through influence" in err and "training recipe" not in err


def test_bad_imports_are_one_line_errors(trained, tmp_path, capsys):
    out, data = trained
    no_config = tmp_path / "no-config"
    shutil.copytree(out / "checkpoint-9", no_config)
    (no_config / "config.json").unlink()
    strings_unnamed = tmp_path / "unnamed"
    shutil.copytree(out / "checkpoint-9", strings_unnamed)
    config = json.loads((strings_unnamed / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "LABEL_0", "1": "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    (strings_unnamed / "config.json").write_text(json.dumps(config))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        ([str(no_config), "--data", str(data)], "has no config.json"),
        ([str(tmp_path / "missing"), "--data", str(data)], "does not exist"),
        ([str(out)], "needs the data"),
        ([str(out), "--data", str(data), "--final", "3"], "--final '3' is none of the 2"),
        ([str(strings_unnamed), "--data", str(data)], "classes are unnamed"),
        ([str(out), "--data", str(data), "--training-recipe"], "needs model.name"),
        ([str(out), "--data", str(data), "--set", "data.languages=[de,xx]"], "'xx' is not available"),
    ]
    for i, (argv, needle) in enumerate(cases):
        target = tmp_path / f"run{i}"
        capsys.readouterr()
        assert _import(target, *argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("lingtrace: error:") and err.count("\n") == 1 and needle in err, (argv, err)
        assert not target.exists(), argv
    before = snapshot(foreign)
    assert _import(foreign, str(out), "--data", str(data)) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err and snapshot(foreign) == before
