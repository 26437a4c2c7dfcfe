"""``meta.json`` of a score store: its one typed definition, read and written only here.

Keys (in file order): ``method``, ``mode``, ``lr_weighted``, ``lr`` (epoch -> learning rate when
lr-weighted), ``epochs`` (the checkpoints summed), ``checkpoints`` (their paths in the run),
``params``, ``dtype``, ``breakdown``, ``projection``, ``fingerprint``, ``complete``, ``epochs_done``,
``n_train``, ``n_test``, ``plan``, ``groups``, ``n_params``, ``stats``, ``method_info`` (what a
method records about itself, e.g. adam-cosine's optimizer steps). Stores written before ``method``
existed are tracin stores; keys this version does not know are kept as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lingtrace.config import DEFAULT_METHOD
from lingtrace.errors import LingtraceError
from lingtrace.io import read_json, write_json
from lingtrace.run import STORE_META_FILE as META


@dataclass
class StoreMeta:
    method: str = DEFAULT_METHOD
    mode: str = "cosine"
    lr_weighted: bool = False
    lr: dict[str, float] | None = None
    epochs: list[int] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    dtype: str = "float32"
    breakdown: bool = False
    projection: dict[str, Any] | None = None
    fingerprint: str | None = None
    complete: bool = False
    epochs_done: list[int] | None = None  # None: a hand-made store without the key (every epoch counts)
    n_train: int | None = None
    n_test: int | None = None
    plan: dict[str, Any] | None = None
    groups: list[str] = field(default_factory=list)
    n_params: dict[str, int] | None = None
    stats: dict[str, Any] | None = None
    method_info: dict[str, Any] = field(default_factory=dict)
    #: keys of the file this version does not define (written back unchanged)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done_epochs(self) -> list[int]:
        """The epochs a reader may trust (``epochs_done``; a store without it lists ``epochs``)."""
        return [int(e) for e in (self.epochs if self.epochs_done is None else self.epochs_done)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreMeta:
        known = _keys(cls)
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("params"), str):  # an early hand-written store held a description
            values["params"] = [values["params"]]
        for key in ("epochs", "epochs_done"):
            if values.get(key) is not None:
                values[key] = [int(e) for e in values[key]]
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _keys(type(self))}, **self.extra}


def _keys(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]


def read_meta(directory: str | Path) -> StoreMeta:
    path = Path(directory) / META
    data = read_json(path)
    if not isinstance(data, dict):
        raise LingtraceError(f"{path} is not a score store's meta.json", "delete the store and rerun `lingtrace influence RUN`")
    return StoreMeta.from_dict(data)


def write_meta(directory: str | Path, meta: StoreMeta) -> None:
    write_json(Path(directory) / META, meta.to_dict())
