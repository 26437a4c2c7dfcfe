"""Which objective each ``model.kind`` uses."""

from __future__ import annotations

from lingtrace.data.tasks import TASKS
from lingtrace.models.prompts import PromptFormat, resolve_verbalisations
from lingtrace.objectives.base import ClassificationObjective, Objective
from lingtrace.objectives.decoder import CausalLMObjective, DecoderClassificationObjective

#: the objectives, one per ``model.kind``
OBJECTIVES: tuple[type[Objective], ...] = (ClassificationObjective, DecoderClassificationObjective, CausalLMObjective)


def objective_for(cfg, label_names) -> Objective:
    """The objective of ``cfg.model.kind`` (``cfg``: a ``Config``) for a task with these label names."""
    kind = cfg.model.kind
    if kind == "decoder-classifier":
        return DecoderClassificationObjective()
    if kind != "causal-lm":
        return ClassificationObjective()
    spec = TASKS.get(cfg.data.task)
    defaults = dict(spec.verbalisations) if spec is not None else {}
    instruction = cfg.model.instruction if cfg.model.instruction is not None else (spec.instruction if spec is not None else TASKS["local"].instruction)
    verbalisations = resolve_verbalisations(label_names, defaults, cfg.model.verbalisations, cfg.data.languages)
    return CausalLMObjective(PromptFormat(instruction, system=cfg.model.system_prompt), verbalisations)


def attributed_loss(kind: str) -> str:
    """The per-example loss that influence differentiates for ``model.kind``, in words."""
    kinds = {o.kind: o for o in OBJECTIVES}
    return kinds[kind].loss_name if kind in kinds else "unknown"
