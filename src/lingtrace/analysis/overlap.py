"""Reinforcing vs complementary cross-lingual influence (paper Table 4), for parallel tasks.

For one test example in language T with top-k set K (one direction): let ``K_T`` be the entries of K in
T and ``ids`` their translation ids. Every entry of K in another language L is a *translation* when its
translation id is in ``ids``: it carries the same content as in-language evidence the model already
used (reinforcing); the others bring content the in-language top-k does not have (complementary).

Sums over the test examples of a language give ``n_cross`` and ``n_translations``; the percentage is
their ratio (pooled, so test examples with more cross-lingual entries weigh more). A test example with no
in-language entry contributes its cross-lingual entries with 0 translations (they cannot reinforce
anything) and is counted in ``n_test_without_in_language``. ``pct_by_chance`` is the percentage
expected if the cross-lingual entries from L were drawn uniformly from L's training examples: for one
test example, (number of L examples whose translation id is in ``ids``) / (number of L examples).

Non-parallel tasks raise ``NotApplicable``: their examples in different languages are unrelated, so a
percentage would be a meaningless 0. Columns: ``lingtrace.analysis.tables.TRANSLATION_OVERLAP``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, SUMMED, NotApplicable, language_order, sort_table
from lingtrace.data import schema

COLUMNS = [
    "direction",
    "test_lang",
    "train_lang",
    "n_test",
    "n_cross",
    "n_translations",
    "pct_translations",
    "pct_by_chance",
    "n_test_without_in_language",
]


def check_parallel(train: pd.DataFrame, parallel: bool, task: str = "this task") -> None:
    """Raise ``NotApplicable`` unless translations link training examples across languages."""
    if not parallel:
        raise NotApplicable(
            f"{task} is not a parallel task: its training examples in different languages are not translations "
            "of each other, so reinforcing vs complementary influence (translation overlap) does not apply"
        )
    langs = train[schema.LANG].astype(str)
    if langs.nunique() < 2:
        raise NotApplicable("there is only one training language, so there is no cross-lingual influence to compare")
    per_tid = train.assign(_l=langs).groupby(train[schema.TRANSLATION_ID].astype(str))["_l"].nunique()
    if not (per_tid > 1).any():
        raise NotApplicable(
            "no training example has a translation in another training language (no translation_id is shared), "
            "so translation overlap cannot be measured"
        )


def translation_overlap(
    topk: pd.DataFrame,
    train: pd.DataFrame,
    parallel: bool,
    languages: Sequence[str] | None = None,
    epoch: int = SUMMED,
    task: str = "this task",
) -> pd.DataFrame:
    """The ``translation_overlap`` table (see the module docstring).

    Test languages without any training data are left out (``.attrs["notes"]`` says so).
    """
    check_parallel(train, parallel, task)
    rows_k = topk[topk["epoch"] == epoch]
    train_langs = train[schema.LANG].astype(str).to_numpy()
    train_tids = train[schema.TRANSLATION_ID].astype(str).to_numpy()
    size = Counter(train_langs)
    per_lang_tid: dict[str, Counter] = defaultdict(Counter)
    for lang, tid in zip(train_langs, train_tids):
        per_lang_tid[lang][tid] += 1
    train_order = language_order(languages, train_langs)
    test_order = language_order(languages, rows_k["test_lang"])
    notes = []
    skipped = [t for t in test_order if t not in size]
    if skipped:
        notes.append(
            f"left out test language(s) {', '.join(skipped)}: no training data in that language, so there is no "
            "in-language evidence to reinforce (zero-shot)"
        )
    # acc[(direction, test_lang, train_lang)] = [n_cross, n_translations, expected]
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    n_test: Counter = Counter()
    without: Counter = Counter()
    for (direction, _uid, test_lang), grp in rows_k.groupby(["direction", "test_uid", "test_lang"], sort=False):
        if test_lang not in size:
            continue
        n_test[(direction, test_lang)] += 1
        g_lang = grp["train_lang"].astype(str).to_numpy()
        g_tid = grp["train_translation_id"].astype(str).to_numpy()
        ids = set(g_tid[g_lang == test_lang])
        if not ids:
            without[(direction, test_lang)] += 1
        for lang in np.unique(g_lang):
            if lang == test_lang:
                continue
            sel = g_lang == lang
            n_cross = int(sel.sum())
            n_tr = int(sum(t in ids for t in g_tid[sel]))
            chance = sum(per_lang_tid[lang][t] for t in ids) / size[lang]
            a = acc[(direction, test_lang, lang)]
            a[0] += n_cross
            a[1] += n_tr
            a[2] += n_cross * chance
    rows = []
    for direction in sorted({d for d, _ in n_test}):
        totals = [0, 0, 0.0]
        for test_lang in test_order:
            if (direction, test_lang) not in n_test:
                continue
            nt, wo = n_test[(direction, test_lang)], without[(direction, test_lang)]
            lang_tot = [0, 0, 0.0]
            for lang in train_order:
                if lang == test_lang:
                    continue
                a = acc.get((direction, test_lang, lang), [0, 0, 0.0])
                rows.append(_row(direction, test_lang, lang, nt, a, wo))
                lang_tot = [x + y for x, y in zip(lang_tot, a)]
            rows.append(_row(direction, test_lang, ALL, nt, lang_tot, wo))
            totals = [x + y for x, y in zip(totals, lang_tot)]
        nt_all = sum(v for (d, _), v in n_test.items() if d == direction)
        wo_all = sum(v for (d, _), v in without.items() if d == direction)
        rows.append(_row(direction, ALL, ALL, nt_all, totals, wo_all))
    out = sort_table(pd.DataFrame(rows, columns=COLUMNS), [*test_order, ALL], [*train_order, ALL])
    out.attrs["notes"] = notes
    return out


def _row(direction: str, test_lang: str, train_lang: str, n_test: int, a: Sequence[float], without: int) -> dict:
    n_cross, n_tr, expected = a
    return {
        "direction": direction,
        "test_lang": test_lang,
        "train_lang": train_lang,
        "n_test": int(n_test),
        "n_cross": int(n_cross),
        "n_translations": int(n_tr),
        "pct_translations": 100.0 * n_tr / n_cross if n_cross else float("nan"),
        "pct_by_chance": 100.0 * expected / n_cross if n_cross else float("nan"),
        "n_test_without_in_language": int(without),
    }
