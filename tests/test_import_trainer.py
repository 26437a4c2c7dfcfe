"""Runs trained by a real ``transformers.Trainer``, imported with their optimizer state, or written as they
train by ``LingtraceCallback``: adam-cosine on an imported run equals a float64 brute force preconditioned
by the ``optimizer.pt`` state mapped by hand; the callback's run scores as the imported run; a peft LoRA
causal LM trained by the Trainer is imported and analysed; an ``optimizer.pt`` that would run code is
refused without running it; optimizers without AdamW's second moments are recorded and refused by
adam-cosine with the reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import toy_examples
from lingtrace.cli import main
from lingtrace.io import read_json
from lingtrace.run import RunDir, read_selection, read_split
from test_cli import snapshot

LR = 0.01
BATCH = 8
TRAIN_PER_LANG = 16  # 3 languages x 16 = 48 examples = 6 steps per epoch: checkpoint-6, checkpoint-12
LABELS = {0: "neg", 1: "pos"}
MAX_LENGTH = 16
COMMON = ["--set", f"model.max_length={MAX_LENGTH}", "--set", "select.per_lang=2", "--set", "analysis.k=5", "-q"]
METHODS = ["--set", "influence.methods=[tracin,adam-cosine]", "--set", "influence.dtype=float64"]


def _splits() -> dict[str, pd.DataFrame]:
    out = {
        "train": toy_examples(n_per_lang=TRAIN_PER_LANG, split="train", seed=0),
        "dev": toy_examples(n_per_lang=6, split="dev", seed=1),
        "test": toy_examples(n_per_lang=6, split="test", seed=2),
    }
    return {k: v.drop(columns=["uid", "text_b"]).assign(label=v["label"].map(LABELS)) for k, v in out.items()}


def _features(tokenizer, frame: pd.DataFrame) -> list[dict]:
    enc = tokenizer(list(frame["text_a"]), truncation=True, max_length=MAX_LENGTH)
    ids = {v: k for k, v in LABELS.items()}
    return [{"input_ids": i, "attention_mask": m, "labels": ids[y]} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], frame["label"])]


def _args(out: Path, epochs: int = 2, **kwargs):
    from transformers import TrainingArguments

    settings = dict(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=BATCH, learning_rate=LR, weight_decay=0.01,
        adam_epsilon=1e-6, save_strategy="epoch", eval_strategy="epoch", logging_strategy="steps", logging_steps=1,
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    return TrainingArguments(**{**settings, **kwargs})


def _train_classifier(root: Path, model_dir, callbacks=(), **kwargs) -> Path:
    """The tiny XLM-R fine-tuned by transformers.Trainer (a checkpoint and an evaluation per epoch)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    splits = _splits()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    trainer = Trainer(
        model=model, args=_args(root / "out", **kwargs),
        train_dataset=_features(tokenizer, splits["train"]), eval_dataset=_features(tokenizer, splits["dev"]),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        processing_class=tokenizer, callbacks=list(callbacks),
    )
    trainer.train()
    return root / "out"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One Trainer run with LingtraceCallback attached: the Trainer's output folder, its data as local
    Parquet files (for `lingtrace import`), and the run directory the callback wrote."""
    from lingtrace.integrations import LingtraceCallback

    root = tmp_path_factory.mktemp("trainer")
    data = root / "data"
    data.mkdir()
    splits = _splits()
    for name, frame in splits.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    callback = LingtraceCallback(
        root / "callback-run", splits["train"], splits["dev"], splits["test"],
        text_column="text_a", translation_id_column="translation_id",
        overrides={"model.max_length": MAX_LENGTH, "select.per_lang": 2, "analysis.k": 5},
    )
    out = _train_classifier(root, tiny_model_dir, callbacks=[callback])
    return out, data, root / "callback-run"


@pytest.fixture(scope="module")
def imported(trained, tmp_path_factory):
    """The Trainer's output imported, select and influence (tracin, adam-cosine in float64) run on it."""
    out, data, _ = trained
    run_dir = tmp_path_factory.mktemp("imported") / "run"
    assert main(["import", str(run_dir), str(out), "--data", str(data), *COMMON]) == 0
    for stage in ("select", "influence"):
        assert main([stage, str(run_dir), *METHODS, "-q"]) == 0, stage
    return run_dir


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _scores(run_dir: Path, method: str) -> tuple[np.ndarray, list[str], list[str]]:
    from lingtrace.influence.store.reader import load_scores

    s = load_scores(RunDir(run_dir), method=method)
    return s.total(), list(s.test_uids), list(s.train_uids)


def _by_hand(folder: Path, model) -> dict[str, torch.Tensor]:
    """exp_avg_sq per parameter name from the Trainer's optimizer.pt, mapped by hand: the Trainer's two
    groups hold the weights (decayed) and then the biases and LayerNorm weights, each in the model's order."""
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    names = [n for n, _ in model.named_parameters()]
    decayed = [n for n in names if "bias" not in n and "LayerNorm" not in n]
    order = decayed + [n for n in names if n not in decayed]
    indices = [i for g in state["param_groups"] for i in g["params"]]
    assert [len(g["params"]) for g in state["param_groups"]] == [len(decayed), len(names) - len(decayed)]
    group = state["param_groups"][0]
    assert group["weight_decay"] == 0.01 and state["param_groups"][1]["weight_decay"] == 0.0
    step = int(state["state"][indices[0]]["step"])
    vhat = {order[k]: state["state"][i]["exp_avg_sq"].double() / (1 - group["betas"][1] ** step) for k, i in enumerate(indices)}
    return {n: 1.0 / torch.sqrt(v + group["eps"]) for n, v in vhat.items()}


def test_adam_cosine_on_an_imported_trainer_run_equals_a_float64_brute_force(trained, imported):
    """The imported second moments are the optimizer.pt state of each checkpoint, and adam-cosine's scores
    equal per-example float64 gradients preconditioned by hand, cosine per checkpoint, summed."""
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _, _ = trained
    run = RunDir(imported)
    manifest = read_json(run.manifest_path)
    folders = [Path(e["source"]) for e in manifest["epochs"]]
    assert [f.name for f in folders] == ["checkpoint-6", "checkpoint-12"]
    for e, folder in zip(manifest["epochs"], folders):
        record = e["second_moments"]
        assert record["source"] == str(folder / "optimizer.pt") and record["optimizer"] == "AdamW" and record["step"] == e["global_step"]
        with safe_open(str(run.checkpoints_dir / e["path"] / "optimizer_second_moments.safetensors"), framework="pt") as f:
            meta = f.metadata()
            assert meta["format"] == "adamw-exp_avg_sq-v1" and meta["step"] == str(e["global_step"])
            assert float(meta["eps"]) == 1e-6 and float(meta["weight_decay"]) == 0.01
    assert "AdamW" in manifest["imported"]["taken"]["second_moments"]
    assert not [p for p in imported.rglob("*") if p.suffix in (".pt", ".pth", ".bin")]  # still no pickle in the run

    total, test_uids, train_uids = _scores(imported, "adam-cosine")
    picked = np.arange(0, len(train_uids), 4)  # every 4th training example (cosines are per example pair)
    total = total[:, picked]
    train = read_split(run, "train").set_index("uid").loc[[train_uids[j] for j in picked]]
    test = read_selection(run).set_index("uid").loc[test_uids]
    tokenizer = AutoTokenizer.from_pretrained(folders[-1])
    expected = np.zeros((len(test), len(train)))
    for folder in folders:
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float64).eval()
        r = _by_hand(folder, model)
        params = [p for _, p in model.named_parameters()]

        def grad(text: str, label: int, model=model, params=params, r=r) -> torch.Tensor:
            enc = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, torch.tensor([label]), reduction="sum")
            g = torch.autograd.grad(loss, params)
            return torch.cat([(gi * r[n]).reshape(-1) for (n, _), gi in zip(model.named_parameters(), g)])

        gz = torch.stack([grad(t, int(y)) for t, y in zip(train["text_a"], train["label"])])
        gt = torch.stack([grad(t, int(y)) for t, y in zip(test["text_a"], test["label"])])
        gz, gt = gz / gz.norm(dim=1, keepdim=True), gt / gt.norm(dim=1, keepdim=True)
        expected += (gt @ gz.T).numpy()
    assert _rel(total, expected) <= 1e-6
    plain, _, _ = _scores(imported, "tracin")
    assert _rel(plain[:, picked], expected) > 1e-3  # the preconditioner matters


def test_the_callback_run_scores_as_the_imported_run(trained, imported):
    """The run the callback wrote while the Trainer trained: the same checkpoints (weights and second
    moments), data and manifest numbers as the import of the Trainer's checkpoints, and the same scores;
    frozen-weight sharing is save_checkpoint's; nothing but a run directory is written."""
    from safetensors.torch import load_file

    _, _, callback_dir = trained
    mine, theirs = RunDir(callback_dir), RunDir(imported)
    cfg = mine.load_config()
    assert mine.check_stage(cfg, "prepare") and mine.check_stage(cfg, "train")
    for split in ("train", "dev", "test"):
        assert read_split(mine, split).equals(read_split(theirs, split)), split
    m, t = read_json(mine.manifest_path), read_json(theirs.manifest_path)
    assert m["final_epoch"] == t["final_epoch"] == 2 and m["complete"]
    for a, b in zip(m["epochs"], t["epochs"]):
        assert a["weights"] == b["weights"]  # byte-identical trained weights
        assert a["global_step"] == b["global_step"] and a["steps"] == b["steps"] == 6
        assert a["train_loss"] == pytest.approx(b["train_loss"]) and a["dev_accuracy"] == pytest.approx(b["trainer_eval_accuracy"])
        assert a["lr_start"] == pytest.approx(b["lr_start"]) and a["lr_end"] == pytest.approx(b["lr_end"]) and a["lr_mean"] == pytest.approx(b["lr_mean"])
        assert a["second_moments"]["optimizer"] == "AdamW" and a["second_moments"]["step"] == b["second_moments"]["step"]
        ours = load_file(mine.checkpoints_dir / a["path"] / "optimizer_second_moments.safetensors")
        imported_moments = load_file(theirs.checkpoints_dir / b["path"] / "optimizer_second_moments.safetensors")
        assert ours.keys() == imported_moments.keys() and all(torch.equal(ours[k], imported_moments[k]) for k in ours)
    assert cfg.model.max_length == MAX_LENGTH and cfg.model.kind == "encoder-classifier"
    assert sorted(p.name for p in callback_dir.iterdir()) == ["checkpoints", "config.json", "data", "stages"]
    for stage in ("select", "influence"):
        assert main([stage, str(callback_dir), *METHODS, "-q"]) == 0, stage
    for method in ("tracin", "adam-cosine"):
        a, test_a, train_a = _scores(callback_dir, method)
        b, test_b, train_b = _scores(imported, method)
        assert (test_a, train_a) == (test_b, train_b)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * np.abs(b).max())
    for stage in ("analyze", "report"):
        assert main([stage, str(callback_dir), "-q"]) == 0, stage


def test_a_tampered_optimizer_state_is_refused_without_running_it(trained, tmp_path, capsys):
    """An optimizer.pt whose pickle would run code is refused in one line naming it; the code never runs."""
    out, data, _ = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state": {}, "param_groups": [], "payload": Evil()}, copy / "checkpoint-6" / "optimizer.pt")
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(["import", str(run_dir), str(copy), "--data", str(data), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error:") and err.count("\n") == 1, err
    assert str(copy / "checkpoint-6" / "optimizer.pt") in err and "weights_only" in err and "--no-second-moments" in err
    assert not marker.exists() and not (run_dir / "stages" / "train.json").exists()
    # the old (non-zip) pickle format: refused the same way
    import pickle

    with open(copy / "checkpoint-6" / "optimizer.pt", "wb") as f:
        pickle.dump({"payload": Evil()}, f)
    assert main(["import", str(run_dir), str(copy), "--data", str(data), *COMMON]) == 2
    assert "optimizer.pt" in capsys.readouterr().err and not marker.exists()
    # without reading the optimizer state the import succeeds, and adam-cosine says why it cannot run
    assert main(["import", str(run_dir), str(copy), "--data", str(data), "--no-second-moments", *COMMON]) == 0
    assert not marker.exists()
    assert main(["select", str(run_dir), "-q"]) == 0
    capsys.readouterr()
    assert main(["influence", str(run_dir), "--set", "influence.methods=[adam-cosine]", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "imported with --no-second-moments" in err


def test_a_mismatched_model_is_an_error_not_a_guess(trained, tmp_path, capsys):
    """Word embeddings declared frozen, but trained by the Trainer: the optimizer's groups do not fit."""
    out, data, _ = trained
    capsys.readouterr()
    assert main(["import", str(tmp_path / "run"), str(out), "--data", str(data), "--set", "model.freeze_embeddings=true", *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.pt holds 2 parameter group(s)" in err and "model.freeze_embeddings" in err


@pytest.mark.parametrize("optim", ["adafactor", "sgd"])
def test_optimizers_without_adamw_moments_are_recorded_and_refused_by_adam_cosine(optim, tmp_path, tiny_model_dir, capsys):
    """A real Trainer run with another optimizer imports without second moments; adam-cosine refuses it
    with the reason, tracin runs."""
    out = _train_classifier(tmp_path, tiny_model_dir, epochs=1, optim=optim, eval_strategy="no", logging_steps=3)
    data = tmp_path / "data"
    data.mkdir()
    for name, frame in _splits().items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    run_dir = tmp_path / "run"
    assert main(["import", str(run_dir), str(out), "--data", str(data), *COMMON]) == 0
    record = read_json(RunDir(run_dir).manifest_path)["epochs"][0]["second_moments"]
    name = {"adafactor": "Adafactor", "sgd": "SGD"}[optim]
    assert record["optimizer"] == name and "file" not in record
    assert not (RunDir(run_dir).checkpoint_dir(1) / "optimizer_second_moments.safetensors").exists()
    assert main(["select", str(run_dir), "-q"]) == 0
    capsys.readouterr()
    assert main(["influence", str(run_dir), "--set", "influence.methods=[tracin,adam-cosine]", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is the state of {name}" in err
    assert not RunDir(run_dir).influence_store("tracin").exists()  # refused before any work


# ---------------------------------------------------------------- a peft LoRA causal LM

ANSWERS = {"de": ("nein", "ja"), "fr": ("non", "oui")}


def _prompt_answer_data(n_per_lang: int, split: str, seed: int) -> pd.DataFrame:
    frame = toy_examples(langs=("de", "fr"), n_per_lang=n_per_lang, split=split, seed=seed)
    return pd.DataFrame(
        {
            "prompt": [f"Positiv? {t}" for t in frame["text_a"]],
            "answer": [ANSWERS[lang][y] for lang, y in zip(frame["lang"], frame["label"])],
            "language": frame["lang"],
            "pair": frame["translation_id"],
        }
    )


@pytest.fixture(scope="module")
def lora_trained(tmp_path_factory):
    """A tiny Llama with LoRA adapters (peft, task type CAUSAL_LM) trained by transformers.Trainer on
    prompt/answer pairs in two languages, the loss on the answer tokens only, as a chat: the prompt as
    the user's message through the chat template, the answer and the end-of-turn token after it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer

    from conftest import all_toy_texts
    from support.tiny import make_tiny_decoder_dir

    root = tmp_path_factory.mktemp("lora")
    splits = {"train": _prompt_answer_data(12, "train", 0), "dev": _prompt_answer_data(4, "dev", 1), "test": _prompt_answer_data(6, "test", 2)}
    data = root / "data"
    data.mkdir()
    for name, frame in splits.items():
        frame.to_csv(data / f"{name}.csv", index=False)
    texts = all_toy_texts() + [f"Positiv? {w}" for w in ("ja", "nein", "oui", "non")] * 20
    base = make_tiny_decoder_dir(root / "base", texts, kind="causal-lm", vocab_size=300, tied=True)
    tokenizer = AutoTokenizer.from_pretrained(base)

    def features(frame):
        out = []
        for prompt, answer in zip(frame["prompt"], frame["answer"]):
            p = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False)
            a = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            out.append({"input_ids": p + a, "attention_mask": [1] * (len(p) + len(a)), "labels": [-100] * len(p) + a})
        return out

    from lingtrace.integrations import LingtraceCallback

    callback = LingtraceCallback(
        root / "callback-run", *splits.values(), text_column="prompt", label_column="answer", language_column="language",
        translation_id_column="pair", overrides=["model.max_length=48", "select.per_lang=2", "analysis.k=5"],
    )
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"))
    trainer = Trainer(
        model=model, args=_args(root / "out", learning_rate=3e-2, eval_strategy="no", logging_steps=2),
        train_dataset=features(splits["train"]), data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    return root / "out", data, base, features(splits["train"]), root / "callback-run"


@pytest.fixture(scope="module")
def lora_imported(lora_trained, tmp_path_factory):
    """The LoRA Trainer output imported, with select and influence (every method for causal LMs) run."""
    out, data, *_ = lora_trained
    run_dir = tmp_path_factory.mktemp("lora-imported") / "run"
    columns = "data.columns={text_a: prompt, label: answer, lang: language, translation_id: pair}"
    assert main(["import", str(run_dir), str(out), "--data", str(data), "--set", columns, "--set", "model.max_length=48", "--set", "select.per_lang=2", "--set", "analysis.k=5", "-q"]) == 0
    assert main(["select", str(run_dir), "-q"]) == 0
    assert main(["influence", str(run_dir), "--set", "influence.methods=[tracin,adam-cosine,representation,trak]", "-q"]) == 0
    return run_dir


def test_a_peft_lora_causal_lm_trained_by_the_trainer_is_imported_and_analysed(lora_trained, lora_imported):
    """The adapters become lingtrace's LoRA checkpoints (the base weights stored once), whose outputs equal
    the peft model's; the prompts and answers lingtrace builds are the training sequences; the optimizer
    state gives the adapters' second moments; select, influence (every method for causal LMs), analyze
    and report run."""
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lingtrace.models.loading import load_checkpoint
    from lingtrace.objectives import objective_for

    out, _, base, train_features, _ = lora_trained
    run = RunDir(lora_imported)
    cfg = run.load_config()
    assert cfg.model.kind == "causal-lm" and cfg.model.lora_r == 4 and cfg.model.lora_targets == ["q_proj", "v_proj"] and cfg.model.instruction == ""
    assert cfg.model.name == str(base)
    assert read_json(run.task_path)["label_names"] == ["ja", "nein", "non", "oui"]
    manifest = read_json(run.manifest_path)
    assert [Path(e["source"]).name for e in manifest["epochs"]] == ["checkpoint-3", "checkpoint-6"]
    first, second = (run.checkpoints_dir / e["path"] for e in manifest["epochs"])
    assert (first / "model-frozen.safetensors").stat().st_ino == (second / "model-frozen.safetensors").stat().st_ino  # stored once
    with safe_open(str(second / "model-trained.safetensors"), framework="pt") as f:
        assert f.keys() and all(".lora_" in k for k in f.keys())
    with safe_open(str(second / "optimizer_second_moments.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {k for k in json.loads((second / "model.safetensors.index.json").read_text())["weight_map"] if ".lora_" in k}
        assert f.metadata()["step"] == "6"

    # lingtrace's LoRA checkpoint computes what the peft model computes
    tokenizer = AutoTokenizer.from_pretrained(second)
    ours, _ = load_checkpoint(second)
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(out / "checkpoint-6")).eval()
    ids = torch.tensor([train_features[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(input_ids=ids).logits, theirs(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    # the examples lingtrace differentiates are the sequences the Trainer trained on
    examples = objective_for(cfg, read_json(run.task_path)["label_names"]).examples(read_split(run, "train"), tokenizer, cfg.model.max_length)
    trained_on = {tuple(f["input_ids"]): sum(x != -100 for x in f["labels"]) for f in train_features}
    assert {tuple(int(t) for t in x): int(n) for x, n in zip(examples.ids, examples.labels)} == trained_on

    for method in ("tracin", "adam-cosine", "representation", "trak"):
        meta = read_json(run.influence_store(method) / "meta.json")
        assert meta["complete"] and meta["epochs"] == ([2] if method == "representation" else [1, 2]), method
    for stage in ("analyze", "report"):
        assert main([stage, str(lora_imported), "-q"]) == 0, stage
    assert (run.report_dir / "index.html").is_file()


def test_the_callback_writes_a_lora_run_as_the_import_makes_it(lora_trained, lora_imported):
    """The callback on the peft model wrote the same LoRA run while the Trainer trained: the same
    adapters, base weights stored once, second moments and scores."""
    *_, callback_dir = lora_trained
    mine, theirs = RunDir(callback_dir), RunDir(lora_imported)
    cfg = mine.load_config()
    assert cfg.model.kind == "causal-lm" and cfg.model.lora_r == 4
    for a, b in zip(read_json(mine.manifest_path)["epochs"], read_json(theirs.manifest_path)["epochs"]):
        assert a["weights"]["sha256"] == b["weights"]["sha256"] and a["second_moments"]["step"] == b["second_moments"]["step"]
    c1, c2 = (mine.checkpoints_dir / e for e in ("epoch-1", "epoch-2"))
    assert (c1 / "model-frozen.safetensors").stat().st_ino == (c2 / "model-frozen.safetensors").stat().st_ino
    assert main(["select", str(callback_dir), "-q"]) == 0
    assert main(["influence", str(callback_dir), "--set", "influence.methods=[tracin,adam-cosine]", "-q"]) == 0
    for method in ("tracin", "adam-cosine"):
        a, test_a, train_a = _scores(callback_dir, method)
        b, test_b, train_b = _scores(lora_imported, method)
        assert (test_a, train_a) == (test_b, train_b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * np.abs(b).max())


# ---------------------------------------------------------------- decoder classifiers


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_decoder_classifier_trained_by_the_trainer_is_imported(lora, tmp_path, capsys):
    """A Llama sequence classifier fine-tuned in full, or with LoRA adapters and its head (peft task type
    SEQ_CLS, the head in modules_to_save), becomes a decoder-classifier run (the kind inferred) whose
    checkpoints compute the Trainer's logits and whose second moments cover the trained parameters."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    from conftest import all_toy_texts
    from lingtrace.models.loading import load_checkpoint
    from support.tiny import make_tiny_decoder_dir

    base = make_tiny_decoder_dir(tmp_path / "base", all_toy_texts(), kind="decoder-classifier", num_labels=2, vocab_size=300, tied=False)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"))
    splits = _splits()
    trainer = Trainer(
        model=model, args=_args(tmp_path / "out", epochs=1, eval_strategy="no", logging_steps=3),
        train_dataset=_features(tokenizer, splits["train"]), data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
    )
    trainer.train()
    data = tmp_path / "data"
    data.mkdir()
    for name, frame in splits.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    run_dir = tmp_path / "run"
    # an adapter checkpoint has no config.json of its own, so the class names are not saved with it
    names = ["--set", "data.label_names=[neg,pos]"] if lora else []
    assert main(["import", str(run_dir), str(tmp_path / "out"), "--data", str(data), *names, *COMMON]) == 0
    run = RunDir(run_dir)
    cfg = run.load_config()
    assert cfg.model.kind == "decoder-classifier" and cfg.model.lora_r == (2 if lora else 0)
    checkpoint = run.checkpoint_dir(1)
    ours, _ = load_checkpoint(checkpoint)
    assert type(ours).__name__ == "LlamaForSequenceClassification"
    folder = tmp_path / "out" / "checkpoint-6"
    if lora:
        theirs = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=2), str(folder))
    else:
        theirs = AutoModelForSequenceClassification.from_pretrained(folder)
    enc = tokenizer(["gut 3", "schlecht 4"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**enc).logits, theirs.eval()(**enc).logits, rtol=1e-5, atol=1e-5)
    moments = load_file(checkpoint / "optimizer_second_moments.safetensors")
    trained = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert set(moments) == trained and ("score.weight" in trained) and (all(".lora_" in n or n == "score.weight" for n in trained) if lora else len(trained) > 10)
    assert main(["select", str(run_dir), "-q"]) == 0
    assert main(["influence", str(run_dir), "--set", "influence.methods=[tracin,adam-cosine]", "-q"]) == 0


def test_the_callback_every_save_its_refusals_and_the_dev_accuracy_it_evaluates(tmp_path, tiny_model_dir):
    """every="save": a checkpoint whenever the Trainer saves (every save_steps); a Trainer that does not
    evaluate leaves the dev accuracy to lingtrace's evaluation; a finished run is refused before training
    unless overwrite; bad columns are one-line errors."""
    from lingtrace.errors import LingtraceError
    from lingtrace.integrations import LingtraceCallback

    splits = _splits()

    def callback(**kwargs):
        return LingtraceCallback(
            tmp_path / "run", *splits.values(), text_column="text_a", translation_id_column="translation_id",
            overrides=[f"model.max_length={MAX_LENGTH}"], **kwargs,
        )

    settings = dict(epochs=1, eval_strategy="no", save_strategy="steps", save_steps=3, logging_steps=2)
    _train_classifier(tmp_path / "a", tiny_model_dir, callbacks=[callback(every="save")], **settings)
    run = RunDir(tmp_path / "run")
    manifest = read_json(run.manifest_path)
    assert [e["global_step"] for e in manifest["epochs"]] == [3, 6] and [e["steps"] for e in manifest["epochs"]] == [3, 3]
    assert all(e["dev_accuracy_source"].startswith("evaluated") and e["trainer_eval_accuracy"] is None for e in manifest["epochs"])
    assert all(len(e["dev_accuracy_per_lang"]) == 3 for e in manifest["epochs"])
    # the learning rate of every step, recorded live: the linear schedule from LR over the 6 steps
    assert manifest["epochs"][0]["lr_start"] == pytest.approx(LR) and manifest["epochs"][1]["lr_end"] == pytest.approx(LR / 6)
    before = snapshot(run.root)
    with pytest.raises(LingtraceError, match="holds a finished run"):
        _train_classifier(tmp_path / "b", tiny_model_dir, callbacks=[callback()], **settings)
    assert snapshot(run.root) == before
    _train_classifier(tmp_path / "c", tiny_model_dir, callbacks=[callback(overwrite=True)], epochs=1, eval_strategy="no", save_strategy="no")
    assert [e["path"] for e in read_json(run.manifest_path)["epochs"]] == ["epoch-1"]
    with pytest.raises(LingtraceError, match="has no column 'sentence'") as e:
        _train_classifier(tmp_path / "d", tiny_model_dir, callbacks=[LingtraceCallback(tmp_path / "other", *splits.values(), text_column="sentence")], epochs=1)
    assert "\n" not in str(e.value) and not (tmp_path / "other").exists()
