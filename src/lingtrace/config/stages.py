"""The stages of a run in pipeline order, with the config sections each stage's outputs depend on
(cumulative: a stage depends on its inputs' sections). A stage's completion marker fingerprints these
sections (``RunDir.check_stage``), so a rerun with other values in them is refused unless ``overwrite``.

The stages themselves (``lingtrace.stages``) take their sections from here; this table sits in the
config layer because the run directory, training and influence fingerprint them too.
"""

from __future__ import annotations

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "train": ("data", "model", "train"),
    "select": ("data", "model", "train", "select"),
    "influence": ("data", "model", "train", "select", "influence"),
    "analyze": ("data", "model", "train", "select", "influence", "analysis"),
    "report": ("data", "model", "train", "select", "influence", "analysis"),
}
