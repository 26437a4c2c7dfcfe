"""The command line end to end on a tiny model and local data: outputs, skipping, refusal, Ctrl-C."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from conftest import toy_examples
from lingtrace.cli import main
from lingtrace.io import read_json
from lingtrace.run import RunDir

BASE_STAGES = "prepare,train,select"


def toy_table() -> pd.DataFrame:
    """The toy task as one local table with a split column and string labels."""
    parts = []
    for split, n, seed in [("train", 12, 0), ("validation", 6, 1), ("test", 8, 2)]:
        frame = toy_examples(n_per_lang=n, split=split, seed=seed).drop(columns=["uid"])
        frame["split"] = split
        frame["label"] = frame["label"].map({0: "neg", 1: "pos"})
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below ``root``: (mode, mtime_ns, sha256), to check that a refused command changed nothing."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def cli_config(tmp_path, tiny_model_dir):
    data = tmp_path / "toy.csv"
    toy_table().to_csv(data, index=False)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(
        f"""
data:
  task: local
  source: local
  path: {data}
  languages: [de, fr, ru]
  train_per_lang: 10
  dev_per_lang: 6
  test_per_lang: 8
  columns: {{text_a: text_a, label: label, lang: lang, translation_id: translation_id, split: split}}
model:
  name: {tiny_model_dir}
  max_length: 16
train:
  lr: 0.003
  epochs: 2
  batch_size: 8
select:
  per_lang: 2
""",
        encoding="utf-8",
    )
    return cfg


def test_run_writes_every_output_and_skips_when_complete(cli_config, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES, "-q"]) == 0
    run = RunDir(out)
    for split in ("train", "dev", "test"):
        frame = pd.read_parquet(run.split_path(split))
        assert list(frame.columns) == ["uid", "lang", "translation_id", "text_a", "text_b", "label"]
        assert frame["uid"].is_unique
    assert len(pd.read_parquet(run.split_path("train"))) == 30
    manifest = read_json(run.manifest_path)
    assert [e["epoch"] for e in manifest["epochs"]] == [1, 2] and manifest["complete"]
    for e in manifest["epochs"]:
        model = AutoModelForSequenceClassification.from_pretrained(run.checkpoints_dir / e["path"])
        assert model.config.num_labels == 2
    chosen = pd.read_parquet(run.selection_path)
    assert (chosen["pred"] == chosen["label"]).all() and {"confidence", "pred"} <= set(chosen.columns)
    assert read_json(run.config_path)["data"]["task"] == "local"

    stamps = {p: p.stat().st_mtime_ns for p in (run.root / "checkpoints").rglob("*.safetensors")}
    capsys.readouterr()
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recomputed

    # a different training config is refused with one line, and nothing is touched
    assert main(["train", str(out), "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "--overwrite" in err and err.count("\n") == 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert read_json(run.config_path)["train"]["lr"] == 0.003


def test_ctrl_c_exits_130_and_rerun_resumes(cli_config, tmp_path, monkeypatch, capsys):
    from lingtrace import pipeline

    out = tmp_path / "run"
    real_select = pipeline.STAGE_FUNCS["select"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "select", interrupted)
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES, "-q"]) == 130
    assert "rerun" in capsys.readouterr().err
    run = RunDir(out)
    assert run.is_complete("train") and not run.is_complete("select")
    stamps = {p: p.stat().st_mtime_ns for p in (run.root / "checkpoints").rglob("*.safetensors")}

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "select", real_select)
    assert main(["run", str(cli_config), "--out", str(out), "--stages", BASE_STAGES, "-q"]) == 0
    assert run.is_complete("select")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # training was not redone


def test_bad_inputs_are_one_line_errors(cli_config, tmp_path, capsys):
    text = cli_config.read_text(encoding="utf-8")
    cases = {
        "missing data file": (text.replace("toy.csv", "nope.csv"), "nope.csv"),
        "unknown language": (text.replace("[de, fr, ru]", "[de, fr, xx]"), "xx"),
        "missing column": (text.replace("lang: lang", "lang: language"), "language"),
        "unreadable model": (text.replace("name: ", "name: /nonexistent/"), "nonexistent"),
    }
    for i, (name, (body, needle)) in enumerate(cases.items()):
        cfg = tmp_path / f"bad{i}.yaml"
        cfg.write_text(body, encoding="utf-8")
        out = tmp_path / f"bad{i}"
        code = main(["run", str(cfg), "--out", str(out), "--stages", "prepare,train", "-q"])
        err = capsys.readouterr().err
        assert code == 2, name
        assert needle in err and err.startswith("lingtrace: error:") and err.count("\n") == 1, (name, err)
        assert not RunDir(out).is_complete("train"), name


def test_bad_input_on_an_existing_run_changes_nothing(cli_config, tmp_path, capsys):
    """Each bad input exits 2 with one line naming its cause, and the run directory is left as it was."""
    out = tmp_path / "run"
    assert main(["run", str(cli_config), "--out", str(out), "--stages", "prepare,train", "-q"]) == 0
    table = toy_table()
    empty_label = table.copy()
    empty_label.loc[3, "label"] = ""  # a German training row
    empty_label.to_csv(tmp_path / "empty_label.csv", index=False)
    empty_text = table.copy()
    empty_text.loc[40, "text_a"] = ""
    empty_text.to_csv(tmp_path / "empty_text.csv", index=False)
    run = str(out)
    cases = {
        "empty label": (
            ["prepare", run, "--overwrite", "--set", f"data.path={tmp_path / 'empty_label.csv'}"],
            [str(tmp_path / "empty_label.csv"), "1 row(s) with an empty or missing label in column 'label'", "data.drop_invalid"],
        ),
        "empty text": (
            ["prepare", run, "--overwrite", "--set", f"data.path={tmp_path / 'empty_text.csv'}"],
            [str(tmp_path / "empty_text.csv"), "1 row(s) with no text in column 'text_a'"],
        ),
        "language not in the local data": (
            ["prepare", run, "--overwrite", "--set", "data.languages=[de,fr,xx]"],
            ["language 'xx' is not available for task local"],
        ),
        "language not of a preset's task": (
            ["prepare", run, "--preset", "emoji", "--set", "data.languages=[en,xx]"],
            ["'xx' in data.languages is not available for task emoji"],
        ),
        "demo into a run of another config": (
            ["demo", "--out", run],
            [f"{out} holds a run of another config (task local, model ", "languages de, fr, ru", "--overwrite"],
        ),
        "run with two configs": (["run", str(cli_config), "--config", str(cli_config), "--out", run], ["both CONFIG and --config"]),
        "unknown stage": (["run", "--out", run, "--stages", "prepare,tain"], ["unknown stage 'tain'"]),
        "changed training config": (["train", run, "--set", "train.lr=0.01"], ["train.lr", "--overwrite"]),
    }
    before = snapshot(out)
    for name, (argv, needles) in cases.items():
        capsys.readouterr()
        assert main([*argv, "-q"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("lingtrace: error:") and err.count("\n") == 1, (name, err)
        for needle in needles:
            assert needle in err, (name, needle, err)
        assert "experiment" not in err, (name, err)  # the cause, not a list that refers to it
        assert snapshot(out) == before, name
    # the same bad label with data.drop_invalid drops the row and goes on
    capsys.readouterr()
    argv = ["prepare", run, "--overwrite", "--set", f"data.path={tmp_path / 'empty_label.csv'}", "--set", "data.drop_invalid=true"]
    assert main([*argv, "-q"]) == 0
    assert read_json(RunDir(out).task_path)["label_names"] == ["neg", "pos"]
    assert not RunDir(out).is_complete("train")  # the data changed: training must be redone


def test_bad_input_in_a_fresh_directory_leaves_nothing(cli_config, tmp_path, capsys):
    table = toy_table()
    table.loc[0, "label"] = None
    table.to_csv(tmp_path / "toy.csv", index=False)
    out = tmp_path / "fresh"
    assert main(["run", str(cli_config), "--out", str(out), "-q"]) == 2
    assert "empty or missing label" in capsys.readouterr().err
    assert not out.exists()


def test_run_takes_a_preset_and_the_common_options(tmp_path, capsys):
    out = tmp_path / "emoji"
    argv = ["run", "--preset", "emoji", "--out", str(out), "--stages", "prepare", "--set", "data.train_per_lang=20", "--mode", "dot", "-q"]
    assert main(argv) == 0
    saved = read_json(RunDir(out).config_path)
    assert saved["data"]["task"] == "emoji" and saved["data"]["train_per_lang"] == 20 and saved["influence"]["mode"] == "dot"
    assert len(pd.read_parquet(RunDir(out).split_path("train"))) == 20 * 5
    # an existing run resumes with its own config.json
    before = snapshot(out)
    assert main(["run", "--out", str(out), "--stages", "prepare", "-q"]) == 0
    assert snapshot(out) == before
    assert main(["run", "--stages", "prepare", "-q"]) == 2
    assert "needs a config" in capsys.readouterr().err


def test_constant_model_is_flagged_and_every_file_has_one_mode(tmp_path, tiny_model_dir, capsys, caplog):
    """Training labels nearly all one class (a training sample of one class is refused by `prepare`): the final
    model predicts a constant, which the CLI summary, `select` and the report say plainly. The whole run
    (influence included) has one file mode."""
    from lingtrace.io import FILE_MODE

    table = toy_table()
    train = table["split"] == "train"
    table.loc[train, "label"] = "pos"
    table.loc[train & table["translation_id"].astype(int).isin([0, 1, 2]), "label"] = "neg"  # 1 in 4 of the pool
    data = tmp_path / "constant.csv"
    table.to_csv(data, index=False)
    out = tmp_path / "run"
    argv = [
        "run", "--config", str(write_toy_config(tmp_path, data, tiny_model_dir)), "--out", str(out), "-q",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "WARNING: the final model (epoch" in printed and "majority-class baseline 0.500" in printed
    assert "did not learn" in caplog.text  # logged by select
    run = RunDir(out)
    info = read_json(run.stage_marker("select"))["info"]
    assert info["model_warning"] and "did not learn" in info["model_warning"]
    assert info["test_accuracy"] == pytest.approx(0.5)
    html = (run.report_dir / "index.html").read_text(encoding="utf-8")
    summary = html[html.index('<section id="summary"'):]
    assert summary.index('class="warning"') < summary.index("</section>") and "did not learn the task" in summary

    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert any("parts" in p.parts or p.suffix == ".safetensors" for p in modes)
    assert set(modes.values()) == {FILE_MODE}, {str(p): oct(m) for p, m in modes.items() if m != FILE_MODE}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o777 & ~_umask() for p in out.rglob("*") if p.is_dir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_toy_config(directory: Path, data: Path, model_dir) -> Path:
    """A small config of the toy task on local ``data`` with the tiny model (``directory/toy-run.yaml``)."""
    cfg = directory / "toy-run.yaml"
    cfg.write_text(
        f"""
data: {{task: local, source: local, path: {data}, languages: [de, fr, ru], train_per_lang: 10, dev_per_lang: 6, test_per_lang: 8}}
model: {{name: {model_dir}, max_length: 16}}
train: {{lr: 0.003, epochs: 2, batch_size: 8}}
select: {{per_lang: 2}}
analysis: {{k: 5}}
""",
        encoding="utf-8",
    )
    return cfg


def test_influence_flags_are_generated_from_the_options_dataclass():
    """Every InfluenceOptions field has a flag with its help text; repeated and comma-separated list flags join."""
    import dataclasses

    from lingtrace.cli import _flag_overrides, build_parser
    from lingtrace.config import Config, apply_overrides
    from lingtrace.config.influence import InfluenceOptions

    parser = build_parser()
    text = parser._subparsers._group_actions[0].choices["influence"].format_help()
    for f in dataclasses.fields(InfluenceOptions):
        assert "--" + f.name.replace("_", "-") in text
    args = parser.parse_args(["influence", "r", "--method", "tracin,trak", "--method", "representation", "--no-breakdown", "--batch-size", "8", "--mode", "dot"])
    cfg = apply_overrides(Config(), _flag_overrides(args))
    assert cfg.influence.methods == ["tracin", "trak", "representation"]
    assert cfg.influence.breakdown is False and cfg.influence.batch_size == 8 and cfg.influence.mode == "dot"
    with pytest.raises(SystemExit):
        parser.parse_args(["influence", "r", "--mode", "nonsense"])


def test_allocator_tuning_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    """The CLI's allocator settings (utils.tune_allocator): refused on request, applied on glibc Linux,
    and large buffers still allocate, fill and free afterwards."""
    import platform
    import sys

    import torch

    from lingtrace.utils import tune_allocator

    monkeypatch.setenv("LINGTRACE_MALLOC", "system")
    assert tune_allocator() is False
    monkeypatch.delenv("LINGTRACE_MALLOC")
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is glibc
    for _ in range(3):  # above glibc's 32 MiB mmap ceiling: now served by the heap
        x = torch.ones(24 << 20)
        assert float(x.sum()) == float(24 << 20)
        del x


def test_prepare_names_a_label_typo_and_refuses_a_training_sample_without_a_class(tmp_path, tiny_model_dir, caplog, capsys):
    """A row whose label says 'langauge' instead of 'language' would become a class of its own: prepare names it
    in a warning; a training sample of one class, or without a class the dev/test data have, is refused."""
    table = toy_table()
    table["label"] = table["label"].map({"neg": "name", "pos": "language"})
    typo = table.index[(table["split"] == "train") & (table["label"] == "language")][0]
    table.loc[typo, "label"] = "langauge"
    data = tmp_path / "typo.csv"
    table.to_csv(data, index=False)
    cfg = write_toy_config(tmp_path, data, tiny_model_dir)
    with caplog.at_level("WARNING"):
        assert main(["prepare", str(tmp_path / "typo"), "--config", str(cfg), "-q"]) == 0
    warned = [r.getMessage() for r in caplog.records if "typo" in r.getMessage()]
    assert len(warned) == 1 and "'langauge' (1 example)" in warned[0]
    assert "'name'" not in warned[0] and "'language'" not in warned[0]
    assert read_json(tmp_path / "typo" / "stages" / "prepare.json")["info"]["rare_labels"] == {"langauge": 1}

    # one class in the training split: refused in one line, nothing written
    single = toy_table()
    single.loc[single["split"] == "train", "label"] = "pos"
    single.to_csv(data, index=False)
    capsys.readouterr()
    assert main(["prepare", str(tmp_path / "single"), "--config", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingtrace: error: the training sample holds a single class ('pos')") and err.count("\n") == 1
    assert not (tmp_path / "single" / "data").exists()

    # a class only the test split has
    only_test = toy_table()
    only_test.loc[only_test.index[only_test["split"] == "test"][0], "label"] = "maybe"
    only_test.to_csv(data, index=False)
    assert main(["prepare", str(tmp_path / "only-test"), "--config", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "the test sample has class 'maybe' that the training data lacks" in err and err.count("\n") == 1
