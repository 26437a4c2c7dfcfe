"""k-selection's removal plan (pure functions): the chosen test examples, their groups, and per method,
group, k and direction the training examples removed; identical removals share one retraining."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE
from lingtrace.analysis.topk import top_k
from lingtrace.config.influence import DEFAULT_METHOD
from lingtrace.errors import LingtraceError
from lingtrace.experiments.kselect.settings import RANDOM


@dataclass(frozen=True)
class Group:
    name: str
    rows: tuple[int, ...]  # rows of the score matrix (selected test examples)


@dataclass
class Removal:
    group: Group
    direction: str
    k: int
    columns: np.ndarray  # sorted training-example columns removed
    best_rank: np.ndarray | None = None  # per removed column: its best rank among the group's top-k
    n_tests: np.ndarray | None = None  # per removed column: how many of the group's test examples have it in their top-k
    draw_position: np.ndarray | None = None  # random: position in the seeded permutation
    method: str = DEFAULT_METHOD
    shared_with: str | None = None  # the sub-run of an identical removal planned before, which this one reuses

    @property
    def name(self) -> str:
        """This removal's own sub-run name."""
        prefix = "" if self.method == DEFAULT_METHOD else f"{_safe(self.method)}-"
        return f"{self.group.name}-{prefix}{self.direction}-k{self.k}"

    @property
    def sub_run(self) -> str:
        """The sub-run that holds its retraining (its own, or the identical one it reuses)."""
        return self.shared_with or self.name


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def choose_tests(test_langs: Sequence[str], languages: Sequence[str], per_lang: int | None, seed: int) -> np.ndarray:
    """Rows of the chosen test examples: per language of ``languages``, all of them or ``per_lang`` drawn with ``seed``."""
    langs = np.asarray([str(x) for x in test_langs], dtype=object)
    out = []
    for lang in languages:
        idx = np.flatnonzero(langs == lang)
        if per_lang is not None and len(idx) > per_lang:
            rng = np.random.default_rng([int(seed) % 2**32, _crc("k-selection-tests"), _crc(lang)])
            idx = np.sort(rng.choice(idx, size=per_lang, replace=False))
        out.append(idx)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def _safe(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return clean if clean == name else f"{clean}_{_crc(name):08x}"


def make_groups(test_uids: Sequence[str], test_langs: Sequence[str], rows: np.ndarray, grouping: str, languages: Sequence[str]) -> list[Group]:
    if grouping == "all":
        return [Group(ALL, tuple(int(r) for r in rows))]
    if grouping == "language":
        return [
            Group(f"lang-{_safe(lang)}", tuple(int(r) for r in rows if test_langs[r] == lang))
            for lang in languages
            if any(test_langs[r] == lang for r in rows)
        ]
    return [Group(f"ex-{_safe(str(test_uids[r]))}", (int(r),)) for r in rows]


def topk_union(matrix_rows: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted columns in the union of the rows' top-k, best rank of each (1 = most extreme), number of rows having it)."""
    res = top_k(np.asarray(matrix_rows, dtype=np.float64), k, largest=largest)
    cols = res.indices.ravel()
    ranks = np.tile(np.arange(1, res.indices.shape[1] + 1), res.indices.shape[0])
    uniq, inv, counts = np.unique(cols, return_inverse=True, return_counts=True)
    best = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, inv, ranks)
    return uniq, best, counts


def random_removal(n_train: int, n: int, seed: int, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The random control: (sorted columns, their draw positions) of the first ``n`` entries of a permutation
    of ``range(n_train)`` seeded by ``(seed, group)``. It takes no scores, so it cannot depend on them."""
    rng = np.random.default_rng([int(seed) % 2**32, _crc("random-removal"), _crc(group)])
    perm = rng.permutation(n_train)[:n]
    order = np.argsort(perm)
    return perm[order], order.astype(np.int64)


def plan_removals(
    matrix: np.ndarray, groups: Sequence[Group], ks: Sequence[int], directions: Sequence[str], seed: int, method: str = DEFAULT_METHOD
) -> list[Removal]:
    """Every removal of the sweep for one method, from its summed score matrix [selected test x train]."""
    n_train = matrix.shape[1]
    if max(ks) >= n_train:
        raise LingtraceError(
            f"experiment.ks has k={max(ks)}, but the base run has only {n_train} training examples",
            f"choose every k below {n_train}",
        )
    out = []
    for g in groups:
        rows = np.asarray(matrix[list(g.rows)], dtype=np.float64)
        for k in sorted(set(ks)):
            pos = topk_union(rows, k, largest=True)
            found = {POSITIVE: pos}
            if NEGATIVE in directions:
                found[NEGATIVE] = topk_union(rows, k, largest=False)
            for d in (POSITIVE, NEGATIVE, RANDOM):
                if d not in directions:
                    continue
                if d == RANDOM:
                    cols, draw = random_removal(n_train, len(pos[0]), seed, g.name)
                    r = Removal(g, d, k, cols, draw_position=draw, method=method)
                else:
                    cols, best, counts = found[d]
                    r = Removal(g, d, k, cols, best_rank=best, n_tests=counts, method=method)
                if len(r.columns) >= n_train:
                    raise LingtraceError(
                        f"k={k} removes all {n_train} training examples for group {g.name} ({d})",
                        "choose smaller experiment.ks, experiment.k_grouping=example or fewer test examples (experiment.k_test_per_lang)",
                    )
                out.append(r)
    return out


def share_identical(removals: Sequence[Removal]) -> list[Removal]:
    """Point every removal whose (group, removed columns) equals an earlier one at that one's sub-run
    (``shared_with``); returns the removals that need a retraining of their own, in order."""
    first: dict[tuple[str, bytes], str] = {}
    own = []
    for r in removals:
        key = (r.group.name, np.asarray(r.columns, dtype=np.int64).tobytes())
        if key in first:
            r.shared_with = first[key]
        else:
            first[key] = r.name
            own.append(r)
    return own
