"""How a ``causal-lm`` example becomes a prompt and an answer.

The prompt is the instruction followed by the input text (``text_a``, and ``text_b`` on a new line
for sentence pairs) as the user's message, through the tokenizer's chat template when it has one
(with the generation prompt, so the prompt ends where the assistant's answer starts), otherwise as
plain lines. The answer is the verbalisation of the label, followed by the template's end-of-turn
token (the tokenizer's end-of-sequence token). Only the input text is truncated to fit
``model.max_length``; the template, the instruction and the answer never are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lingtrace.errors import LingtraceError

_PLACEHOLDER = "\x00TEXT\x00"


def tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class PromptFormat:
    """``instruction`` (before the input text), optional ``system`` message, and the answer suffix
    (None: the tokenizer's end-of-sequence token)."""

    instruction: str
    system: str | None = None
    answer_suffix: str | None = None

    def template(self, tokenizer) -> tuple[list[int], list[int]]:
        """Token ids of the prompt before and after the input text."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.instruction + _PLACEHOLDER})
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n".join(m["content"] for m in messages) + "\n"
        before, after = text.split(_PLACEHOLDER)
        return tokens(tokenizer, before), tokens(tokenizer, after)

    def suffix(self, tokenizer) -> str:
        if self.answer_suffix is not None:
            return self.answer_suffix
        return tokenizer.eos_token or ""

    def answer_ids(self, tokenizer, verbalisations: Sequence[str]) -> list[list[int]]:
        """Token ids of each answer (verbalisation + suffix)."""
        suffix = self.suffix(tokenizer)
        return [tokens(tokenizer, v + suffix) for v in verbalisations]

    def prompt_ids(self, tokenizer, text_a: Sequence[str], text_b: Sequence[str | None] | None, room: Sequence[int]) -> list[list[int]]:
        """Prompt token ids per example; example i's prompt takes at most ``room[i]`` tokens (``max_length``
        less the longest answer of its language), the input text being cut to fit."""
        before, after = self.template(tokenizer)
        texts = [str(a) if not b else f"{a}\n{b}" for a, b in zip(text_a, text_b if text_b is not None else [None] * len(text_a))]
        text_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        out = []
        for ids, limit in zip(text_ids, room):
            keep = limit - len(before) - len(after)
            if keep < 1:
                raise LingtraceError(
                    f"model.max_length leaves no room for the input text after the prompt template and the answer "
                    f"({len(before) + len(after)} template tokens)",
                    "raise model.max_length or shorten model.instruction",
                )
            out.append(before + list(ids[:keep]) + after)
        return out


def resolve_verbalisations(label_names: Sequence[str], defaults: dict[str, str], overrides: dict[str, str], languages: Sequence[str]) -> dict[str, list[str]]:
    """The answer text of every label in every language: ``overrides`` keys ``LABEL`` (every language)
    or ``LANG:LABEL`` (one language) over the task's ``defaults`` (label -> text), over the label name.

    Returns ``{lang: [text of label 0, text of label 1, ...]}``; a language's texts must be distinct."""
    labels = [str(n) for n in label_names]
    for key in overrides:
        label = key.split(":", 1)[-1]
        if label not in labels:
            raise LingtraceError(f"model.verbalisations has {key!r}, but {label!r} is not a label of the task", f"labels: {', '.join(labels)}")
    out: dict[str, list[str]] = {}
    for lang in languages:
        texts = [overrides.get(f"{lang}:{n}", overrides.get(n, defaults.get(n, n))) for n in labels]
        if len(set(texts)) != len(texts) or any(not t.strip() for t in texts):
            raise LingtraceError(f"the verbalisations of {lang} must be distinct and non-empty, got {texts}", "set model.verbalisations")
        out[str(lang)] = texts
    return out
