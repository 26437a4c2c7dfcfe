"""The example browser's data: every selected test example with, per influence method, its top
``analysis.browser_k`` positive and negative training examples and the in-language share of its top-k
(the training examples' language, text and label once, in ``train``). ``html.browser`` renders it as the
JSON the page's script reads; ``sections.examples`` makes it a section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import NEGATIVE, POSITIVE, SUMMED, example_text
from lingtrace.analysis.examples import label_name
from lingtrace.data import schema
from lingtrace.report.inputs import ReportInputs


def browser_data(inp: ReportInputs, languages: Sequence[str]) -> dict[str, Any]:
    """Every selected test example with, per method, its top ``analysis.browser_k`` positive and
    negative training examples (``[uid, score]``; the training examples' language, text and label once
    in ``train``)."""
    label_names = list(inp.task.get("label_names", []))
    n = inp.cfg.analysis.browser_k
    train = inp.train.set_index(inp.train[schema.UID].astype(str))
    lists: dict[tuple[str, str, str], list] = {}
    own_share: dict[str, pd.Series] = {}
    used: set[str] = set()
    for method in inp.method_names:
        topk = inp.for_method(method).tables[table_specs.TOPK.name]
        summed = topk[topk["epoch"] == SUMMED]
        own = (summed["train_lang"] == summed["test_lang"]).astype(float) * 100.0
        own_share[method] = own.groupby([summed["direction"], summed["test_uid"]]).mean()
        shown = summed[summed["rank"] <= n]
        for row in shown.itertuples(index=False):
            u = str(row.train_uid)
            used.add(u)
            lists.setdefault((method, row.direction, str(row.test_uid)), []).append([u, float(row.score)])
    known = [u for u in train.index if u in used]
    sub = train.loc[known]
    train_info = {
        u: [str(lang), example_text(a, b), label_name(label_names, y)]
        for u, lang, a, b, y in zip(sub.index, sub[schema.LANG], sub[schema.TEXT_A], sub[schema.TEXT_B], sub[schema.LABEL])
    }
    tests = []
    for r in inp.test.itertuples(index=False):
        uid = str(getattr(r, schema.UID))
        pred = getattr(r, schema.PRED, None)
        tests.append(
            {
                "uid": uid,
                "lang": str(getattr(r, schema.LANG)),
                "text": example_text(getattr(r, schema.TEXT_A), getattr(r, schema.TEXT_B)),
                "label": label_name(label_names, getattr(r, schema.LABEL)),
                "pred": label_name(label_names, pred) if pred is not None else "",
                "by_method": {
                    m: {
                        "own_pos": _finite(own_share[m].get((POSITIVE, uid))),
                        "own_neg": _finite(own_share[m].get((NEGATIVE, uid))),
                        "pos": lists.get((m, POSITIVE, uid), []),
                        "neg": lists.get((m, NEGATIVE, uid), []),
                    }
                    for m in inp.method_names
                },
            }
        )
    return {
        "k": int(inp.summary.get("k_effective", inp.cfg.analysis.k)),
        "languages": list(languages),
        "methods": inp.method_names,
        "method": inp.method,
        "train": train_info,
        "tests": tests,
    }


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None
