"""The presets: the paper's settings for its three tasks and the CPU-sized embedded defaults."""

from __future__ import annotations

import copy
from typing import Any

from lingtrace.config.sections import Config
from lingtrace.errors import LingtraceError

#: Paper settings (Choenni et al., 2023, section 3: languages, learning rates, 10 epochs with patience 3,
#: 2,000 training and 25 test examples per language, XLM-R base) for the three tasks, and the CPU-sized
#: embedded default.
PRESETS: dict[str, dict[str, Any]] = {
    "xnli": {
        "data": {"task": "xnli", "source": "hub", "languages": ["en", "fr", "de", "ru", "es"], "train_per_lang": 2000},
        "model": {"name": "xlm-roberta-base", "max_length": 128},
        "train": {"lr": 2e-5, "epochs": 10, "patience": 3, "batch_size": 32},
        "select": {"per_lang": 25},
    },
    "pawsx": {
        "data": {"task": "pawsx", "source": "hub", "languages": ["en", "fr", "de", "ko", "es"], "train_per_lang": 2000},
        "model": {"name": "xlm-roberta-base", "max_length": 128},
        "train": {"lr": 9e-6, "epochs": 10, "patience": 3, "batch_size": 32},
        "select": {"per_lang": 25},
    },
    "marc": {
        "data": {"task": "marc", "source": "hub", "languages": ["zh", "en", "fr", "de", "es"], "train_per_lang": 2000},
        "model": {"name": "xlm-roberta-base", "max_length": 128},
        "train": {"lr": 2e-5, "epochs": 10, "patience": 3, "batch_size": 32},
        "select": {"per_lang": 25},
    },
    # the offline demo: real multilingual encoder (multilingual-e5-small, first layers only) on
    # real parallel data (CLDR emoji names and keywords), sized for a 2-core CPU in minutes
    "emoji": {
        "data": {
            "task": "emoji",
            "source": "embedded",
            "languages": ["de", "es", "fr", "ru", "zh"],
            "train_per_lang": 300,
            "dev_per_lang": 60,
            "test_per_lang": 100,
        },
        "model": {
            "name": "embedded:multilingual-e5-small",
            "freeze_embeddings": True,
            "num_layers": 4,
            "max_length": 48,
            "text_prefix": "query: ",
        },
        "train": {"lr": 1e-4, "epochs": 4, "patience": 3, "batch_size": 16, "warmup_ratio": 0.1},
        "select": {"per_lang": 10},
        "influence": {"batch_size": 16},
        # a reduced sweep sized for a 2-core CPU (README: measured times); k scaled to 1,500 training examples
        "experiment": {
            "ks": [10, 20, 40],
            "k_grouping": "all",
            "k_test_per_lang": 1,
            "zero_shot_languages": ["es"],
            "imbalance_languages": ["es"],
            "imbalance_pcts": [50.0, 100.0],
            # LDS: fewer subsets than the default 50 (README: measured time and the power it reaches)
            "lds_subsets": 16,
            "noise_seeds": 3,
        },
    },
    # the offline decoder demo: SmolLM2-135M-Instruct (English-centric) answering with the emoji group's
    # name, LoRA on every linear module of its top 6 layers (frozen below, so backward stops there),
    # label-stratified samples, sized for a 2-core CPU (README and BENCHMARKS.md: measured time, accuracy)
    "emoji-llm": {
        "data": {
            "task": "emoji",
            "source": "embedded",
            "languages": ["en", "de", "es", "fr", "ru"],
            "train_per_lang": 64,
            "dev_per_lang": 24,
            "test_per_lang": 16,
            "stratify": True,
        },
        "model": {
            "name": "embedded:smollm2-135m-instruct",
            "kind": "causal-lm",
            "freeze_embeddings": True,
            "max_length": 40,
            "system_prompt": "Classify emoji.",
            "lora_r": 8,
            "lora_alpha": 16.0,
            "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "lora_layers": [-6, -5, -4, -3, -2, -1],
        },
        "train": {"lr": 3e-3, "epochs": 2, "patience": 2, "batch_size": 8, "eval_batch_size": 16, "warmup_ratio": 0.1},
        "select": {"per_lang": 3},
        "influence": {"batch_size": 8},
        "experiment": {
            "ks": [5, 10],
            "k_grouping": "all",
            "k_test_per_lang": 1,
            "zero_shot_languages": ["es"],
            "imbalance_languages": ["es"],
            "imbalance_pcts": [50.0],
        },
    },
}


def preset_dict(name: str) -> dict[str, Any]:
    """The sections and keys preset ``name`` sets (a copy)."""
    if name not in PRESETS:
        raise LingtraceError(f"unknown preset {name!r}", f"choose one of {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def preset(name: str) -> Config:
    return Config.from_dict(preset_dict(name))
