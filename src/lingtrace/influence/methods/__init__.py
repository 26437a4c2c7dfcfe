"""The registry of influence methods: name -> the estimator class that computes it.

Adding a method is one file in this folder (a subclass of ``methods.base.Estimator``) and one entry
here. Entries name the class by module path, so reading the registry (the config validates
``influence.methods`` against it) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingtrace.influence.methods.base import Estimator

#: the method computed when none is asked for (its store is the one ``load_scores(RUN)`` opens)
DEFAULT_METHOD = "tracin"

REGISTRY: dict[str, str] = {
    "tracin": "lingtrace.influence.methods.tracin:TracInEstimator",
    "adam-cosine": "lingtrace.influence.methods.adam_cosine:AdamCosineEstimator",
    "representation": "lingtrace.influence.methods.representation:RepresentationEstimator",
    "trak": "lingtrace.influence.methods.trak:TrakEstimator",
    "ekfac": "lingtrace.influence.methods.ekfac:EkfacEstimator",
}


def method_names() -> list[str]:
    return list(REGISTRY)


def estimator_class(name: str) -> type[Estimator]:
    """The estimator class registered under ``name`` (KeyError for an unknown name)."""
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)
