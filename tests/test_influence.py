"""The influence engine against independent computations: a per-example autograd loop, brute-force
float64 TracIn pair by pair, a closed form on a 1-D model, captum's TracInCP, and invariances."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lingtrace.errors import LingtraceError
from lingtrace.influence.grads import PerSampleGradients, collate
from lingtrace.influence.params import select_params
from lingtrace.influence.sparse import SparseRows, sparse_dots
from lingtrace.influence.tracin import Examples, TracIn

VOCAB = 40
PAD = 1


def _config(arch: str = "xlm-roberta", labels: int = 3):
    from transformers import BertConfig, XLMRobertaConfig

    common = dict(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, num_labels=labels, pad_token_id=PAD
    )
    if arch == "bert":
        return BertConfig(max_position_embeddings=24, **common)
    return XLMRobertaConfig(max_position_embeddings=26, type_vocab_size=1, **common)


def _checkpoints(arch="xlm-roberta", n=3, seed=0, labels=3):
    """Checkpoints as state dicts: a random model and perturbed copies (as if trained)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(_config(arch, labels))
    states = []
    for _ in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        states.append({key: v.clone() for key, v in model.state_dict().items()})
    return states


def _factory(arch="xlm-roberta", labels=3, freeze_word=False):
    from transformers import AutoModelForSequenceClassification

    def make(state):
        model = AutoModelForSequenceClassification.from_config(_config(arch, labels))
        model.load_state_dict(state)
        if freeze_word:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    return make


def _examples(n, seed, prefix="x", labels=3, max_len=9, shared_tokens=True):
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(n):
        body = rng.integers(3, 12 if shared_tokens else VOCAB, size=int(rng.integers(1, max_len)))
        ids.append(np.r_[0, body, 2].astype(np.int64))
    return Examples(ids, rng.integers(0, labels, size=n), [f"{prefix}{i}" for i in range(n)])


# ---------------------------------------------------------------- brute force


def _flat_grad(model, ids, label, names):
    """The full gradient (dense, word embeddings included) of one example's loss, with plain autograd
    through the model's ordinary input_ids path."""
    model.zero_grad(set_to_none=True)
    x = torch.as_tensor(ids)[None]
    logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    torch.nn.functional.cross_entropy(logits, torch.as_tensor([int(label)])).backward()
    params = dict(model.named_parameters())
    return torch.cat([params[n].grad.reshape(-1) for n in names])


def brute_force(factory, states, train, test, mode="cosine", lr=None, params=None):
    """TracIn pair by pair in float64: for every checkpoint and every (train, test) pair, both
    gradients are recomputed from scratch (N * M * E * 2 backward passes)."""
    out = np.zeros((len(states), len(test), len(train)))
    for e, state in enumerate(states):
        model = factory(state).double().eval()
        names = select_params(model, params).names
        for i in range(len(test)):
            for j in range(len(train)):
                gt = _flat_grad(model, test.ids[i], test.labels[i], names)
                gz = _flat_grad(model, train.ids[j], train.labels[j], names)
                dot = float(gt @ gz)
                if mode == "cosine":
                    out[e, i, j] = dot / (float(gt.norm()) * float(gz.norm()))
                elif mode == "train-normalised":
                    out[e, i, j] = dot / float(gz.norm())
                else:
                    out[e, i, j] = dot * (lr[e] if lr is not None else 1.0)
    return out


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


# ---------------------------------------------------------------- per-sample gradients


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_per_sample_gradients_equal_per_example_loop(arch):
    model = _factory(arch)(_checkpoints(arch, n=1)[0]).double().eval()
    sel = select_params(model)
    assert sel.word_embedding is not None
    ex = _examples(6, seed=3, max_len=10)
    batch = collate(ex.ids, ex.labels, PAD)
    g = PerSampleGradients(model, sel)(batch)
    params = dict(model.named_parameters())
    for i in range(len(ex)):
        model.zero_grad(set_to_none=True)
        x = torch.as_tensor(ex.ids[i])[None]
        loss = torch.nn.functional.cross_entropy(model(input_ids=x, attention_mask=torch.ones_like(x)).logits, torch.as_tensor([int(ex.labels[i])]))
        loss.backward()
        assert abs(float(g.loss[i]) - loss.item()) < 1e-12
        for name in sel.dense_names:
            torch.testing.assert_close(g.dense[name][i].reshape(params[name].shape), params[name].grad, rtol=1e-10, atol=1e-12)
        dense_word = torch.zeros_like(params[sel.word_embedding])
        rows = g.rows()
        mine = rows.owner == i
        dense_word[rows.token[mine]] = rows.rows[mine]
        # the sync-free squared norm equals the norm of the grouped rows
        torch.testing.assert_close(g.emb_sq_norms()[i], (params[sel.word_embedding].grad ** 2).sum())
        torch.testing.assert_close(dense_word, params[sel.word_embedding].grad, rtol=1e-10, atol=1e-12)
        # one row per distinct token of the example
        assert int(mine.sum()) == len(set(ex.ids[i].tolist()))


def test_sparse_dots_equal_dense_products():
    rng = torch.Generator().manual_seed(0)
    h, vocab = 5, 30

    def rows(n):
        owner, token = [], []
        for i in range(n):
            toks = torch.randperm(vocab, generator=rng)[: int(torch.randint(1, 8, (1,), generator=rng))]
            owner += [i] * len(toks)
            token += toks.tolist()
        return SparseRows(torch.tensor(owner), torch.tensor(token), torch.randn(len(owner), h, dtype=torch.float64, generator=rng), n)

    def dense(s):
        d = torch.zeros(s.n, vocab, h, dtype=torch.float64)
        d[s.owner, s.token] = s.rows
        return d.reshape(s.n, -1)

    a, b = rows(7), rows(5)
    expected = dense(a) @ dense(b).T
    for max_elements in (1 << 20, h, 3 * h):  # also in tiny blocks
        torch.testing.assert_close(sparse_dots(a, b.sorted_by_token(), max_elements=max_elements), expected)
    torch.testing.assert_close(a.sq_norms(), (dense(a) ** 2).sum(1))
    # from_positions sums repeated tokens and drops padding
    grads = torch.randn(2, 4, h, dtype=torch.float64, generator=rng)
    ids = torch.tensor([[0, 7, 7, 2], [0, 9, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    s = SparseRows.from_positions(grads, ids, mask)
    d = dense(SparseRows(s.owner, s.token, s.rows, s.n)).reshape(2, vocab, h)
    torch.testing.assert_close(d[0, 7], grads[0, 1] + grads[0, 2])
    torch.testing.assert_close(d[1, 1], torch.zeros(h, dtype=torch.float64))  # the padded position
    assert s.rows.shape[0] == 3 + 3


# ---------------------------------------------------------------- TracIn against brute force


@pytest.mark.parametrize("mode,method", [("cosine", "pairs"), ("dot", "pairs"), ("train-normalised", "pairs"), ("cosine", "vocab"), ("dot", "vocab")])
def test_tracin_equals_brute_force_float64(mode, method):
    states = _checkpoints(n=3)
    factory = _factory()
    train, test = _examples(7, seed=1, prefix="z"), _examples(4, seed=2, prefix="t")
    lr = [3e-2, 2e-2, 1e-2] if mode == "dot" else None
    ref = brute_force(factory, states, train, test, mode, lr)
    tracin = TracIn(factory, states, mode=mode, lr=lr, dtype="float64", batch_size=3, breakdown=True, embedding_method=method, show_progress=False)
    res = tracin.scores(train, test)
    assert res.stats["gradient_passes"] == (len(train) + len(test)) * len(states)
    for e in range(3):
        assert _rel(res.per_epoch[e + 1], ref[e]) <= 1e-6
        # the breakdown's groups sum to the scores, and the word-embedding term is non-zero
        groups = res.groups[e + 1]
        assert {"word_embeddings", "embeddings", "layer.0", "layer.1", "head"} == set(groups)
        assert _rel(sum(groups.values()), res.per_epoch[e + 1]) <= 1e-9
        assert np.abs(groups["word_embeddings"]).max() > 0
    assert _rel(res.total, ref.sum(0)) <= 1e-6
    if mode == "cosine":
        assert np.all(np.abs(res.total) <= 3 + 1e-9)


@pytest.mark.parametrize("mode", ["cosine", "dot", "train-normalised"])
def test_tracin_float32_close_to_float64_brute_force(mode):
    states = _checkpoints(n=2, seed=5)
    factory = _factory()
    train, test = _examples(6, seed=7, prefix="z"), _examples(3, seed=8, prefix="t")
    ref = brute_force(factory, states, train, test, mode)
    res = TracIn(factory, states, mode=mode, dtype="float32", batch_size=4, show_progress=False).scores(train, test)
    for e in range(2):
        assert res.per_epoch[e + 1].dtype == np.float32
        assert _rel(res.per_epoch[e + 1], ref[e]) <= 1e-4


def test_bert_pairs_and_frozen_word_embeddings_brute_force():
    """BERT architecture (pooler head, absolute positions), word embeddings frozen in training: the
    frozen matrix is left out on both sides."""
    states = _checkpoints("bert", n=2, seed=11, labels=2)
    factory = _factory("bert", labels=2, freeze_word=True)
    train, test = _examples(5, seed=9, prefix="z", labels=2), _examples(3, seed=10, prefix="t", labels=2)

    def brute_factory(state):
        m = factory(state)
        return m

    ref = brute_force(brute_factory, states, train, test, "cosine")
    res = TracIn(factory, states, dtype="float64", breakdown=True, show_progress=False).scores(train, test)
    assert "word_embeddings" not in res.groups[1]
    assert _rel(res.total, ref.sum(0)) <= 1e-6


def test_parameter_selection_by_group_and_pattern():
    states = _checkpoints(n=2, seed=2)
    factory = _factory()
    train, test = _examples(5, seed=3), _examples(2, seed=4)
    for params in (["layer.1", "head"], ["*.attention.*"], ["*", "!word_embeddings"]):
        ref = brute_force(factory, states, train, test, "cosine", params=params)
        res = TracIn(factory, states, params=params, dtype="float64", show_progress=False).scores(train, test)
        assert _rel(res.total, ref.sum(0)) <= 1e-6, params
    with pytest.raises(LingtraceError, match="selects no trainable parameter"):
        TracIn(factory, states, params=["nothing.*"], show_progress=False).scores(train, test)


# ---------------------------------------------------------------- closed form (captum's 1-D regression test, as a classifier)


class Linear1D(torch.nn.Module):
    """logits = [0, w * x] where x is the (frozen) one-dimensional embedding of the example's token."""

    def __init__(self, xs, w):
        super().__init__()
        self.embed = torch.nn.Embedding(len(xs), 1, dtype=torch.float64)
        with torch.no_grad():
            self.embed.weight.copy_(torch.as_tensor(xs, dtype=torch.float64)[:, None])
        self.embed.weight.requires_grad_(False)
        self.w = torch.nn.Parameter(torch.tensor([float(w)], dtype=torch.float64))

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds=None, attention_mask=None):
        x = inputs_embeds[:, 0, 0]
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(x), self.w * x], dim=-1))


def test_closed_form_on_a_one_dimensional_model():
    xs = np.array([0.5, -1.0, 2.0, 1.5, -0.3, 0.8])
    ys = np.array([1, 0, 1, 0, 1, 1])
    ws = [0.2, -0.4, 1.1]
    lrs = [0.5, 0.25, 0.125]
    train = Examples([np.array([i]) for i in range(4)], ys[:4], [f"z{i}" for i in range(4)])
    test = Examples([np.array([i]) for i in range(4, 6)], ys[4:], ["t0", "t1"])
    factory = lambda w: Linear1D(xs, w)  # noqa: E731

    def g(w, i):  # d/dw of cross-entropy of logits [0, w x]: (sigmoid(w x) - y) x
        return (1 / (1 + math.exp(-w * xs[i])) - ys[i]) * xs[i]

    for mode in ("dot", "cosine", "train-normalised"):
        res = TracIn(factory, ws, mode=mode, lr=lrs if mode == "dot" else None, dtype="float64", show_progress=False).scores(train, test)
        expected = np.zeros((2, 4))
        for e, w in enumerate(ws):
            for a in range(2):
                for b in range(4):
                    gt, gz = g(w, 4 + a), g(w, b)
                    expected[a, b] += {"dot": lrs[e] * gt * gz, "cosine": np.sign(gt * gz), "train-normalised": gt * np.sign(gz)}[mode]
        np.testing.assert_allclose(res.total, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- invariances


def test_invariant_to_batch_size_chunks_shards_and_order():
    states = _checkpoints(n=2, seed=21)
    factory = _factory()
    train, test = _examples(11, seed=5, prefix="z"), _examples(5, seed=6, prefix="t")
    base = TracIn(factory, states, dtype="float64", batch_size=4, show_progress=False).scores(train, test).total
    variants = (
        dict(batch_size=1),
        dict(batch_size=11),
        dict(test_chunk=2),
        dict(shard_size=3, test_chunk=1),
        dict(sort_by_length=False),
    )
    for kw in variants:
        tr = TracIn(factory, states, dtype="float64", show_progress=False, **{"batch_size": 4, **kw})
        out = tr.scores(train, test)
        np.testing.assert_allclose(out.total, base, rtol=1e-10, atol=1e-12, err_msg=str(kw))
        chunks = math.ceil(len(test) / kw.get("test_chunk", len(test)))
        assert out.stats["gradient_passes"] == (len(train) * chunks + len(test)) * 2
    # permuting the examples permutes the scores
    pt, pz = np.random.default_rng(0).permutation(len(test)), np.random.default_rng(1).permutation(len(train))
    perm = TracIn(factory, states, dtype="float64", batch_size=4, show_progress=False).scores(train.subset(pz), test.subset(pt)).total
    np.testing.assert_allclose(perm, base[np.ix_(pt, pz)], rtol=1e-10, atol=1e-12)


def test_unknown_mode_and_damaged_checkpoint():
    with pytest.raises(LingtraceError, match="unknown influence mode"):
        TracIn(_factory(), [None], mode="nope")

    def broken(_):
        raise OSError("truncated file")

    with pytest.raises(LingtraceError, match="cannot load checkpoint .*truncated"):
        TracIn(broken, ["ckpt"], show_progress=False).scores(_examples(2, 0), _examples(1, 1))


# ---------------------------------------------------------------- captum


def test_dot_mode_equals_captum_tracincp():
    captum_tracincp = pytest.importorskip("captum.influence").TracInCP
    states = _checkpoints(n=2, seed=31)
    factory = _factory()
    train, test = _examples(6, seed=12, prefix="z"), _examples(3, seed=13, prefix="t")
    lrs = [0.5, 0.25]

    class Wrapped(torch.nn.Module):
        def __init__(self, state):
            super().__init__()
            self.model = factory(state).double().eval()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    width = max(len(x) for x in train.ids + test.ids)
    tr_batch, te_batch = collate(train.ids, train.labels, PAD), collate(test.ids, test.labels, PAD)

    def pad(b):
        extra = width - b.input_ids.shape[1]
        return (
            torch.nn.functional.pad(b.input_ids, (0, extra), value=PAD),
            torch.nn.functional.pad(b.attention_mask, (0, extra), value=0),
            b.labels,
        )

    dataset = torch.utils.data.TensorDataset(*pad(tr_batch))
    wrapped = Wrapped(states[0])
    paths = ["0", "1"]

    def load(model, path):
        model.model.load_state_dict({k: v.double() for k, v in states[int(path)].items()})
        return lrs[int(path)]

    captum = captum_tracincp(
        wrapped, dataset, paths, checkpoints_load_func=load, loss_fn=torch.nn.CrossEntropyLoss(reduction="none"), batch_size=4
    )
    ids, mask, labels = pad(te_batch)
    expected = captum.influence((ids, mask, labels), show_progress=False).detach().numpy()
    ours = TracIn(factory, states, mode="dot", lr=lrs, dtype="float64", show_progress=False).scores(train, test).total
    assert _rel(ours, expected) <= 1e-8


def test_out_of_memory_is_a_clear_error(monkeypatch):
    from lingtrace.influence import grads

    def oom(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(grads.PerSampleGradients, "__call__", oom)
    with pytest.raises(LingtraceError, match="out of memory .*finished parts are kept.*batch_size"):
        TracIn(_factory(), _checkpoints(n=1), show_progress=False).scores(_examples(3, 0), _examples(2, 1))
