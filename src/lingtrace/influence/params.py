"""Which parameters the influence is computed over, and the groups its breakdown reports.

By default TracIn uses every parameter that was trained (``requires_grad``): parameters frozen during
fine-tuning did not move, so they carry no influence. A selection narrows this with ``fnmatch``
patterns on parameter names (``*.attention.*``) or on group names:

* ``word_embeddings`` - the input word-embedding matrix (its per-example gradient is sparse and is
  handled without materialising it densely);
* ``embeddings`` - the other embedding parameters (positions, token types, their LayerNorm);
* ``layer.N`` - transformer layer N;
* ``head`` - everything after the encoder (pooler, classifier).

A pattern prefixed with ``!`` excludes what it matches (``["*", "!head"]``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lingtrace.influence.errors import NoParametersSelected, NoTrainableParameters

WORD_EMBEDDINGS = "word_embeddings"
EMBEDDINGS = "embeddings"
HEAD = "head"

_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def param_group(name: str, is_word_embedding: bool = False) -> str:
    """The breakdown group of a parameter name."""
    if is_word_embedding:
        return WORD_EMBEDDINGS
    m = _LAYER_RE.search(name)
    if m:
        return f"layer.{int(m.group(1))}"
    if "embed" in name:
        return EMBEDDINGS
    return HEAD


def _group_key(group: str) -> tuple[int, int]:
    if group == WORD_EMBEDDINGS:
        return (0, 0)
    if group == EMBEDDINGS:
        return (1, 0)
    if group.startswith("layer."):
        return (2, int(group.split(".")[1]))
    return (3, 0)


@dataclass
class TrackedParams:
    """The selected parameters of a model: dense ones by group, and the word embeddings (sparse)."""

    names: list[str]
    groups: dict[str, str]  # parameter name -> group
    word_embedding: str | None  # name of the word-embedding matrix when it is selected
    numel: dict[str, int] = field(default_factory=dict)

    @property
    def dense_names(self) -> list[str]:
        return [n for n in self.names if n != self.word_embedding]

    @property
    def group_names(self) -> list[str]:
        """Groups in model order: word_embeddings, embeddings, layer.0..N, head."""
        return sorted(set(self.groups.values()), key=_group_key)

    def dense_groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g in self.group_names:
            names = [n for n in self.dense_names if self.groups[n] == g]
            if names:
                out[g] = names
        return out

    def num_params(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.names:
            out[self.groups[n]] = out.get(self.groups[n], 0) + self.numel[n]
        return out


def select_params(model: torch.nn.Module, patterns: Sequence[str] | None = None, trainable_only: bool = True) -> TrackedParams:
    """Select parameters by ``patterns`` (see the module docstring); all trainable ones when empty."""
    word = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    named = list(model.named_parameters())
    all_names = []
    groups = {}
    numel = {}
    word_name = None
    for name, p in named:
        is_word = word is not None and p is word
        if is_word:
            word_name = name
        groups[name] = param_group(name, is_word)
        numel[name] = p.numel()
        all_names.append(name)
    candidates = [n for n, p in named if p.requires_grad or not trainable_only]
    pats = [p.strip() for p in (patterns or []) if p and p.strip()]
    if pats:
        include = [p for p in pats if not p.startswith("!")]
        exclude = [p[1:] for p in pats if p.startswith("!")]

        def hit(name: str, ps: list[str]) -> bool:
            return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(groups[name], p) for p in ps)

        chosen = [n for n in candidates if (not include or hit(n, include)) and not hit(n, exclude)]
        if not chosen:
            known = sorted(set(groups.values()), key=_group_key)
            raise NoParametersSelected(f"the parameter selection {pats} selects no trainable parameter (this model's groups: {', '.join(known)})")
    else:
        chosen = candidates
        if not chosen:
            raise NoTrainableParameters("the model has no trainable parameters to compute influence over")
    sel_word = word_name if word_name in chosen else None
    return TrackedParams(
        names=chosen,
        groups={n: groups[n] for n in chosen},
        word_embedding=sel_word,
        numel={n: numel[n] for n in chosen},
    )
