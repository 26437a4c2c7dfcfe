"""Decoder models (``model.kind`` decoder-classifier and causal-lm) against independent computations:
per-example gradients and TracIn scores on a tiny Llama equal a float64 brute force (each example
unpadded and alone, through transformers' own input_ids path, masks, positions and loss), on either
padding side; the answer-only loss equals a hand computation; the verbaliser scorer equals one
forward per (example, answer) and picks the trained label."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from lingtrace.influence.grads import PerSampleGradients
from lingtrace.influence.params import select_params
from lingtrace.influence.tracin import TracIn
from lingtrace.models.decoder import IGNORE, causal_additive_mask, position_ids_from_mask, verbaliser_scores
from lingtrace.models.prompts import PromptFormat
from lingtrace.objectives import CausalLMObjective, DecoderClassificationObjective, Examples
from support.tiny import tiny_llama_config

VOCAB = 300
TOL = 1e-5  # float32 vmapped against the float64 loop, relative to the largest entry


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_lm(seed=0, tied=False):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(VOCAB, tied=tied)).eval()


def tiny_classifier(seed=0, labels=3):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(tiny_llama_config(VOCAB, num_labels=labels)).eval()


def lm_task(side="left"):
    return CausalLMObjective(PromptFormat("unused"), {}, padding_side=side)


def lm_examples(n, seed=0, prefix="x"):
    """Prompt + answer token sequences; ``labels`` hold the answer lengths."""
    g = np.random.default_rng(seed)
    ids, lengths = [], []
    for _ in range(n):
        prompt = g.integers(3, VOCAB, size=int(g.integers(3, 10))).tolist()
        answer = g.integers(3, VOCAB, size=int(g.integers(1, 4))).tolist()
        ids.append(np.asarray(prompt + answer, dtype=np.int64))
        lengths.append(len(answer))
    return Examples(ids, np.asarray(lengths), [f"{prefix}{i}" for i in range(n)])


def cls_examples(n, seed=0, prefix="c", labels=3):
    g = np.random.default_rng(seed)
    ids = [g.integers(3, VOCAB, size=int(g.integers(2, 12))).astype(np.int64) for _ in range(n)]
    return Examples(ids, g.integers(0, labels, size=n), [f"{prefix}{i}" for i in range(n)])


# ---------------------------------------------------------------- the independent brute force


def reference_model(model):
    ref = copy.deepcopy(model).double().eval()
    ref.config._attn_implementation = "sdpa"
    return ref


def reference_loss(ref, kind, ids, label):
    """One example, unpadded and alone, through the model's ordinary input_ids path and its own loss."""
    x = torch.as_tensor(ids)[None]
    if kind == "causal-lm":
        labels = x.clone()
        labels[0, : len(ids) - int(label)] = IGNORE
        return ref(input_ids=x, labels=labels).loss * int(label)  # transformers' mean over the answer tokens
    logits = ref(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits, torch.as_tensor([int(label)]), reduction="sum")


def reference_grads(ref, kind, ex: Examples, names):
    params = dict(ref.named_parameters())
    out, losses = [], []
    for ids, label in zip(ex.ids, ex.labels):
        loss = reference_loss(ref, kind, ids, label)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        out.append(dict(zip(names, grads)))
        losses.append(float(loss.detach()))
    return out, np.asarray(losses)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---------------------------------------------------------------- masks and positions


def test_positions_and_mask_follow_the_real_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask)[mask.bool()].tolist() == [0, 1, 2, 0, 1, 2]
    allowed = causal_additive_mask(torch.tensor([[0, 1, 1]]), torch.float32)[0, 0] == 0
    # the padding query sees only itself; real queries see earlier real keys, never the padding key
    assert allowed.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


# ---------------------------------------------------------------- the answer-only loss


@pytest.mark.parametrize("side", ["left", "right"])
def test_answer_loss_equals_hand_computation(side):
    model = tiny_lm()
    task = lm_task(side)
    ex = lm_examples(5)
    batch = task.collate(ex.ids, ex.labels, pad_id=0)
    assert ((batch.labels != IGNORE).sum(1).numpy() == ex.labels).all()
    with torch.no_grad():
        got = task.batch_losses(model, batch)
        for i, (ids, n) in enumerate(zip(ex.ids, ex.labels)):
            logp = torch.log_softmax(model(input_ids=torch.as_tensor(ids)[None]).logits[0].double(), -1)
            start = len(ids) - int(n)  # the first answer token, predicted by the logit before it
            hand = -sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
            assert abs(float(got[i]) - hand) < 1e-4 * max(1.0, abs(hand))
            everything = -sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)))
            assert everything > hand + 1e-3  # the prompt tokens would add to it: they are left out


# ---------------------------------------------------------------- per-example gradients


def _dense_word_grad(grads, batch, vocab):
    """[B, V, H] word-embedding gradient: the position gradients scattered onto their tokens."""
    b, t, h = grads.emb_pos.shape
    out = torch.zeros(b, vocab, h, dtype=torch.float64)
    pos = grads.emb_pos.double() * batch.attention_mask[..., None]
    return out.scatter_add_(1, batch.input_ids[..., None].expand(b, t, h), pos)


@pytest.mark.parametrize("kind", ["causal-lm", "decoder-classifier"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_per_example_gradients_equal_float64_brute_force(kind, side):
    model = tiny_lm() if kind == "causal-lm" else tiny_classifier()
    task = lm_task(side) if kind == "causal-lm" else DecoderClassificationObjective(side)
    ex = lm_examples(6, seed=1) if kind == "causal-lm" else cls_examples(6, seed=1)
    selection = select_params(model)
    assert selection.word_embedding is not None  # every parameter, word embeddings included
    batch = task.collate(ex.ids, ex.labels, pad_id=0)
    grads = PerSampleGradients(model, selection, objective=task)(batch)
    ref = reference_model(model)
    want, want_loss = reference_grads(ref, kind, ex, selection.names)
    assert rel(grads.loss, want_loss) < TOL
    for name in selection.dense_names:
        assert rel(grads.dense[name], torch.stack([w[name].reshape(-1) for w in want])) < TOL, name
    word = _dense_word_grad(grads, batch, VOCAB)
    assert rel(word, torch.stack([w[selection.word_embedding] for w in want])) < TOL


def test_tied_trainable_embeddings_are_refused():
    model = tiny_lm(tied=True)
    ex = lm_examples(2)
    task = lm_task()
    with pytest.raises(Exception, match="tied"):
        PerSampleGradients(model, select_params(model), objective=task)(task.collate(ex.ids, ex.labels, 0))


# ---------------------------------------------------------------- TracIn against brute force


def _states(model, n=2, seed=0):
    torch.manual_seed(seed)
    states = []
    for _ in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def _flat_grad(ref, kind, weights, ids, label):
    grads = torch.autograd.grad(reference_loss(ref, kind, ids, label), weights)
    return torch.cat([g.reshape(-1) for g in grads])


def brute_force_tracin(make, states, kind, train, test, mode):
    """Pair by pair in float64, both gradients recomputed for every pair."""
    out = np.zeros((len(states), len(test), len(train)))
    for e, state in enumerate(states):
        ref = reference_model(make(state))
        names = select_params(ref).names
        params = dict(ref.named_parameters())
        weights = [params[n] for n in names]
        for i in range(len(test)):
            for j in range(len(train)):
                gt = _flat_grad(ref, kind, weights, test.ids[i], test.labels[i])
                gz = _flat_grad(ref, kind, weights, train.ids[j], train.labels[j])
                dot = float(gt @ gz)
                out[e, i, j] = {"cosine": dot / float(gt.norm() * gz.norm()), "train-normalised": dot / float(gz.norm()), "dot": dot}[mode]
    return out


@pytest.mark.parametrize("kind", ["causal-lm", "decoder-classifier"])
@pytest.mark.parametrize("mode", ["cosine", "dot", "train-normalised"])
def test_tracin_equals_float64_brute_force(kind, mode):
    base = tiny_lm() if kind == "causal-lm" else tiny_classifier()
    states = _states(base)

    def make(state):
        model = copy.deepcopy(base)
        model.load_state_dict(state)
        return model

    if kind == "causal-lm":
        train, test = lm_examples(5, seed=2, prefix="z"), lm_examples(3, seed=3, prefix="t")
    else:
        train, test = cls_examples(5, seed=2, prefix="z"), cls_examples(3, seed=3, prefix="t")
    want = brute_force_tracin(make, states, kind, train, test, mode)
    for side in ("left", "right"):
        task = lm_task(side) if kind == "causal-lm" else DecoderClassificationObjective(side)
        res = TracIn(make, states, mode=mode, dtype="float64", batch_size=3, objective=task, show_progress=False).scores(train, test, pad_id=0)
        for e in range(len(states)):
            assert rel(res.per_epoch[e + 1], want[e]) < 1e-6, (side, e)


# ---------------------------------------------------------------- verbaliser scoring


def test_packed_scorer_equals_one_forward_per_answer():
    model = tiny_lm()
    g = np.random.default_rng(3)
    prompts = [g.integers(3, VOCAB, size=n).tolist() for n in (4, 9, 6)]
    answers = [[50, 2], [60, 61, 2], [70, 2], [80, 81, 82, 2]]
    got = verbaliser_scores(model, prompts, answers, pad_id=0, batch_size=2)
    want = torch.zeros(len(prompts), len(answers), dtype=torch.float64)
    with torch.no_grad():
        for i, p in enumerate(prompts):
            for j, a in enumerate(answers):
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0].double(), -1)
                want[i, j] = sum(logp[len(p) - 1 + t, a[t]] for t in range(len(a)))
    assert float((got - want).abs().max()) < 1e-4


class _WordTokenizer:
    """A whitespace tokenizer over a fixed vocabulary (for a frame-level causal-lm task)."""

    eos_token = "</s>"
    pad_token_id = 0
    chat_template = None

    def __init__(self, words):
        self.vocab = {"<pad>": 0, "</s>": 2, "\n": 3, **{w: i + 4 for i, w in enumerate(words)}}

    def __call__(self, text, add_special_tokens=False):
        def enc(s):
            return [self.vocab[w] for w in s.replace("</s>", " </s>").replace("\n", " \n ").split(" ") if w]

        return {"input_ids": [enc(t) for t in text] if isinstance(text, list) else enc(text)}


def test_scorer_picks_the_trained_label():
    """Constructed case: the class is marked by one word in a random text; the two answers differ in
    length. After training the answer-only loss, held-out prompts are classified from the scores."""
    words = [f"w{i}" for i in range(40)] + ["good", "bad", "yes", "no", "maybe", "Label?"]
    tok = _WordTokenizer(words)
    task = CausalLMObjective(PromptFormat("Label?\n"), {"en": ["yes", "no maybe"]})
    g = np.random.default_rng(5)

    def frame(n, prefix):
        rows = []
        for i in range(n):
            y = int(g.integers(2))
            text = [f"w{k}" for k in g.integers(0, 40, size=int(g.integers(3, 7)))]
            text.insert(int(g.integers(len(text))), "good" if y == 0 else "bad")
            rows.append({"uid": f"{prefix}{i}", "lang": "en", "text_a": " ".join(text), "text_b": "", "label": y})
        return pd.DataFrame(rows)

    train, test = frame(64, "z"), frame(32, "t")
    torch.manual_seed(0)
    model = tiny_lm(seed=1)
    batch = task.encode_rows(tok, train, max_length=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = task.batch_losses(model, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    scores = task.class_scores(model, tok, test, max_length=32)
    accuracy = float((scores.argmax(1).numpy() == test["label"].to_numpy()).mean())
    assert accuracy >= 0.9
    confidence = torch.softmax(scores, 1).max(1).values
    assert ((confidence >= 0.5) & (confidence <= 1)).all()


# ---------------------------------------------------------------- LoRA


@pytest.mark.parametrize("kind", ["causal-lm", "decoder-classifier"])
def test_lora_gradients_and_tracin_equal_float64_brute_force(kind):
    pytest.importorskip("peft")
    from lingtrace.models.decoder import apply_lora, lora_settings

    base = tiny_lm() if kind == "causal-lm" else tiny_classifier()
    apply_lora(base, lora_settings(4, 8.0, ["q_proj", "v_proj"], [-1], num_layers=2), train_head=kind == "decoder-classifier")
    states = _states(base)  # moves the adapters' B away from its zero initialisation

    def make(state):
        model = copy.deepcopy(base)
        model.load_state_dict(state)
        return model

    model = make(states[0])
    trained = select_params(model).names
    assert trained and all(".lora_" in n and ".layers.1." in n or n == "score.weight" for n in trained)
    assert ("score.weight" in trained) == (kind == "decoder-classifier")
    ex = lm_examples(5, seed=4) if kind == "causal-lm" else cls_examples(5, seed=4)
    task = lm_task() if kind == "causal-lm" else DecoderClassificationObjective()
    grads = PerSampleGradients(model, select_params(model), objective=task)(task.collate(ex.ids, ex.labels, 0))
    want, _ = reference_grads(reference_model(model), kind, ex, trained)
    for name in trained:
        assert rel(grads.dense[name], torch.stack([w[name].reshape(-1) for w in want])) < TOL, name
    train, test = ex, (lm_examples(3, seed=5, prefix="t") if kind == "causal-lm" else cls_examples(3, seed=5, prefix="t"))
    res = TracIn(make, states, mode="cosine", dtype="float64", batch_size=2, objective=task, show_progress=False).scores(train, test, pad_id=0)
    ref = brute_force_tracin(make, states, kind, train, test, "cosine")
    for e in range(len(states)):
        assert rel(res.per_epoch[e + 1], ref[e]) < 1e-6


# ---------------------------------------------------------------- prompts, verbalisations, config


def test_prompt_goes_through_the_chat_template_and_only_the_text_is_cut():
    from support.tiny import train_tiny_decoder_tokenizer

    tok = train_tiny_decoder_tokenizer(["hello world again and again", "Label?", "yes no"], vocab_size=300)
    prompt = PromptFormat("Label?\n", system="Be brief.")
    before, after = prompt.template(tok)
    text = tok.decode(before) + "X" + tok.decode(after)
    assert text == tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Label?\nX"}], tokenize=False, add_generation_prompt=True
    )
    long = "hello world again and again " * 5
    room = len(before) + len(after) + 3
    (ids,) = prompt.prompt_ids(tok, [long], None, [room])
    assert len(ids) == room and ids[: len(before)] == before and ids[-len(after) :] == after
    assert prompt.answer_ids(tok, ["yes"]) == [tok("yes<|im_end|>", add_special_tokens=False)["input_ids"]]
    from lingtrace.errors import LingtraceError

    with pytest.raises(LingtraceError, match="no room"):
        prompt.prompt_ids(tok, [long], None, [len(before) + len(after)])


def test_verbalisations_per_label_and_language():
    from lingtrace.errors import LingtraceError
    from lingtrace.models.prompts import resolve_verbalisations

    got = resolve_verbalisations(["neg", "pos"], {"pos": "good"}, {"de:pos": "gut", "neg": "bad"}, ["de", "fr"])
    assert got == {"de": ["bad", "gut"], "fr": ["bad", "good"]}
    with pytest.raises(LingtraceError, match="not a label"):
        resolve_verbalisations(["neg", "pos"], {}, {"de:neutral": "x"}, ["de"])
    with pytest.raises(LingtraceError, match="distinct"):
        resolve_verbalisations(["neg", "pos"], {}, {"neg": "same", "pos": "same"}, ["de"])


def test_model_kind_is_validated_and_new_keys_keep_old_fingerprints():
    from lingtrace.config import Config, apply_overrides, validate
    from lingtrace.errors import LingtraceError
    from lingtrace.run import RunDir

    with pytest.raises(LingtraceError, match="model.kind"):
        validate(apply_overrides(Config(), ["model.kind=decoder"]))
    cfg = apply_overrides(Config(), ["model.kind=causal-lm", "model.lora_r=8"])
    validate(cfg)
    view = RunDir("unused").stage_config(Config(), "train")["model"]
    assert "kind" not in view and "lora_r" not in view  # defaults: the fingerprint of runs made before
    assert RunDir("unused").stage_config(cfg, "train")["model"]["kind"] == "causal-lm"


@pytest.mark.parametrize("side", ["left", "right"])
def test_representations_equal_an_unpadded_forward(side):
    model = tiny_lm()
    ex = lm_examples(4, seed=6)
    task = lm_task(side)
    got = task.representation(model, task.collate(ex.ids, ex.labels, 0))
    classifier = tiny_classifier()
    cls_ex = cls_examples(4, seed=6)
    cls_task = DecoderClassificationObjective(side)
    got_cls = cls_task.representation(classifier, cls_task.collate(cls_ex.ids, cls_ex.labels, 0))
    with torch.no_grad():
        for i, (ids, n) in enumerate(zip(ex.ids, ex.labels)):
            hidden = model.model(input_ids=torch.as_tensor(ids)[None]).last_hidden_state[0]
            torch.testing.assert_close(got[i], hidden[len(ids) - int(n) - 1], rtol=1e-5, atol=1e-5)  # the last prompt token
        for i, ids in enumerate(cls_ex.ids):
            hidden = classifier.model(input_ids=torch.as_tensor(ids)[None]).last_hidden_state[0]
            torch.testing.assert_close(got_cls[i], hidden[-1], rtol=1e-5, atol=1e-5)
