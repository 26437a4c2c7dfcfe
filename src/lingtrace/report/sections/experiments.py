"""The sections the retraining experiments wrote for the report (``RUN/experiments/NAME/section.html``,
present only once an experiment is complete; read by ``inputs.load_inputs``), included as they are."""

from __future__ import annotations

from lingtrace.report.inputs import ReportInputs


def experiment_sections(inp: ReportInputs) -> list[tuple[str, str, str]]:
    """(section id, navigation label, HTML) of each experiment's section, in the order of
    ``lingtrace.config.EXPERIMENTS``."""
    return [(f"experiment-{name}", f"Experiment: {name}", html) for name, html in inp.experiments]
