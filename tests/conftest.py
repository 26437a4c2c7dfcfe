"""Shared fixtures: a tiny XLM-R built from a config with a locally trained tokenizer, and a tiny run directory."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("LINGTRACE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = {
    "de": (["gut", "schön", "toll", "prima"], ["schlecht", "böse", "mies", "trüb"]),
    "fr": (["bon", "beau", "super", "joli"], ["mauvais", "laid", "nul", "triste"]),
    "ru": (["хорошо", "красиво", "отлично", "мило"], ["плохо", "уродливо", "ужасно", "грустно"]),
}


def toy_examples(langs=("de", "fr", "ru"), n_per_lang=12, split="train", seed=0) -> pd.DataFrame:
    """A parallel two-class toy task: the label is whether the text holds a positive word."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_per_lang):
        label = int(i % 2)
        k = int(rng.integers(4))
        filler = int(rng.integers(100))
        for lang in langs:
            pos, neg = WORDS[lang]
            word = pos[k] if label else neg[k]
            rows.append(
                {
                    "uid": f"{split}-{lang}-{i}",
                    "lang": lang,
                    "translation_id": str(i),
                    "text_a": f"{word} {filler}",
                    "text_b": "",
                    "label": label,
                }
            )
    return pd.DataFrame(rows)


def all_toy_texts() -> list[str]:
    texts = []
    for pos, neg in WORDS.values():
        texts += [f"{w} {n}" for w in pos + neg for n in range(0, 100, 7)]
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from support.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", all_toy_texts(), num_labels=2, layers=2, hidden=32, vocab_size=200)


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir):
    """A run directory with prepared toy data and a config pointing at the tiny model."""
    from lingtrace.config import Config, apply_overrides
    from lingtrace.io import write_json, write_parquet
    from lingtrace.run import RunDir

    run = RunDir(tmp_path / "run")
    cfg = apply_overrides(
        Config(),
        [
            "data.task=toy",
            "data.source=local",
            f"data.path={tmp_path}",
            "data.languages=[de,fr,ru]",
            "data.train_per_lang=12",
            "data.dev_per_lang=6",
            "data.test_per_lang=6",
            f"model.name={tiny_model_dir}",
            "model.max_length=16",
            "train.lr=0.003",
            "train.epochs=3",
            "train.batch_size=8",
            "train.seed=1",
            "select.per_lang=2",
        ],
    )
    for split, n, seed in [("train", 12, 0), ("dev", 6, 1), ("test", 6, 2)]:
        write_parquet(run.split_path(split), toy_examples(n_per_lang=n, split=split, seed=seed))
    write_json(run.task_path, {"task": "toy", "label_names": ["neg", "pos"], "parallel": True, "pair": False})
    run.save_config(cfg)
    run.mark_complete(cfg, "prepare", {})
    return run, cfg
