"""The registry of influence methods: name -> the estimator class that computes it.

Adding a method is one file in this folder (a subclass of ``methods.base.Estimator``), its name in
``lingtrace.config.influence.METHODS`` (what the config validates ``influence.methods`` against) and
one entry here. Entries name the class by module path, so reading the registry does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingtrace.influence.methods.base import Estimator

REGISTRY: dict[str, str] = {
    "tracin": "lingtrace.influence.methods.tracin:TracInEstimator",
    "adam-cosine": "lingtrace.influence.methods.adam_cosine:AdamCosineEstimator",
    "representation": "lingtrace.influence.methods.representation:RepresentationEstimator",
    "trak": "lingtrace.influence.methods.trak:TrakEstimator",
    "ekfac": "lingtrace.influence.methods.ekfac:EkfacEstimator",
}


def estimator_class(name: str) -> type[Estimator]:
    """The estimator class registered under ``name`` (KeyError for an unknown name)."""
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)
