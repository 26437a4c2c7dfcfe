"""Configuration: presets carry the paper's settings, YAML + overrides, validation, run-dir stage markers."""

from __future__ import annotations

import json

import pytest

from lingtrace.cli import main
from lingtrace.config import Config, apply_overrides, help_keys, load_config, preset
from lingtrace.errors import LingtraceError
from lingtrace.run import RunDir

#: The paper's setting, Choenni et al. 2023, section 3 ("Experimental setup"): each task is fine-tuned
#: and tested on five languages, with 2,000 training examples and 25 test examples per language,
#: XLM-R base, up to 10 epochs with early stopping (patience 3), lr 2e-5 (XNLI, MARC) and 9e-6 (PAWS-X).
PAPER_SECTION_3 = {
    "xnli": {"languages": {"en", "fr", "de", "ru", "es"}, "lr": 2e-5, "lr_text": "2e-5"},
    "pawsx": {"languages": {"en", "fr", "de", "ko", "es"}, "lr": 9e-6, "lr_text": "9e-6"},
    "marc": {"languages": {"zh", "en", "fr", "de", "es"}, "lr": 2e-5, "lr_text": "2e-5"},
}


@pytest.mark.parametrize("name", sorted(PAPER_SECTION_3))
def test_presets_are_the_paper_setting(name):
    """Choenni et al. 2023, section 3: every paper preset pins the paper's languages and hyper-parameters."""
    paper = PAPER_SECTION_3[name]
    c = preset(name)
    assert c.data.task == name
    assert set(c.data.languages) == paper["languages"] and len(c.data.languages) == 5
    assert c.train.lr == paper["lr"]
    assert c.train.epochs == 10 and c.train.patience == 3
    assert c.data.train_per_lang == 2000
    assert c.select.per_lang == 25
    assert c.model.name == "xlm-roberta-base"
    assert Config.from_dict(c.to_dict()) == c


def test_docs_presets_match_the_code():
    """The docs' configuration example and presets paragraph name the presets' languages."""
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text(encoding="utf-8").split())
    for name, paper in PAPER_SECTION_3.items():
        langs = ", ".join(preset(name).data.languages)
        assert f"`{name}` ({langs}; lr {paper['lr_text']})" in readme, name
    assert "languages: [" + ", ".join(preset("xnli").data.languages) + "]" in readme


def test_yaml_with_preset_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("preset: pawsx\ndata:\n  languages: [en, de]\ntrain:\n  batch_size: 8\n")
    c = load_config(p, ["train.lr=1e-5", "model.num_layers=4", "data.columns={text_a: s1}"])
    assert c.data.task == "pawsx" and c.data.languages == ["en", "de"]
    assert c.train.batch_size == 8 and c.train.lr == 1e-5 and c.model.num_layers == 4
    assert c.data.columns == {"text_a": "s1"}
    assert Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("train.lr=abc", "must be float"),
        ("train.epochs=0", "epochs"),
        ("influence.mode=cos", "influence.mode"),
        ("data.exclude_lang=xx", "exclude_lang"),
        ("data.extra_pct=50", "extra_lang"),
        ("model.freeze_embeddings=maybe", "true or false"),
        ("data.source=official", "task emoji cannot be read from data.source=official"),
        ("data.task=xnli;data.source=official", "data.path"),
        ("data.task=pawsx;data.source=hub;data.languages=[en,xx]", "'xx' in data.languages is not available for task pawsx"),
        ("noequals", "key=value"),
    ],
)
def test_validation_messages(override, message):
    with pytest.raises(LingtraceError, match=message):
        load_config(None, override.split(";"))


@pytest.mark.parametrize("name", ["emoji", "xnli", "pawsx", "marc"])
def test_validation_reports_the_cause_first(name):
    """Data is checked before the sections that refer to its languages: an unknown language is named
    as such (the emoji preset's experiment lists name es, which the override drops)."""
    with pytest.raises(LingtraceError) as e:
        apply = preset(name).to_dict()
        apply["data"]["languages"] = ["en", "xx"]
        from lingtrace.config import validate

        validate(Config.from_dict(apply))
    assert "'xx' in data.languages is not available for task " + name in str(e.value)
    assert "experiment" not in str(e.value)
    # with valid data, an experiment list naming a language outside data.languages is the error
    with pytest.raises(LingtraceError, match="experiment.zero_shot_languages has 'es'") as e:
        load_config(None, ["data.languages=[de,fr]", "experiment.zero_shot_languages=[es]"])
    assert "experiment.zero_shot_languages=[]" in e.value.fix
    # a local source's languages are known only when `prepare` reads it
    assert load_config(None, ["data.task=local", "data.source=local", "data.path=x", "data.languages=[xx]"]).data.languages == ["xx"]


def test_bad_yaml_file(tmp_path):
    with pytest.raises(LingtraceError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(LingtraceError, match="not valid YAML"):
        load_config(p)


def test_help_keys_cover_every_field():
    keys = {k for k, text, _ in help_keys()}
    assert {"data.languages", "train.lr", "influence.mode", "model.num_layers"} <= keys
    assert all(text for _, text, _ in help_keys())


def test_stage_marker_refuses_other_config(tmp_path):
    run = RunDir(tmp_path)
    cfg = Config()
    assert not run.check_stage(cfg, "prepare")
    run.mark_complete(cfg, "prepare")
    assert run.check_stage(cfg, "prepare")
    # a change to a later section does not touch prepare
    assert run.check_stage(apply_overrides(cfg, ["train.lr=1e-3"]), "prepare")
    with pytest.raises(LingtraceError, match="data.seed: 0 -> 1"):
        run.check_stage(apply_overrides(cfg, ["data.seed=1"]), "prepare")
    assert not run.check_stage(apply_overrides(cfg, ["data.seed=1"]), "prepare", overwrite=True)


def test_stage_marker_from_before_a_new_key_is_accepted(tmp_path):
    """A run made before a config key existed (its marker lacks the key) matches the key's default."""
    from lingtrace.io import read_json, write_json

    run = RunDir(tmp_path)
    cfg = Config()
    run.mark_complete(cfg, "prepare")
    old = read_json(run.stage_marker("prepare"))
    assert "drop_invalid" not in old["config"]["data"]  # a new key at its default is left out of the marker
    old["fingerprint"] = "from-an-older-version"
    write_json(run.stage_marker("prepare"), old)
    assert run.check_stage(cfg, "prepare")
    with pytest.raises(LingtraceError, match="drop_invalid"):
        run.check_stage(apply_overrides(cfg, ["data.drop_invalid=true"]), "prepare")


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "r")]) == 2
    assert "no config" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "r"), "--preset", "emoji", "--set", "data.languages=[de,xx]"]) == 2
    err = capsys.readouterr().err
    assert "xx" in err and err.count("\n") == 1
    assert main(["train", str(tmp_path / "r2"), "--preset", "emoji"]) == 2
    assert "prepare" in capsys.readouterr().err


def test_docs_describe_the_emoji_llm_preset():
    """The docs' decoder paragraph states the emoji-llm preset as the code defines it."""
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text(encoding="utf-8").split())
    c = preset("emoji-llm")
    assert c.model.name == "embedded:smollm2-135m-instruct" and c.model.kind == "causal-lm" and c.data.stratify
    layers = sorted(-i for i in c.model.lora_layers)
    assert layers == list(range(1, len(layers) + 1))  # the top layers, stated as "the top N layers"
    text = (
        f"`emoji-llm` ({', '.join(c.data.languages)}; {c.data.train_per_lang} training, {c.data.dev_per_lang} dev and "
        f"{c.data.test_per_lang} test examples per language, label-stratified; LoRA r={c.model.lora_r} on "
        f"{', '.join(c.model.lora_targets)} of the top {len(layers)} layers; lr {c.train.lr:g}, batch {c.train.batch_size}, "
        f"{c.train.epochs} epochs)"
    )
    assert text in readme, text
