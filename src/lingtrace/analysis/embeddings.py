"""How much of the influence flows through the word embeddings (shared subwords), per language pair.

The influence stage can store, next to each checkpoint's scores, the same matrix restricted to each
parameter group ("group.<name>"); the groups sum to the scores. The word-embedding group
(``WORD_EMBEDDINGS``) is the part of a score explained by the two examples' gradients on the same
token embeddings, i.e. by shared (sub)words. Summed over checkpoints, per test language and training
language:

* ``share`` = word-embedding part / score, both summed over the pairs (signed);
* ``abs_share`` = sum of |word-embedding part| / sum over all groups of |group part|: a share in
  [0, 100] that does not blow up when positive and negative parts cancel.

For ``positive`` / ``negative`` the pairs are the top-k entries (summed score); for ``all``, every
(test, training) pair. Read block by block. Columns: ``lingtrace.analysis.tables.WORD_EMBEDDING_SHARE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lingtrace.analysis.common import (
    SUMMED,
    MatrixLike,
    NotApplicable,
    as_lang_array,
    block_rows_for,
    language_order,
    one_hot,
    sort_table,
)

COLUMNS = ["direction", "test_lang", "train_lang", "n_pairs", "score_sum", "word_embeddings_sum", "share", "abs_share"]
ALL_PAIRS = "all"


def word_embedding_share(
    score: MatrixLike,
    groups: Mapping[str, MatrixLike],
    topk: pd.DataFrame,
    test_uids: Sequence[str],
    train_uids: Sequence[str],
    test_langs: Sequence[str],
    train_langs: Sequence[str],
    word_group: str,
    languages: Sequence[str] | None = None,
    epoch: int = SUMMED,
    block_rows: int | None = None,
) -> pd.DataFrame:
    """The ``word_embedding_share`` table. ``groups``: every parameter group's (summed) matrix."""
    if not groups:
        raise NotApplicable(
            "the influence scores have no per-parameter-group breakdown (rerun `lingtrace influence` with "
            "influence.breakdown=true to get the word-embedding share)"
        )
    if word_group not in groups:
        raise NotApplicable(
            f"the influence breakdown has no {word_group!r} group (groups: {', '.join(sorted(groups))}): the "
            "word embeddings were not among the scored parameters"
        )
    test_langs = as_lang_array(test_langs)
    train_langs = as_lang_array(train_langs)
    test_order = language_order(languages, test_langs)
    train_order = language_order(languages, train_langs)
    test_pos = {v: i for i, v in enumerate(test_order)}
    train_pos = {v: i for i, v in enumerate(train_order)}
    train_hot = one_hot(train_langs, train_order)
    test_hot = one_hot(test_langs, test_order)
    col = {str(u): i for i, u in enumerate(train_uids)}
    row = {str(u): i for i, u in enumerate(test_uids)}
    shape = (len(test_order), len(train_order))
    # direction -> [n, score_sum, we_sum, abs_we, abs_groups] matrices over (test_lang, train_lang)
    acc = {}
    sel = topk[topk["epoch"] == epoch]
    entries = {}
    for direction, g in sel.groupby("direction", sort=False):
        r = g["test_uid"].astype(str).map(row).to_numpy(dtype=np.int64)
        c = g["train_uid"].astype(str).map(col).to_numpy(dtype=np.int64)
        entries[direction] = (r, c)
        acc[direction] = [np.zeros(shape) for _ in range(5)]
    acc[ALL_PAIRS] = [np.zeros(shape) for _ in range(5)]
    names = list(groups)
    block_rows = block_rows or block_rows_for(score.shape[1] * 4)  # a few blocks are held at once
    for start in range(0, score.shape[0], block_rows):
        stop = min(start + block_rows, score.shape[0])
        s = np.asarray(score[start:stop], dtype=np.float64)
        we = np.asarray(groups[word_group][start:stop], dtype=np.float64)
        abs_all = np.zeros_like(s)
        for name in names:
            abs_all += np.abs(np.asarray(groups[name][start:stop], dtype=np.float64))
        hot = test_hot[start:stop]
        a = acc[ALL_PAIRS]
        for i, m in enumerate((np.ones_like(s), s, we, np.abs(we), abs_all)):
            a[i] += hot.T @ (m @ train_hot)
        for direction, (r, c) in entries.items():
            inside = (r >= start) & (r < stop)
            rr, cc = r[inside], c[inside]
            ti = np.array([test_pos[x] for x in test_langs[rr]], dtype=np.int64)
            tj = np.array([train_pos[x] for x in train_langs[cc]], dtype=np.int64)
            b = rr - start
            for i, vals in enumerate((np.ones(len(rr)), s[b, cc], we[b, cc], np.abs(we[b, cc]), abs_all[b, cc])):
                np.add.at(acc[direction][i], (ti, tj), vals)
    rows = []
    for direction, (n, ssum, wsum, wabs, gabs) in acc.items():
        for i, te in enumerate(test_order):
            for j, tr in enumerate(train_order):
                if n[i, j] == 0:
                    continue
                rows.append(
                    {
                        "direction": direction,
                        "test_lang": te,
                        "train_lang": tr,
                        "n_pairs": int(n[i, j]),
                        "score_sum": float(ssum[i, j]),
                        "word_embeddings_sum": float(wsum[i, j]),
                        "share": 100.0 * wsum[i, j] / ssum[i, j] if ssum[i, j] != 0 else float("nan"),
                        "abs_share": 100.0 * wabs[i, j] / gabs[i, j] if gabs[i, j] != 0 else float("nan"),
                    }
                )
    out = sort_table(pd.DataFrame(rows, columns=COLUMNS), test_order, train_order)  # "all" sorts after the directions
    notes = []
    if len(out) and np.all(out["word_embeddings_sum"].to_numpy() == 0) and np.all(out["abs_share"].fillna(0).to_numpy() == 0):
        notes.append("the word embeddings contribute nothing to the scores (they were frozen during fine-tuning)")
    out.attrs["notes"] = notes
    return out
