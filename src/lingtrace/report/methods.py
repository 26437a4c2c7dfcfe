"""What the report says about each influence method: how its scores were made and what it leaves out.

The words come from the store's ``meta.json``: ``mode``, ``epochs``, ``params``, ``projection`` and the
method's own ``method_info``. What a method leaves out is ``method_info["leaves_out"]`` when the method
records it (a text or a list of texts); for the methods lingtrace ships without that key the README's
"leaves out" column is used (``KNOWN_LEAVES_OUT``); any other method is said not to record it.
"""

from __future__ import annotations

from typing import Any

#: what each shipped method leaves out (the README's methods table, shortened)
KNOWN_LEAVES_OUT: dict[str, str] = {
    "tracin": "curvature (no Hessian); the optimiser's scaling of the gradients",
    "adam-cosine": "TrackStar's random projection and its task-specific Hessian term",
    "trak": "TRAK's output function (the loss gradient is used), its Gaussian projection and the ensemble of "
    "retrained models (the checkpoints stand in for it); approximate through the CountSketch projection",
    "representation": "everything about training: gradients, the checkpoints before the final one, labels",
}
#: the method_info key a method fills with what it leaves out
LEAVES_OUT_KEY = "leaves_out"


def leaves_out(method: str, meta: dict[str, Any]) -> str:
    """What ``method`` leaves out, from its store's meta.json (see the module docstring)."""
    recorded = (meta.get("method_info") or {}).get(LEAVES_OUT_KEY)
    if isinstance(recorded, list | tuple):
        recorded = "; ".join(map(str, recorded))
    if recorded:
        return str(recorded)
    return KNOWN_LEAVES_OUT.get(method, "not recorded by the method (its meta.json has no method_info.leaves_out)")


def _short(value: Any, limit: int = 160) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k} {_short(v, 40)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(map(str, value))
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scoring(method: str, meta: dict[str, Any], summary: dict[str, Any]) -> str:
    """How the scores of ``method`` were made, in one line."""
    influence = summary.get("influence", {})
    mode = meta.get("mode", influence.get("mode", "cosine"))
    epochs = ", ".join(map(str, summary.get("epochs", meta.get("epochs", []))))
    params = meta.get("params", influence.get("params"))
    text = f"{mode} per checkpoint, summed over checkpoint(s) {epochs}"
    if meta.get("lr_weighted"):
        text += ", weighted by each checkpoint's learning rate"
    if params:
        text += f"; parameters: {_short(params)}"
    projection = meta.get("projection")
    if projection:
        text += f"; projection: {_short(projection)}"
    return text


def method_info(meta: dict[str, Any]) -> str:
    """The method's own facts (``method_info`` but ``leaves_out``), compactly."""
    info = {k: v for k, v in (meta.get("method_info") or {}).items() if k != LEAVES_OUT_KEY}
    return "; ".join(f"{k}: {_short(v)}" for k, v in info.items())
