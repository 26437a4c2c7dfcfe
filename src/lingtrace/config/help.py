"""``lingtrace config --help-keys``: every leaf key with its help text and default."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lingtrace.config.sections import Config


def help_keys(cls=Config, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(key, help, default) for every leaf key, for `lingtrace config --help-keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(help_keys(tp, f"{prefix}{f.name}."))
        else:
            rows.append((prefix + f.name, f.metadata.get("help", ""), getattr(inst, f.name)))
    return rows
