"""Decoder runs end to end on tiny Llama models (prepare -> report): a decoder-classifier run and a
causal-lm run (full fine-tuning and LoRA), with every influence method on the decoder's own loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import all_toy_texts
from lingtrace.cli import main
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.models.loading import load_checkpoint
from lingtrace.run import STAGES, RunDir
from test_cli import cli_config  # noqa: F401, F811 - the fixture

METHODS = ["tracin", "adam-cosine", "representation", "trak"]


@pytest.fixture(scope="module")
def decoder_dirs(tmp_path_factory):
    from support.tiny import make_tiny_decoder_dir

    root = tmp_path_factory.mktemp("decoders")
    texts = all_toy_texts() + ["Label?", "neg", "pos", "user", "assistant"]
    return {kind: make_tiny_decoder_dir(root / kind, texts, kind=kind, vocab_size=300) for kind in ("causal-lm", "decoder-classifier")}


def write_config(tmp_path, base_config, model_dir, kind: str, **model) -> str:
    """test_cli's toy config (local data, 2 epochs) with a decoder of ``kind`` and every influence method."""
    cfg = yaml.safe_load(base_config.read_text(encoding="utf-8"))
    cfg["model"] = {"name": str(model_dir), "kind": kind, "max_length": 48, "instruction": "Label?\n", **model}
    cfg["influence"] = {"methods": METHODS, "batch_size": 8}
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def check_run(out, kind: str) -> RunDir:
    run = RunDir(out)
    assert all(run.is_complete(s) for s in STAGES)
    cfg = read_json(run.config_path)
    assert cfg["model"]["kind"] == kind
    manifest = read_json(run.manifest_path)
    assert manifest["complete"] and len(manifest["epochs"]) == 2
    chosen = pd.read_parquet(run.selection_path)
    assert len(chosen) > 0 and (chosen["pred"] == chosen["label"]).all()
    assert ((chosen["confidence"] >= 0.5) & (chosen["confidence"] <= 1)).all()  # softmax over two labels
    n_train = len(pd.read_parquet(run.split_path("train")))
    for method in METHODS:
        scores = load_scores(run, method=method)
        assert scores.meta["complete"]
        total = scores.total()
        assert total.shape == (len(chosen), n_train) and np.isfinite(total).all()
        if method == "tracin":
            assert scores.meta["stats"]["gradient_passes"] == (n_train + len(chosen)) * len(scores.epochs)
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert kind in page
    return run


@pytest.mark.parametrize("kind", ["decoder-classifier", "causal-lm"])
def test_decoder_run_end_to_end(kind, decoder_dirs, cli_config, tmp_path):  # noqa: F811 - the imported fixture
    out = tmp_path / "run"
    assert main(["run", write_config(tmp_path, cli_config, decoder_dirs[kind], kind), "--out", str(out), "-q"]) == 0
    run = check_run(out, kind)
    model, tokenizer = load_checkpoint(run.checkpoint_dir(1))
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # trainable tied embeddings were untied at load, so their influence gradient is exact
    head = model.get_output_embeddings()
    assert head is None or head.weight is not model.get_input_embeddings().weight


def test_lora_run_trains_and_attributes_the_adapters_only(decoder_dirs, cli_config, tmp_path):  # noqa: F811 - the imported fixture
    import torch
    from safetensors import safe_open

    from lingtrace.models.checkpoints import FROZEN_SHARD, TRAINED_SHARD

    pytest.importorskip("peft")
    out = tmp_path / "run"
    config = write_config(tmp_path, cli_config, decoder_dirs["causal-lm"], "causal-lm", lora_r=4, lora_layers=[-1])
    assert main(["run", config, "--out", str(out), "-q", "--set", "train.lr=0.01"]) == 0
    run = check_run(out, "causal-lm")
    first, second = run.checkpoint_dir(1), run.checkpoint_dir(2)
    with safe_open(str(second / TRAINED_SHARD), framework="pt") as f:
        trained = sorted(f.keys())
    assert trained and all(".lora_" in k and ".layers.1." in k for k in trained)
    assert (first / FROZEN_SHARD).stat().st_ino == (second / FROZEN_SHARD).stat().st_ino  # the base stored once
    model, _ = load_checkpoint(second)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == trained
    store = load_scores(run)
    assert sum(store.meta["n_params"].values()) == sum(model.get_parameter(n).numel() for n in trained)
    # the reloaded checkpoint computes what was trained: its adapters moved away from B = 0
    assert any(float(model.get_parameter(n).detach().abs().max()) > 0 for n in trained if ".lora_B." in n)
    # independently: the original base model from its own folder, adapters injected, the trained tensors copied in
    from transformers import AutoModelForCausalLM

    from lingtrace.models.decoder import apply_lora, decoder_record

    rebuilt = AutoModelForCausalLM.from_pretrained(decoder_dirs["causal-lm"], dtype=torch.float32)
    apply_lora(rebuilt, decoder_record(second)["lora"])
    with safe_open(str(second / TRAINED_SHARD), framework="pt") as f, torch.no_grad():
        for k in trained:
            rebuilt.get_parameter(k).copy_(f.get_tensor(k))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, rebuilt.eval()(input_ids=ids).logits, rtol=0, atol=1e-6)
