"""The workflow layer: one stage protocol the pipeline and the CLI iterate over, one run-directory module
that spells every file name, markers written only by the pipeline, and the shared helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from lingtrace.distributed import SINGLE, decide_on_main
from lingtrace.errors import LingtraceError
from lingtrace.run import STAGES, RunDir, align_uids, read_table

SRC = Path(__file__).resolve().parents[1] / "src" / "lingtrace"

#: run-directory file and folder names that only lingtrace/run.py may spell
RUN_NAMES = (
    "predictions.parquet",
    "test.parquet",
    "task.json",
    "manifest.json",
    "section.html",
    "experiment.json",
    "changed.parquet",
    "index.html",
    "test_examples.parquet",
    "evaluate.parquet",
)


def _sources():
    return [p for p in SRC.rglob("*.py") if p.name != "run.py" or p.parent != SRC]


def test_only_the_run_module_spells_run_directory_file_names():
    found = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for name in RUN_NAMES:
            for m in re.finditer(rf"[\"'/]{re.escape(name)}[\"']", text):
                found.append(f"{path.relative_to(SRC)}: {name} (offset {m.start()})")
    assert found == []


def test_only_the_pipeline_and_import_write_stage_markers():
    writers = sorted(str(p.relative_to(SRC)) for p in _sources() if ".mark_complete(" in p.read_text(encoding="utf-8"))
    # `lingtrace import` is the producer of an imported run's prepare/train outputs; everything else is the pipeline
    assert writers == ["importing/__init__.py", "pipeline.py"]


def test_the_pipeline_and_the_cli_iterate_over_the_stage_protocol():
    from lingtrace import pipeline
    from lingtrace.cli import DEMO_STAGES, build_parser
    from lingtrace.stages import BY_NAME, PIPELINE

    assert [s.name for s in PIPELINE] == list(STAGES) == list(pipeline.STAGE_FUNCS) == DEMO_STAGES
    assert {s.name: s.sections for s in PIPELINE} == STAGES
    # every stage's sections include those of the stages before it (a marker records what its inputs depend on)
    for before, after in zip(PIPELINE, PIPELINE[1:]):
        assert set(before.sections) <= set(after.sections)
    assert pipeline.DISTRIBUTED_STAGES == ("train", "influence") and pipeline.SELF_INVALIDATING == ("prepare",)
    commands = build_parser()._subparsers._group_actions[0].choices
    for stage in PIPELINE:
        assert stage.name in commands
    run = RunDir("/nowhere")
    for stage in BY_NAME.values():
        for path in [*stage.inputs(run), *stage.outputs(run)]:
            assert Path(path).is_relative_to(run.root), (stage.name, path)


def test_a_stage_records_what_it_returns_and_the_pipeline_writes_its_marker(tiny_run, monkeypatch):
    from lingtrace import pipeline
    from lingtrace.io import read_json

    run, cfg = tiny_run
    seen = []

    def fake_prepare(run_, cfg_, overwrite, dist=SINGLE):
        seen.append(run_.stage_marker("prepare").exists())
        return {"made": "here"}

    run.stage_marker("prepare").unlink()
    monkeypatch.setitem(pipeline.STAGE_FUNCS, "prepare", fake_prepare)
    pipeline.run_stages(run, cfg, ["prepare"])
    assert seen == [False] and read_json(run.stage_marker("prepare"))["info"] == {"made": "here"}


def test_decide_on_main_returns_the_value_and_turns_errors_into_lingtrace_errors():
    assert decide_on_main(SINGLE, lambda: {"skip": True}) == {"skip": True}

    def bad():
        raise KeyError("x")

    with pytest.raises(LingtraceError, match="made for the user"):
        decide_on_main(SINGLE, bad, lambda e: LingtraceError("made for the user", "fix") if isinstance(e, KeyError) else None)
    with pytest.raises(KeyError):
        decide_on_main(SINGLE, bad)


def test_read_table_and_align_uids_errors_are_one_line(tmp_path):
    with pytest.raises(LingtraceError, match=r"missing training data \(") as err:
        read_table(tmp_path / "nope.parquet", "run prepare", what="training data")
    assert err.value.fix == "run prepare"
    damaged = tmp_path / "bad.parquet"
    damaged.write_bytes(b"not parquet")
    with pytest.raises(LingtraceError, match="cannot read") as err:
        read_table(damaged, "run prepare", "rerun prepare --overwrite")
    assert err.value.fix == "rerun prepare --overwrite"

    frame = pd.DataFrame({"uid": ["a", "b", "c"], "x": [1, 2, 3]})
    assert align_uids(frame, ["c", "a"], "examples")["x"].tolist() == [3, 1]
    with pytest.raises(LingtraceError, match="1 uids of the influence scores are not in the examples"):
        align_uids(frame, ["a", "z"], "examples")
    with pytest.raises(LingtraceError, match="duplicate uid 'a'"):
        align_uids(pd.concat([frame, frame.iloc[:1]]), ["a"], "examples")


def test_cli_flags_of_every_config_section_come_from_the_field_metadata():
    from lingtrace.cli import SECTION_FLAGS, _flag_overrides, _section_fields, build_parser
    from lingtrace.config import Config, apply_overrides, help_keys

    parser = build_parser()
    args = parser.parse_args(["train", "RUN", "--train-lr", "1e-5", "--no-model-freeze-embeddings", "--set", "train.epochs=2"])
    assert _flag_overrides(args) == ["model.freeze_embeddings=false", "train.lr=1e-5"]
    args = parser.parse_args(["run", "--data-languages", "de,fr", "--data-languages", "ru", "--select-per-lang", "7", "--method", "trak"])
    cfg = apply_overrides(Config(), _flag_overrides(args))
    assert cfg.data.languages == ["de", "fr", "ru"] and cfg.select.per_lang == 7 and cfg.influence.methods == ["trak"]
    # every settable key of those sections has its flag, with the key's help text
    helps = {key: text for key, text, _ in help_keys()}
    for command, sections in SECTION_FLAGS.items():
        sub = parser._subparsers._group_actions[0].choices[command]
        flags = {a.option_strings[0]: a.help for a in sub._actions if a.option_strings}
        for section in sections:
            for name, _, _ in _section_fields(section):
                assert helps[f"{section}.{name}"] in flags[f"--{section}-{name.replace('_', '-')}"]
