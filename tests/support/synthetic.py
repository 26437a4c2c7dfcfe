"""A realistic synthetic run directory (no model, no training) for tests and for previewing the report.

``make_synthetic_run`` writes everything the ``analyze`` and ``report`` stages read, as the earlier
stages would have: prepared data (a parallel task with translation groups), a checkpoint manifest,
the selected test examples, and an influence store whose per-checkpoint cosine-like scores have a
structure worth looking at (in-language and same-label examples score higher, translations of similar
items score alike, the structure sharpens over the epochs) with a per-parameter-group breakdown that
sums to the scores. The stages before ``analyze`` are marked complete with the returned config.

``methods`` names the influence methods to write a store for (``RUN/influence/METHOD/``): the first
gets the scores above; each further one a noisier mix of the same structure with a random component
of its own (so the methods agree in part), ``representation`` on the final checkpoint only and
without breakdown, as the real method is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lingtrace.config import Config, apply_overrides
from lingtrace.data import schema
from lingtrace.influence.params import WORD_EMBEDDINGS
from lingtrace.influence.store import GROUP_PREFIX, SCORES, StoreMeta, write_axes, write_epoch, write_meta
from lingtrace.io import write_json, write_parquet
from lingtrace.run import RunDir

#: a few words per language, in the language's script (ko mixes in Latin words, as real data does)
WORDS: dict[str, list[str]] = {
    "de": ["Gesicht", "lachen", "Katze", "Apfel", "Zug", "Ball", "Lampe", "Herz", "Flagge", "froh"],
    "es": ["cara", "reír", "gato", "manzana", "tren", "pelota", "lámpara", "corazón", "bandera", "feliz"],
    "fr": ["visage", "rire", "chat", "pomme", "train", "balle", "lampe", "cœur", "drapeau", "joyeux"],
    "ru": ["лицо", "смех", "кошка", "яблоко", "поезд", "мяч", "лампа", "сердце", "флаг", "радость"],
    "zh": ["脸", "笑", "猫", "苹果", "火车", "球", "灯", "心", "旗", "高兴"],
    "ko": ["얼굴", "웃음", "고양이", "사과", "기차", "ball", "램프", "heart", "깃발", "행복"],
    "ja": ["顔", "わらう", "ネコ", "りんご", "電車", "ボール", "ランプ", "ハート", "旗", "うれしい"],
    "en": ["face", "laugh", "cat", "apple", "train", "ball", "lamp", "heart", "flag", "happy"],
}
LABEL_NAMES = ["smileys-emotion", "animals-nature", "food-drink", "travel-places", "objects"]
GROUPS = ("embeddings", "layer.0", "layer.1", "head")


def _text(lang: str, item: int, rng: np.random.Generator) -> str:
    words = WORDS[lang]
    picks = [words[(item + j * 3) % len(words)] for j in range(3)]
    sep = "：" if lang in ("zh", "ja") else ": "
    tail = " 😀" if item % 7 == 0 else ""
    return f"{picks[0]}{sep}{picks[1]}, {picks[2]} {int(rng.integers(10))}{tail}"


def make_synthetic_run(
    root: str | Path,
    languages: Sequence[str] = ("de", "es", "fr", "ru", "zh"),
    n_items: int = 40,
    test_per_lang: int = 4,
    epochs: int = 3,
    k: int = 10,
    parallel: bool = True,
    breakdown: bool = True,
    seed: int = 0,
    methods: Sequence[str] = ("tracin",),
) -> tuple[RunDir, Config]:
    """Write a synthetic run into ``root`` (prepare, train, select, influence complete); return it and its config."""
    rng = np.random.default_rng(seed)
    run = RunDir(root)
    langs = list(languages)
    n_labels = len(LABEL_NAMES)
    dim = 12
    item_vec = rng.normal(size=(n_items + 10_000, dim))
    label_vec = rng.normal(size=(n_labels, dim)) * 1.2
    lang_vec = {lang: rng.normal(size=dim) * 0.8 for lang in langs}

    def rows(split: str, items: Sequence[int], per_lang_items: dict[str, Sequence[int]] | None = None):
        out, vecs = [], []
        for lang in langs:
            for i in per_lang_items[lang] if per_lang_items else items:
                label = int(i % n_labels)
                tid = f"{split}{i}" if parallel else f"{split}{lang}{i}"
                out.append(
                    {
                        schema.UID: f"{split}-{lang}-{i}",
                        schema.LANG: lang,
                        schema.TRANSLATION_ID: tid,
                        schema.TEXT_A: _text(lang, i, rng),
                        schema.TEXT_B: "",
                        schema.LABEL: label,
                    }
                )
                item = i if parallel else i + 1000 * (langs.index(lang) + 1)
                vecs.append(item_vec[item % len(item_vec)] + label_vec[label] + lang_vec[lang] + rng.normal(size=dim) * 0.3)
        return pd.DataFrame(out, columns=schema.EXAMPLE_COLUMNS), np.array(vecs)

    train, train_x = rows("train", range(n_items))
    dev, _ = rows("dev", range(n_items, n_items + 5))
    test_items = {lang: range(n_items + 5 + 2 * j, n_items + 5 + 2 * j + test_per_lang) for j, lang in enumerate(langs)}
    test, test_x = rows("test", [], test_items)

    cfg = apply_overrides(
        Config(),
        [
            "data.task=emoji",
            f"data.languages=[{','.join(langs)}]",
            f"data.train_per_lang={n_items}",
            "data.dev_per_lang=5",
            f"data.test_per_lang={test_per_lang}",
            f"train.epochs={epochs}",
            f"select.per_lang={test_per_lang}",
            f"analysis.k={k}",
            f"influence.breakdown={str(breakdown).lower()}",
            f"influence.methods=[{','.join(methods)}]",
        ],
    )
    run.root.mkdir(parents=True, exist_ok=True)
    run.save_config(cfg)
    for split, frame in (("train", train), ("dev", dev), ("test", test)):
        write_parquet(run.split_path(split), frame)
    write_json(run.task_path, {"task": "emoji", "label_names": LABEL_NAMES, "parallel": parallel, "pair": False})
    run.mark_complete(cfg, "prepare", {})

    manifest_epochs = []
    for e in range(1, epochs + 1):
        acc = {lang: round(float(0.5 + 0.4 * e / epochs - 0.03 * j), 4) for j, lang in enumerate(langs)}
        manifest_epochs.append(
            {
                "epoch": e,
                "path": f"epoch-{e}",
                "lr_start": 1e-4 * (1 - (e - 1) / epochs),
                "lr_end": 1e-4 * (1 - e / epochs),
                "lr_mean": 1e-4 * (1 - (e - 0.5) / epochs),
                "train_loss": round(2.0 / e, 4),
                "dev_accuracy": round(float(np.mean(list(acc.values()))), 4),
                "dev_accuracy_per_lang": acc,
                "steps": 10 * e,
            }
        )
    write_json(
        run.manifest_path,
        {"fingerprint": "synthetic", "epochs": manifest_epochs, "best_epoch": epochs, "final_epoch": epochs, "stopped_early": False, "complete": True},
    )
    run.mark_complete(cfg, "train", {})

    selected = test.copy()
    selected[schema.PRED] = selected[schema.LABEL]
    selected[schema.CONFIDENCE] = rng.uniform(0.5, 1.0, size=len(selected)).astype(np.float32)
    write_parquet(run.selection_path, selected)
    write_parquet(run.selection_path.parent / "predictions.parquet", selected)
    run.mark_complete(cfg, "select", {})

    tn = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    rn = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    base = tn @ rn.T
    for i, method in enumerate(methods):
        own = rng.normal(size=base.shape) * 0.25
        mix = 0.25 * i
        store_epochs = [epochs] if method == "representation" else list(range(1, epochs + 1))
        with_groups = breakdown and method != "representation"
        directory = run.influence_store(method)
        for e in store_epochs:
            sharp = 0.4 + 0.6 * e / epochs
            scores = np.clip((1 - mix) * sharp * base + mix * own + rng.normal(size=base.shape) * 0.15, -1, 1).astype(np.float32)
            tensors = {SCORES: scores}
            if with_groups:
                parts = {g: (scores * w + rng.normal(size=scores.shape) * 0.02).astype(np.float32) for g, w in zip(GROUPS, (0.1, 0.2, 0.2, 0.2))}
                parts[WORD_EMBEDDINGS] = (scores - sum(p.astype(np.float64) for p in parts.values())).astype(np.float32)
                tensors.update({GROUP_PREFIX + g: p for g, p in parts.items()})
            write_epoch(directory, e, tensors)
        write_axes(directory, train[schema.UID].tolist(), selected[schema.UID].tolist())
        write_meta(
            directory,
            StoreMeta(
                method=method,
                mode="cosine",
                epochs=store_epochs,
                epochs_done=store_epochs,
                complete=True,
                breakdown=with_groups,
                groups=[*GROUPS, WORD_EMBEDDINGS] if with_groups else [],
                n_train=len(train),
                n_test=len(selected),
                fingerprint="synthetic",
                method_info={"synthetic": f"made by make_synthetic_run (method {i + 1} of {len(methods)})"},
            ),
        )
    run.mark_complete(cfg, "influence", {})
    return run, cfg
