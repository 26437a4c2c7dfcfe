"""Loading a config: a YAML/JSON file (with ``preset: NAME`` as its base), then ``section.key=value``
overrides, then validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lingtrace.config.presets import preset_dict
from lingtrace.config.sections import Config
from lingtrace.config.validate import validate
from lingtrace.errors import LingtraceError


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars or lists)."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise LingtraceError(f"override {item!r} is not key=value", "write e.g. --set train.lr=1e-5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise LingtraceError(f"unknown config key {key!r}", "see `lingtrace config --help-keys`")
            node = node[p]
        if parts[-1] not in node:
            raise LingtraceError(f"unknown config key {key!r}", "see `lingtrace config --help-keys`")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node[parts[-1]] = value
    return Config.from_dict(d)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML/JSON config (optionally with ``preset: NAME`` as its base) and apply overrides."""
    cfg = Config.from_dict(config_file_dict(path) if path is not None else {})
    cfg = apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def config_file_dict(path: str | Path) -> dict[str, Any]:
    """The sections and keys a YAML/JSON config file sets (its ``preset: NAME`` merged in), as a dict."""
    p = Path(path)
    if not p.is_file():
        raise LingtraceError(f"config file {p} not found", "give the path of a YAML config")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise LingtraceError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise LingtraceError(f"config file {p} must hold a mapping at the top level")
    name = raw.pop("preset", None)
    base = preset_dict(name) if name is not None else {}
    return _merge(base, raw)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "columns" else v
    return out
