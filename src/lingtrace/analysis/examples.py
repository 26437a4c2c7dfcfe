"""Example tables (paper Tables 1, 2 and 5): a test example with its most influential training examples.

``example_table`` gives, for any test example(s), the top-n positive and negative training examples
(summed score by default) with text, language, label and score. Columns:
``lingtrace.analysis.tables.EXAMPLES``. The report's browser shows the same for every test example.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lingtrace.analysis.common import SUMMED, example_text
from lingtrace.data import schema

COLUMNS = [
    "test_uid",
    "test_lang",
    "test_text",
    "test_label",
    "test_label_name",
    "direction",
    "rank",
    "train_uid",
    "train_lang",
    "train_text",
    "train_label",
    "train_label_name",
    "score",
]


def label_name(label_names: Sequence[str], label) -> str:
    try:
        return str(label_names[int(label)])
    except (IndexError, TypeError, ValueError):
        return str(label)


def example_table(
    topk: pd.DataFrame,
    test: pd.DataFrame,
    train: pd.DataFrame,
    label_names: Sequence[str],
    n: int = 3,
    test_uids: Sequence[str] | None = None,
    epoch: int = SUMMED,
) -> pd.DataFrame:
    """Top-``n`` positive and negative training examples of each test example (all, or ``test_uids``)."""
    sel = topk[(topk["epoch"] == epoch) & (topk["rank"] <= n)]
    if test_uids is not None:
        wanted = {str(u) for u in test_uids}
        unknown = wanted - set(sel["test_uid"].astype(str))
        if unknown:
            raise KeyError(f"no top-k for test example(s) {sorted(unknown)[:3]}")
        sel = sel[sel["test_uid"].astype(str).isin(wanted)]
    te = test.set_index(test[schema.UID].astype(str))
    tr = train.set_index(train[schema.UID].astype(str))
    t_rows = te.loc[sel["test_uid"].astype(str)]
    r_rows = tr.loc[sel["train_uid"].astype(str)]
    out = pd.DataFrame(
        {
            "test_uid": sel["test_uid"].to_numpy(),
            "test_lang": sel["test_lang"].to_numpy(),
            "test_text": [example_text(a, b) for a, b in zip(t_rows[schema.TEXT_A], t_rows[schema.TEXT_B])],
            "test_label": t_rows[schema.LABEL].to_numpy(),
            "test_label_name": [label_name(label_names, x) for x in t_rows[schema.LABEL]],
            "direction": sel["direction"].to_numpy(),
            "rank": sel["rank"].to_numpy(),
            "train_uid": sel["train_uid"].to_numpy(),
            "train_lang": sel["train_lang"].to_numpy(),
            "train_text": [example_text(a, b) for a, b in zip(r_rows[schema.TEXT_A], r_rows[schema.TEXT_B])],
            "train_label": r_rows[schema.LABEL].to_numpy(),
            "train_label_name": [label_name(label_names, x) for x in r_rows[schema.LABEL]],
            "score": sel["score"].to_numpy(),
        },
        columns=COLUMNS,
    )
    order = {u: i for i, u in enumerate(test[schema.UID].astype(str))}
    out = out.assign(_o=out["test_uid"].astype(str).map(order))
    out = out.sort_values(["_o", "direction", "rank"], key=lambda s: s.map({"positive": 0, "negative": 1}) if s.name == "direction" else s, kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)
