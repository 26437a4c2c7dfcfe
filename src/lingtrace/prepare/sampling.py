"""Per-language sampling of the train/dev/test tables.

Invariants (tested in tests/test_data.py):

- ``train_per_lang``/``dev_per_lang``/``test_per_lang`` examples per language, chosen with ``data.seed``;
- parallel tasks keep translation groups aligned: every language gets the same translation ids,
  drawn from the ids present in all of ``data.languages``;
- a source with no dev/test split (the embedded emoji data: one pool) is split by translation id
  into disjoint test/dev/train pools, so no translation leaks across splits;
- ``exclude_lang`` is dropped from train and dev only; the other languages' samples do not change;
- ``extra_lang``/``extra_pct`` add ``round(extra_pct / 100 * train_per_lang)`` examples of that language
  from its unused pool on top of the unchanged base sample;
- ``stratify``: the test, dev and train samples hold every label in the proportion of the pool they
  are drawn from, to within one example (a dev pool carved after the test pool: within two), so a
  small dev sample's majority-class share is the data's, not a chance excess.

Each random draw has its own generator seeded from ``(seed, purpose, language)``, and ids are sorted
before they are permuted, so a draw does not depend on row order or on the other options.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from lingtrace.config import DataConfig
from lingtrace.data.schema import (
    EXAMPLE_COLUMNS,
    LABEL,
    LANG,
    SPLIT,
    TEXT_A,
    TEXT_B,
    TRANSLATION_ID,
    UID,
)
from lingtrace.data.tasks import TaskSpec
from lingtrace.errors import LingtraceError

SPLITS = ("train", "dev", "test")
_SIZE_KEY = {"train": "train_per_lang", "dev": "dev_per_lang", "test": "test_per_lang"}


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**32, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def _permuted(ids, rng: np.random.Generator) -> list[str]:
    ids = sorted(ids)
    return [ids[i] for i in rng.permutation(len(ids))]


def _stratified(ids, labels: dict[str, int], rng: np.random.Generator) -> list[str]:
    """The ids in a random order of which every prefix holds each label in proportion to its share
    of ``ids`` to within one: the ids of each label are permuted, and position m takes the next id of
    the label furthest below its share of the first m positions (ties broken at random)."""
    by_label: dict[int, list[str]] = {}
    for i in sorted(ids):
        by_label.setdefault(int(labels[i]), []).append(i)
    names = sorted(by_label)
    groups = [[by_label[label][j] for j in rng.permutation(len(by_label[label]))] for label in names]
    share = np.array([len(g) for g in groups], dtype=np.float64) / max(1, len(ids))
    taken = np.zeros(len(groups), dtype=np.int64)
    tiebreak = rng.permutation(len(groups))
    out = []
    for m in range(1, len(ids) + 1):
        deficit = m * share - taken
        deficit[taken == [len(g) for g in groups]] = -np.inf
        best = np.flatnonzero(deficit >= deficit.max() - 1e-12)
        pick = best[np.argmin(tiebreak[best])]
        out.append(groups[pick][taken[pick]])
        taken[pick] += 1
    return out


def make_uid(split: str, lang: str, translation_id: str) -> str:
    return f"{split}-{lang}-{translation_id}"


def extra_count(cfg: DataConfig) -> int:
    """Number of extra training examples of ``cfg.extra_lang``."""
    if not cfg.extra_lang or cfg.extra_pct <= 0:
        return 0
    return int(round(cfg.extra_pct / 100 * cfg.train_per_lang))


class _Data:
    """Rows of one (split, language), indexed by translation id (first row of a duplicated id kept)."""

    def __init__(self, frames: pd.DataFrame):
        self.tables: dict[tuple[str, str], pd.DataFrame] = {}
        for (split, lang), sub in frames.groupby([SPLIT, LANG], sort=False):
            sub = sub.drop_duplicates(TRANSLATION_ID, keep="first").set_index(TRANSLATION_ID, drop=False)
            self.tables[(str(split), str(lang))] = sub

    def labels(self, split: str, lang: str) -> dict[str, int]:
        t = self.tables.get((split, lang))
        return {} if t is None else dict(zip(t.index, t[LABEL].astype("int64")))

    def ids(self, split: str, lang: str) -> set[str]:
        t = self.tables.get((split, lang))
        return set() if t is None else set(t.index)

    def rows(self, split: str, lang: str, ids: list[str], out_split: str) -> pd.DataFrame:
        t = self.tables[(split, lang)].loc[ids]
        out = pd.DataFrame(
            {
                UID: [make_uid(out_split, lang, i) for i in ids],
                LANG: lang,
                TRANSLATION_ID: list(ids),
                TEXT_A: t[TEXT_A].to_numpy(),
                TEXT_B: t[TEXT_B].to_numpy(),
                LABEL: t[LABEL].to_numpy().astype("int64"),
            }
        )
        return out[EXAMPLE_COLUMNS]


def _too_few(task: str, what: str, have: int, need: int, key: str, detail: str = "") -> LingtraceError:
    return LingtraceError(
        f"task {task}: {what} has {have} examples{detail}, but {need} are needed",
        f"lower data.{key} to at most {max(have, 0)}" if key else "use a larger data set",
    )


def _carve(
    pool: list[str], cfg: DataConfig, carve: list[str], task: str, what: str
) -> tuple[dict[str, list[str]], list[str]]:
    """Split a permuted id pool into test/dev pools of the configured sizes and the remaining train ids."""
    pools: dict[str, list[str]] = {}
    pos = 0
    for split in ("test", "dev"):
        if split not in carve:
            continue
        n = getattr(cfg, _SIZE_KEY[split])
        if len(pool) - pos < n:
            raise _too_few(
                task,
                what,
                len(pool) - pos,
                n,
                _SIZE_KEY[split],
                f" left for the {split} pool (the data has no separate {split} split)",
            )
        pools[split] = pool[pos : pos + n]
        pos += n
    return pools, sorted(pool[pos:])


def prepare_splits(frames: pd.DataFrame, cfg: DataConfig, task: TaskSpec) -> dict[str, pd.DataFrame]:
    """Sample the train/dev/test tables (columns exactly ``EXAMPLE_COLUMNS``) from ``frames``.

    ``frames`` is what :func:`lingtrace.prepare.readers.load_task` returns. Splits missing from it are
    carved out of the training split (test first, then dev) by translation id.
    """
    missing = [c for c in (LANG, TRANSLATION_ID, TEXT_A, TEXT_B, LABEL, SPLIT) if c not in frames.columns]
    if missing:
        raise LingtraceError(
            f"the task data lacks column {missing[0]!r}; columns found: {', '.join(map(str, frames.columns))}",
            "build it with lingtrace.prepare.readers.load_task",
        )
    frames = frames.copy()
    frames[TRANSLATION_ID] = frames[TRANSLATION_ID].astype(str)
    frames[LANG] = frames[LANG].astype(str)
    langs = list(cfg.languages)
    available = sorted(frames[LANG].unique())
    for lang in langs:
        if lang not in available:
            raise LingtraceError(
                f"language {lang!r} is not in the data of task {task.name}",
                f"choose data.languages from {', '.join(available)}",
            )
    present = set(frames[SPLIT].unique())
    if "train" not in present:
        raise LingtraceError(f"the data of task {task.name} has no training split", "provide training data")
    carve = [s for s in ("test", "dev") if s not in present]
    data = _Data(frames)
    k_extra = extra_count(cfg)
    if k_extra and cfg.extra_lang not in langs:
        raise LingtraceError(f"data.extra_lang={cfg.extra_lang!r} is not one of data.languages {langs}")

    # ids per split and language: the chosen translation ids (and the split whose rows hold them)
    chosen: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    source_split = {
        "train": "train",
        "dev": "dev" if "dev" in present else "train",
        "test": "test" if "test" in present else "train",
    }
    reserved: dict[str, set[str]] = {}  # per language: train-split ids not available for extra examples

    def order(ids, rng: np.random.Generator, split: str, lang: str) -> list[str]:
        """``ids`` permuted, label-stratified when ``data.stratify`` (labels of ``lang``'s rows in ``split``)."""
        return _stratified(ids, data.labels(split, lang), rng) if cfg.stratify else _permuted(ids, rng)

    if task.parallel:
        common = {s: set.intersection(*(data.ids(s, lang) for lang in langs)) for s in present}
        what = f"the ids present in all of {', '.join(langs)}"
        first = langs[0]  # a translation group's label: that of its first language
        if carve:
            pools, train_ids = _carve(
                order(common["train"], _rng(cfg.seed, "carve"), "train", first), cfg, carve, task.name, what
            )
        else:
            pools, train_ids = {}, sorted(common["train"])
        for split in ("dev", "test"):
            if split in pools:
                ids = pools[split]
            else:
                n = getattr(cfg, _SIZE_KEY[split])
                if len(common[split]) < n:
                    raise _too_few(
                        task.name, f"the {split} split ({what})", len(common[split]), n, _SIZE_KEY[split]
                    )
                ids = order(common[split], _rng(cfg.seed, split), split, first)[:n]
            for lang in langs:
                chosen[split][lang] = ids
        n = cfg.train_per_lang
        if len(train_ids) < n:
            raise _too_few(task.name, f"the train split ({what})", len(train_ids), n, "train_per_lang")
        base = order(train_ids, _rng(cfg.seed, "train"), "train", first)[:n]
        carved = {i for ids in pools.values() for i in ids}
        for lang in langs:
            chosen["train"][lang] = base
            reserved[lang] = set(base) | carved
    else:
        for lang in langs:
            what = f"language {lang}"
            if carve:
                pools, train_ids = _carve(
                    order(data.ids("train", lang), _rng(cfg.seed, "carve", lang), "train", lang),
                    cfg,
                    carve,
                    task.name,
                    what,
                )
            else:
                pools, train_ids = {}, sorted(data.ids("train", lang))
            for split in ("dev", "test"):
                if split in pools:
                    chosen[split][lang] = pools[split]
                    continue
                ids = data.ids(split, lang)
                n = getattr(cfg, _SIZE_KEY[split])
                if len(ids) < n:
                    raise _too_few(task.name, f"the {split} split of {what}", len(ids), n, _SIZE_KEY[split])
                chosen[split][lang] = order(ids, _rng(cfg.seed, split, lang), split, lang)[:n]
            n = cfg.train_per_lang
            if len(train_ids) < n:
                raise _too_few(task.name, f"the train split of {what}", len(train_ids), n, "train_per_lang")
            chosen["train"][lang] = order(train_ids, _rng(cfg.seed, "train", lang), "train", lang)[:n]
            reserved[lang] = set(chosen["train"][lang]) | {i for ids in pools.values() for i in ids}

    extra: list[str] = []
    if k_extra:
        lang = cfg.extra_lang
        unused = data.ids("train", lang) - reserved[lang]
        if len(unused) < k_extra:
            max_pct = math.floor(len(unused) / cfg.train_per_lang * 100)
            raise LingtraceError(
                f"task {task.name}: extra_pct={cfg.extra_pct:g} asks for {k_extra} extra training examples of "
                f"{lang}, but only {len(unused)} unused ones are available",
                f"lower data.extra_pct to at most {max_pct} (or lower data.train_per_lang)",
            )
        extra = _permuted(unused, _rng(cfg.seed, "extra", lang))[:k_extra]

    out: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        parts = []
        for lang in langs:
            keep = split == "test" or lang != cfg.exclude_lang
            if keep:
                parts.append(data.rows(source_split[split], lang, chosen[split][lang], split))
            if split == "train" and lang == cfg.extra_lang and extra:
                parts.append(data.rows("train", lang, extra, split))
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EXAMPLE_COLUMNS)
        df[LABEL] = df[LABEL].astype("int64")
        out[split] = df[EXAMPLE_COLUMNS]
    return out
