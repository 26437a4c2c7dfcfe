"""torchrun with the gloo backend on this CPU: 2 processes give the single-process results."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import all_toy_texts
from lingtrace.config import apply_overrides
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.pipeline import run_stages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "LINGTRACE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "lingtrace",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def no_dropout_run(tiny_run, tmp_path_factory):
    from support.tiny import make_tiny_model_dir

    run, cfg = tiny_run
    model = make_tiny_model_dir(tmp_path_factory.mktemp("nodrop") / "model", all_toy_texts(), num_labels=2, layers=2, hidden=32, vocab_size=200, dropout=0.0)
    cfg = apply_overrides(cfg, [f"model.name={model}", "select.per_lang=3", "influence.checkpoints=all", "influence.batch_size=4", "train.batch_size=7"])
    run.save_config(cfg)
    return run, cfg


def test_two_process_training_equals_one_process(no_dropout_run, tmp_path):
    run, cfg = no_dropout_run
    other = type(run)(tmp_path / "ddp")
    shutil.copytree(run.root, other.root)
    run_stages(run, cfg, ["train"])
    out = torchrun(["train", str(other.root), "-q"])
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = read_json(run.manifest_path), read_json(other.manifest_path)
    assert b["processes"] == 2 and len(a["epochs"]) == len(b["epochs"])
    for ea, eb in zip(a["epochs"], b["epochs"]):
        assert ea["steps"] == eb["steps"]  # the same global batches (36 examples, batches of 7: the last has 1)
        assert abs(ea["train_loss"] - eb["train_loss"]) < 1e-5
        assert ea["dev_accuracy"] == eb["dev_accuracy"]
        wa = load_file(str(run.checkpoints_dir / ea["path"] / "model.safetensors"))
        wb = load_file(str(other.checkpoints_dir / eb["path"] / "model.safetensors"))
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
        # rank 0 wrote AdamW's second moments: the same as one process's
        ma = load_file(str(run.checkpoints_dir / ea["path"] / "optimizer_second_moments.safetensors"))
        mb = load_file(str(other.checkpoints_dir / eb["path"] / "optimizer_second_moments.safetensors"))
        assert ma.keys() == mb.keys() and ma
        for k in ma:
            torch.testing.assert_close(ma[k], mb[k], rtol=1e-3, atol=1e-12)


def test_two_process_influence_equals_one_process(no_dropout_run, tmp_path):
    run, cfg = no_dropout_run
    run_stages(run, cfg, ["train", "select"])
    other = type(run)(tmp_path / "dist")
    shutil.copytree(run.root, other.root)
    run_stages(run, cfg, ["influence"])
    out = torchrun(["influence", str(other.root), "-q"])
    assert out.returncode == 0, out.stderr[-3000:]
    single, dist = load_scores(run), load_scores(other)
    assert dist.meta["stats"]["processes"] == 2 and other.is_complete("influence")
    assert len(dist.meta["plan"]["shards"]) >= 2  # each rank scored its own training shards
    n_train, n_test = len(single.train_uids), len(single.test_uids)
    assert dist.meta["stats"]["train_passes"] == n_train * len(single.epochs)  # no training example twice
    assert dist.train_uids == single.train_uids and dist.test_uids == single.test_uids
    for e in single.epochs:
        np.testing.assert_allclose(dist.epoch(e), single.epoch(e), rtol=1e-5, atol=1e-6)
        for g in single.groups:
            np.testing.assert_allclose(dist.epoch(e, "group." + g), single.epoch(e, "group." + g), rtol=1e-5, atol=1e-6)
    assert n_test > 0
    # a rerun is a no-op (the stage is complete) and a non-distributed command is refused
    assert torchrun(["influence", str(other.root), "-q"]).returncode == 0
    refused = torchrun(["analyze", str(other.root), "-q"])
    assert refused.returncode != 0 and "torchrun" in refused.stderr
