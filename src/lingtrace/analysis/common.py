"""Shared pieces of the analyses: direction names, metadata alignment, language order, "not applicable"."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from lingtrace.data import schema as S
from lingtrace.errors import LingtraceError

#: the top-k most positively influential training examples (largest scores): "proponents"
POSITIVE = "positive"
#: the top-k most negatively influential training examples (smallest scores): "opponents"
NEGATIVE = "negative"
DIRECTIONS = (POSITIVE, NEGATIVE)
#: the value of a language column that aggregates over all languages
ALL = "all"


class NotApplicable(Exception):
    """An analysis that does not apply to this run (e.g. translation overlap on a non-parallel task).

    ``str(exc)`` is the plain-language note the stage records and the report shows.
    """


def align_examples(frame: pd.DataFrame, uids: Sequence[str], what: str) -> pd.DataFrame:
    """``frame`` reordered so that row i is the example with uid ``uids[i]`` (index reset)."""
    if frame[S.UID].duplicated().any():
        dup = frame.loc[frame[S.UID].duplicated(), S.UID].iloc[0]
        raise LingtraceError(f"{what} has duplicate uid {dup!r}", "rerun `lingtrace prepare RUN --overwrite`")
    indexed = frame.assign(**{S.UID: frame[S.UID].astype(str)}).set_index(S.UID, drop=False)
    missing = [u for u in uids if u not in indexed.index]
    if missing:
        raise LingtraceError(
            f"{len(missing)} uids of the influence scores are not in the {what} (first: {missing[0]!r})",
            "the scores were made for other data: rerun `lingtrace influence RUN --overwrite`",
        )
    return indexed.loc[list(uids)].reset_index(drop=True)


def language_order(preferred: Iterable[str] | None, *present: Iterable[str]) -> list[str]:
    """Languages in ``preferred`` order (config order) that are present, then the other present ones sorted."""
    seen: set[str] = set()
    for p in present:
        seen.update(str(x) for x in p)
    out = [lang for lang in (preferred or []) if lang in seen]
    return out + sorted(seen - set(out))


def as_lang_array(langs) -> np.ndarray:
    return np.asarray([str(x) for x in langs], dtype=object)
