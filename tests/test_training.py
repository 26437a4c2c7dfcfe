"""Fine-tuning: checkpoint per epoch, manifest, early stopping, resume after an interruption, refusals;
the checkpoint layout (frozen weights stored once per run), AdamW's second moments beside each
checkpoint, and the pickle-free trainer state."""

from __future__ import annotations

import json
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

from lingtrace.config import apply_overrides
from lingtrace.errors import LingtraceError
from lingtrace.io import read_json
from lingtrace.models import checkpoints
from lingtrace.models.loading import load_checkpoint
from lingtrace.pipeline import run_stages
from lingtrace.run import LEGACY_TRAINER_STATE_FILE, TRAINER_STATE_FILE
from lingtrace.training import state, trainer


def _weights(path):
    return checkpoints.checkpoint_tensors(path)


def _frozen(cfg):
    return apply_overrides(cfg, ["model.freeze_embeddings=true"])


def _interrupt_in_epoch_2(run, cfg, monkeypatch):
    """Train until epoch 2's dev evaluation raises KeyboardInterrupt (epoch 1 is then complete)."""
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
    monkeypatch.setattr(trainer, "predict", real_predict)


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
    # nothing trainable is frozen: save_pretrained's single file; the trainer state is gone once complete
    assert (run.checkpoint_dir(1) / checkpoints.SINGLE_FILE).exists()
    assert not (run.checkpoint_dir(1) / checkpoints.INDEX_FILE).exists()
    assert not (run.checkpoints_dir / TRAINER_STATE_FILE).exists()


@pytest.mark.parametrize("freeze", [False, True], ids=["all-trained", "frozen-embeddings"])
def test_resume_after_interruption_equals_uninterrupted(tiny_run, tmp_path, monkeypatch, freeze):
    run, cfg = tiny_run
    cfg = _frozen(cfg) if freeze else cfg
    ref = type(run)(tmp_path / "ref")
    shutil.copytree(run.root, ref.root)
    trainer.train(ref, cfg)

    _interrupt_in_epoch_2(run, cfg, monkeypatch)
    partial = read_json(run.manifest_path)
    assert [e["epoch"] for e in partial["epochs"]] == [1] and not partial["complete"]
    assert not run.checkpoint_dir(2).exists()
    assert not list(run.checkpoints_dir.glob(".*tmp"))
    assert (run.checkpoints_dir / TRAINER_STATE_FILE).exists()
    resumed = trainer.train(run, cfg)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    for epoch in (1, 2, 3):
        a, b = _weights(run.checkpoint_dir(epoch)), _weights(ref.checkpoint_dir(epoch))
        assert set(a) == set(b)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
        moments_a = load_file(str(run.checkpoint_dir(epoch) / checkpoints.SECOND_MOMENTS))
        moments_b = load_file(str(ref.checkpoint_dir(epoch) / checkpoints.SECOND_MOMENTS))
        for k in moments_b:
            torch.testing.assert_close(moments_a[k], moments_b[k], rtol=1e-5, atol=1e-12)
    if freeze:  # the resumed epochs link the frozen file written before the interruption
        inodes = {(run.checkpoint_dir(e) / checkpoints.FROZEN_SHARD).stat().st_ino for e in (1, 2, 3)}
        assert len(inodes) == 1
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


# ---------------------------------------------------------------- checkpoint layout


def test_frozen_weights_are_stored_once_and_every_checkpoint_loads_exactly(tiny_run, tmp_path, monkeypatch):
    run, cfg = tiny_run
    cfg = _frozen(cfg)
    captured: dict[int, dict[str, torch.Tensor]] = {}
    plain: dict[int, dict[str, torch.Tensor]] = {}
    real_save = trainer.save_checkpoint

    def capturing_save(model, tokenizer, directory, previous=None):
        epoch = len(captured) + 1
        captured[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        reference = tmp_path / f"plain-{epoch}"
        model.save_pretrained(reference)  # what save_pretrained alone writes
        plain[epoch] = load_file(str(reference / "model.safetensors"))
        return real_save(model, tokenizer, directory, previous)

    monkeypatch.setattr(trainer, "save_checkpoint", capturing_save)
    trainer.train(run, cfg)
    assert sorted(captured) == [1, 2, 3]
    frozen_inodes = set()
    for epoch in (1, 2, 3):
        d = run.checkpoint_dir(epoch)
        assert not (d / checkpoints.SINGLE_FILE).exists()
        index = read_json(d / checkpoints.INDEX_FILE)
        on_disk = checkpoints.checkpoint_tensors(d)
        # the shards hold exactly save_pretrained's tensors, bytes included, split by the index
        assert set(on_disk) == set(plain[epoch]) == set(index["weight_map"])
        for k, t in plain[epoch].items():
            assert torch.equal(on_disk[k], t), k
        frozen_names = {k for k, f in index["weight_map"].items() if f == checkpoints.FROZEN_SHARD}
        assert "roberta.embeddings.word_embeddings.weight" in frozen_names
        with safe_open(str(d / checkpoints.FROZEN_SHARD), framework="pt") as f:
            assert set(f.keys()) == frozen_names
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in plain[epoch].values())
        frozen_inodes.add((d / checkpoints.FROZEN_SHARD).stat().st_ino)
        # from_pretrained and load_checkpoint give exactly the model's tensors at that epoch
        for model in (AutoModelForSequenceClassification.from_pretrained(d), load_checkpoint(d)[0]):
            loaded = model.state_dict()
            for k, t in captured[epoch].items():
                assert torch.equal(loaded[k], t), (epoch, k)
    assert len(frozen_inodes) == 1  # one file, hard-linked into every epoch
    assert (run.checkpoint_dir(1) / checkpoints.FROZEN_SHARD).stat().st_nlink == 3
    # the tokenizer (the same every epoch) is linked too; the trained tensors are not
    assert (run.checkpoint_dir(3) / "tokenizer.json").stat().st_ino == (run.checkpoint_dir(1) / "tokenizer.json").stat().st_ino
    trained_inodes = {(run.checkpoint_dir(e) / checkpoints.TRAINED_SHARD).stat().st_ino for e in (1, 2, 3)}
    assert len(trained_inodes) == 3
    assert oct((run.checkpoint_dir(2) / checkpoints.TRAINED_SHARD).stat().st_mode & 0o777) == oct(
        (run.checkpoint_dir(2) / "config.json").stat().st_mode & 0o777
    )


def test_tied_weights_and_changed_frozen_tensors(tmp_path):
    """A masked LM ties its decoder to the frozen embeddings: the split checkpoint holds what save_pretrained
    holds and loads (tied) to the same tensors; frozen tensors that changed are written, not linked."""
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    from conftest import all_toy_texts
    from support.tiny import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(all_toy_texts(), vocab_size=100)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, tie_word_embeddings=True)
    model = BertForMaskedLM(config)
    model.get_input_embeddings().weight.requires_grad_(False)
    assert model.cls.predictions.decoder.weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path / "plain")
    first, second = tmp_path / "epoch-1", tmp_path / "epoch-2"
    first.mkdir()
    assert checkpoints.save_checkpoint(model, tokenizer, first) == {"layout": "sharded", "frozen": "written"}
    assert set(checkpoints.checkpoint_tensors(first)) == set(load_file(str(tmp_path / "plain" / "model.safetensors")))
    for directory in (first, tmp_path / "plain"):
        loaded = AutoModelForMaskedLM.from_pretrained(directory)
        assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
        for k, t in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], t), k
    with torch.no_grad():
        model.get_input_embeddings().weight[0] += 1.0  # a "frozen" tensor that changed after all
    second.mkdir()
    assert checkpoints.save_checkpoint(model, tokenizer, second, previous=first)["frozen"] == "written"
    assert (second / checkpoints.FROZEN_SHARD).stat().st_ino != (first / checkpoints.FROZEN_SHARD).stat().st_ino
    loaded = AutoModelForMaskedLM.from_pretrained(second)
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_link_falls_back_to_a_copy(tmp_path, monkeypatch):
    src = tmp_path / "a"
    src.write_bytes(b"weights")

    def no_links(*a, **k):
        raise OSError("hard links not supported")

    monkeypatch.setattr(checkpoints.os, "link", no_links)
    assert checkpoints.link_or_copy(src, tmp_path / "b") == "copied"
    assert (tmp_path / "b").read_bytes() == b"weights"


# ---------------------------------------------------------------- AdamW second moments


def test_second_moments_are_adamw_exp_avg_sq_at_each_epoch(tiny_run, monkeypatch):
    run, cfg = tiny_run
    cfg = _frozen(cfg)  # two parameter groups (decay / no decay) and a parameter that is not trained
    seen: dict[int, dict] = {}
    real = trainer.save_second_moments

    def capturing(optimizer, model, directory):
        by_param = {p: n for n, p in model.named_parameters()}
        seen[len(seen) + 1] = {
            "exp_avg_sq": {by_param[p]: s["exp_avg_sq"].clone() for p, s in optimizer.state.items()},
            "steps": {by_param[p]: int(s["step"]) for p, s in optimizer.state.items()},
            "decay": {by_param[p]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]},
            "lr": optimizer.param_groups[0]["lr"],
        }
        return real(optimizer, model, directory)

    monkeypatch.setattr(trainer, "save_second_moments", capturing)
    manifest = trainer.train(run, cfg)
    trained = {n: p for n, p in load_checkpoint(run.checkpoint_dir(1))[0].named_parameters() if "word_embeddings" not in n}
    steps_done = 0
    for rec in manifest["epochs"]:
        epoch, steps_done = rec["epoch"], steps_done + rec["steps"]
        path = run.checkpoint_dir(epoch) / checkpoints.SECOND_MOMENTS
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        expected = seen[epoch]
        assert set(tensors) == set(trained) == set(expected["exp_avg_sq"])
        for name, t in tensors.items():
            assert t.dtype == torch.float32 and t.shape == trained[name].shape
            assert torch.equal(t, expected["exp_avg_sq"][name]), name
        assert set(expected["steps"].values()) == {steps_done}
        assert meta == {
            "step": str(steps_done),
            "beta1": "0.9",
            "beta2": "0.999",
            "eps": "1e-08",
            "lr": repr(expected["lr"]),
            "weight_decay": repr(cfg.train.weight_decay),
            "format": "adamw-exp_avg_sq-v1",
        }
        # both parameter groups are present under their own names
        assert expected["decay"]["classifier.dense.bias"] == 0.0 and "classifier.dense.bias" in tensors
        assert expected["decay"]["classifier.dense.weight"] == cfg.train.weight_decay and "classifier.dense.weight" in tensors


# ---------------------------------------------------------------- the trainer state


def _optimizer_and_scheduler(model):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    return optimizer, get_linear_schedule_with_warmup(optimizer, 2, 10)


def _small_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    return model


def test_trainer_state_round_trip_is_exact(tmp_path):
    model = _small_model()
    optimizer, scheduler = _optimizer_and_scheduler(model)
    for _ in range(3):
        model(torch.tensor([1, 2, 3])).square().sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    path = tmp_path / TRAINER_STATE_FILE
    rng = state.rng_state()
    state.save_trainer_state(path, epoch=2, best=0.75, bad_epochs=1, optimizer=optimizer, scheduler=scheduler, model=model, rng=rng, rng_ranks=None)
    draws = (random.random(), np.random.rand(), torch.rand(3))

    fresh = _small_model(seed=1)
    fresh.load_state_dict(model.state_dict())
    new_optimizer, new_scheduler = _optimizer_and_scheduler(fresh)
    restored = state.load_trainer_state(path, optimizer=new_optimizer, scheduler=new_scheduler, model=fresh)
    assert restored == {"epoch": 2, "best": 0.75, "bad_epochs": 1}
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(3), draws[2])
    a, b = optimizer.state_dict(), new_optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(a["state"][i][k], b["state"][i][k])
    assert scheduler.state_dict() == new_scheduler.state_dict()
    assert type(b["param_groups"][0]["betas"]) is tuple
    with safe_open(str(path), framework="pt") as f:  # tensors by parameter name, the rest JSON
        assert set(f.keys()) == {"rng/torch"} | {f"optimizer/{n}/{k}" for n in ("1.weight", "1.bias") for k in ("step", "exp_avg", "exp_avg_sq")}
        assert json.loads(f.metadata()["state"])["optimizer"]["param_groups"][0]["params"] == ["1.weight"]


def _rewrite_state(path, change):
    """Apply ``change(tensors, doc, meta)`` to a trainer-state file in place (an edit by someone else)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    doc = json.loads(meta["state"])
    change(tensors, doc, meta)
    if meta["state"] != "{not json":
        meta["state"] = json.dumps(doc)
    save_file(tensors, str(path), metadata=meta)


def _first_moment_name(tensors):
    return next(k for k in tensors if k.endswith("/exp_avg"))


TAMPERINGS = {
    "invalid JSON": lambda t, d, m: m.update(state="{not json"),
    "other format": lambda t, d, m: m.update(format="something-else"),
    "missing key": lambda t, d, m: d.pop("scheduler"),
    "extra key": lambda t, d, m: d.update(cmd="rm -rf"),
    "wrong shape": lambda t, d, m: t.update({_first_moment_name(t): torch.zeros(7)}),
    "missing tensor": lambda t, d, m: t.pop(_first_moment_name(t)),
    "extra tensor": lambda t, d, m: t.update(surprise=torch.zeros(1)),
    "unknown parameter": lambda t, d, m: d["optimizer"]["state"].update(ghost=next(iter(d["optimizer"]["state"].values()))),
    "bad generator state": lambda t, d, m: d["rng"]["python"].update(internal=[1, 2, 3]),
    "wrong type": lambda t, d, m: d.update(epoch="1"),
}


def test_tampered_trainer_state_is_refused(tiny_run, monkeypatch):
    run, cfg = tiny_run
    _interrupt_in_epoch_2(run, cfg, monkeypatch)
    path = run.checkpoints_dir / TRAINER_STATE_FILE
    original = path.read_bytes()
    for name, tampering in TAMPERINGS.items():
        path.write_bytes(original)
        _rewrite_state(path, tampering)
        with pytest.raises(LingtraceError) as err:
            trainer.train(run, cfg)
        message = str(err.value)
        assert "cannot resume" in message and str(path) in message and "\n" not in message, name
        assert "--overwrite" in err.value.fix, name
        assert [e["epoch"] for e in read_json(run.manifest_path)["epochs"]] == [1], name  # nothing lost
    path.write_bytes(original)  # the untouched file resumes
    assert [e["epoch"] for e in trainer.train(run, cfg)["epochs"]] == [1, 2, 3]


class _Exploit:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickled_trainer_state_is_never_loaded(tiny_run, tmp_path, monkeypatch):
    run, cfg = tiny_run
    _interrupt_in_epoch_2(run, cfg, monkeypatch)
    target = tmp_path / "pwned"
    legacy = run.checkpoints_dir / LEGACY_TRAINER_STATE_FILE
    legacy.write_bytes(pickle.dumps(_Exploit(target)))
    pickle.loads(legacy.read_bytes()).close()  # the exploit works when unpickled ...
    assert target.exists()
    target.unlink()
    for beside_new_state in (True, False):
        if not beside_new_state:
            (run.checkpoints_dir / TRAINER_STATE_FILE).unlink()
        with pytest.raises(LingtraceError, match="pickled trainer state") as err:
            trainer.train(run, cfg)
        assert "\n" not in str(err.value) and "--overwrite" in err.value.fix
        assert not target.exists()  # ... and lingtrace never unpickled it
    trainer.train(run, cfg, overwrite=True)
    assert not target.exists() and not legacy.exists()


def test_a_checkpoint_with_pickled_weights_is_refused(tiny_model_dir, tmp_path):
    target = tmp_path / "pwned"
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch-1"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, checkpoint / name)
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(target)))
    with pytest.raises(LingtraceError, match="cannot load model"):
        load_checkpoint(checkpoint)
    assert not target.exists()


def test_a_complete_run_never_reads_its_trainer_state(tiny_run, tmp_path):
    run, cfg = tiny_run
    trainer.train(run, cfg)
    target = tmp_path / "pwned"
    (run.checkpoints_dir / LEGACY_TRAINER_STATE_FILE).write_bytes(pickle.dumps(_Exploit(target)))
    assert trainer.train(run, cfg)["complete"]
    assert not target.exists()


def test_damaged_trainer_state_gives_clear_error(tiny_run, monkeypatch):
    run, cfg = tiny_run
    _interrupt_in_epoch_2(run, cfg, monkeypatch)
    (run.checkpoints_dir / TRAINER_STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(LingtraceError, match="damaged"):
        trainer.train(run, cfg)
    assert run.checkpoint_dir(1).exists()  # the completed epoch survives
