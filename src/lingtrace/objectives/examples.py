"""Tokenised examples and their batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lingtrace.objectives.errors import BadExamples


@dataclass
class Examples:
    """Tokenised examples: token ids (with special tokens) per example, integer labels, uids."""

    ids: list[np.ndarray]
    labels: np.ndarray
    uids: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.ids) == len(self.labels) == len(self.uids)):
            raise ValueError("Examples: ids, labels and uids differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    @classmethod
    def from_frame(cls, frame, tokenizer, max_length: int = 128, prefix: str = "") -> Examples:
        """Tokenise a frame with ``text_a``, optional ``text_b``, ``label`` and ``uid`` columns exactly as
        training does (``lingtrace.models.loading.encode``)."""
        from lingtrace.data import schema
        from lingtrace.models.loading import encode

        missing = [c for c in (schema.TEXT_A, schema.LABEL) if c not in frame.columns]
        if missing:
            raise BadExamples(f"examples lack column {missing[0]!r}")
        uids = frame[schema.UID].astype(str).tolist() if schema.UID in frame.columns else [str(i) for i in range(len(frame))]
        text_b = frame[schema.TEXT_B].tolist() if schema.TEXT_B in frame.columns else None
        ids: list[np.ndarray] = []
        step = 512
        for start in range(0, len(frame), step):
            part_b = None if text_b is None else text_b[start : start + step]
            if part_b is not None and not any(part_b):
                part_b = None
            enc = encode(tokenizer, frame[schema.TEXT_A].iloc[start : start + step].tolist(), part_b, max_length=max_length, prefix=prefix)
            mask = enc["attention_mask"].numpy().astype(bool)
            arr = enc["input_ids"].numpy()
            ids.extend(arr[i][mask[i]] for i in range(arr.shape[0]))
        return cls(ids=ids, labels=frame[schema.LABEL].to_numpy(dtype=np.int64), uids=uids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Examples:
        idx = np.asarray(idx, dtype=np.int64)
        return Examples([self.ids[i] for i in idx], self.labels[idx], [self.uids[i] for i in idx])


def batches(ex: Examples, batch_size: int, collate: Callable, sort: bool = True, pin: bool = False) -> Iterator[tuple[torch.Tensor, object]]:
    """(positions, batch) over ``ex``, shortest examples first when ``sort`` (less padding).

    ``collate(ids, labels, pin=...)`` builds a batch (``Objective.collate`` with the pad id bound); the
    positions are an int64 tensor (pinned with the batch, for asynchronous copies to a GPU).
    """
    order = np.argsort(ex.lengths, kind="stable") if sort else np.arange(len(ex))
    for start in range(0, len(order), batch_size):
        pos = order[start : start + batch_size]
        idx = torch.as_tensor(pos, dtype=torch.long)
        yield (idx.pin_memory() if pin else idx), collate([ex.ids[i] for i in pos], ex.labels[pos], pin=pin)
