"""Task registry: what each task's labels mean, whether its languages are parallel, where it comes from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lingtrace.errors import LingtraceError

XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX_LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")
MARC_LANGUAGES = ("de", "en", "es", "fr", "ja", "zh")
EMOJI_LANGUAGES = ("de", "es", "fr", "ru", "zh", "ko", "ja", "en", "it", "hi", "pt")
EMOJI_LABELS = (
    "smileys-emotion",
    "people-body",
    "animals-nature",
    "food-drink",
    "travel-places",
    "activities",
    "objects",
    "symbols",
    "flags",
)


@dataclass(frozen=True)
class TaskSpec:
    """A classification task.

    ``parallel``: the languages hold translations of the same items, linked by ``translation_id``
    (sampling then keeps translation groups aligned across languages). ``pair``: examples are
    sentence pairs (``text_b`` is used). ``languages``: the languages known to exist (empty: any).
    """

    name: str
    num_labels: int
    label_names: tuple[str, ...]
    parallel: bool
    pair: bool
    languages: tuple[str, ...]
    hub_name: str | None
    default_source: str
    #: causal-lm prompts: the instruction before the input text, and the answer text of each label
    #: (label name -> text; a label without one is answered with its name)
    instruction: str = "Classify the following text. Answer with the label only.\n"
    verbalisations: tuple[tuple[str, str], ...] = ()

    def with_labels(self, label_names: list[str] | tuple[str, ...]) -> TaskSpec:
        names = tuple(str(n) for n in label_names)
        return dataclasses.replace(self, label_names=names, num_labels=len(names))

    def replace(self, **changes) -> TaskSpec:
        return dataclasses.replace(self, **changes)


TASKS: dict[str, TaskSpec] = {
    "emoji": TaskSpec(
        name="emoji",
        num_labels=len(EMOJI_LABELS),
        label_names=EMOJI_LABELS,
        parallel=True,
        pair=False,
        languages=EMOJI_LANGUAGES,
        hub_name=None,
        default_source="embedded",
        instruction="Emoji group?\n",
        verbalisations=tuple(
            zip(EMOJI_LABELS, ("Face", "People", "Animal", "Food", "Travel", "Activities", "Objects", "Symbol", "Flag"))
        ),
    ),
    "xnli": TaskSpec(
        name="xnli",
        num_labels=2,
        label_names=("not_entailment", "entailment"),
        parallel=True,
        pair=True,
        languages=XNLI_LANGUAGES,
        hub_name="facebook/xnli",
        default_source="hub",
        instruction="Does the first sentence entail the second? Answer yes or no.\n",
        verbalisations=(("not_entailment", "no"), ("entailment", "yes")),
    ),
    "pawsx": TaskSpec(
        name="pawsx",
        num_labels=2,
        label_names=("not_paraphrase", "paraphrase"),
        parallel=True,
        pair=True,
        languages=PAWSX_LANGUAGES,
        hub_name="google-research-datasets/paws-x",
        default_source="hub",
        instruction="Are the two sentences paraphrases of each other? Answer yes or no.\n",
        verbalisations=(("not_paraphrase", "no"), ("paraphrase", "yes")),
    ),
    "marc": TaskSpec(
        name="marc",
        num_labels=2,
        label_names=("negative", "positive"),
        parallel=False,
        pair=True,  # review title + review body
        languages=MARC_LANGUAGES,
        hub_name="mteb/amazon_reviews_multi",
        default_source="hub",
        instruction="Is this product review positive or negative? Answer with one word.\n",
    ),
    "local": TaskSpec(
        name="local",
        num_labels=0,  # set from the data or data.label_names
        label_names=(),
        parallel=False,  # True when a translation_id column is mapped
        pair=False,
        languages=(),
        hub_name=None,
        default_source="local",
    ),
}

#: the sources each task can be read from
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "emoji": ("embedded",),
    "xnli": ("official", "hub", "local"),
    "pawsx": ("official", "hub", "local"),
    "marc": ("official", "hub", "local"),
    "local": ("local",),
}


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; a LingtraceError listing the tasks when unknown."""
    if name not in TASKS:
        raise LingtraceError(f"unknown task {name!r}", f"set data.task to one of {', '.join(TASKS)}")
    return TASKS[name]
