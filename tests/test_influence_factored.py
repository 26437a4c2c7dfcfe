"""Factored nn.Linear gradients (``Tuning.linear_path``): the position-pair inner products against the
materialised per-example gradients and against float64 brute-force TracIn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lingtrace.influence.grads import PerSampleGradients, choose_factored, collate
from lingtrace.influence.params import select_params
from lingtrace.influence.tracin import TracIn
from test_influence import PAD, _checkpoints, _examples, _factory, _rel, brute_force


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_factors_materialise_to_the_per_example_gradients(arch):
    model = _factory(arch)(_checkpoints(arch, n=1)[0]).double().eval()
    sel = select_params(model)
    batch = collate(*(lambda e: (e.ids, e.labels))(_examples(5, seed=4, max_len=10)), PAD)
    ref = PerSampleGradients(model, sel)(batch)
    psg = PerSampleGradients(model, sel, linear_path="factored")
    got = psg(batch)
    weights = [n for n in sel.dense_names if n.endswith(".weight") and ref.dense[n].ndim == 2 and n in psg.factored]
    # every Linear weight of the encoder and the head is factored, nothing else is
    assert len(weights) >= 10 and set(psg.factored) == set(got.factors)
    assert not set(got.dense) & set(psg.factored) and set(got.dense) | set(psg.factored) == set(sel.dense_names)
    for name in psg.factored:
        torch.testing.assert_close(got.factors[name].materialise(), ref.dense[name], rtol=1e-10, atol=1e-12)
    for name in got.dense:
        torch.testing.assert_close(got.dense[name], ref.dense[name], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.sq_norms(), ref.sq_norms(), rtol=1e-10, atol=0)
    torch.testing.assert_close(got.loss, ref.loss)
    # the factored weights are constants of the pass: the forward is back to the module's own afterwards
    assert all("forward" not in vars(psg.linears[n]) for n in psg.factored)


@pytest.mark.parametrize("mode", ["cosine", "dot", "train-normalised"])
@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_factored_tracin_equals_brute_force_float64(mode, arch):
    states = _checkpoints(arch, n=2, seed=3)
    factory = _factory(arch)
    train, test = _examples(7, seed=1, prefix="z"), _examples(4, seed=2, prefix="t")
    ref = brute_force(factory, states, train, test, mode)
    kw = dict(mode=mode, dtype="float64", batch_size=3, breakdown=True, show_progress=False)
    res = TracIn(factory, states, linear_path="factored", **kw).scores(train, test)
    mat = TracIn(factory, states, linear_path="materialised", **kw).scores(train, test)
    for e in (1, 2):
        assert _rel(res.per_epoch[e], ref[e - 1]) <= 1e-6
        assert set(res.groups[e]) == set(mat.groups[e])
        for group, values in res.groups[e].items():  # the same breakdown as the materialised path
            np.testing.assert_allclose(values, mat.groups[e][group], rtol=1e-9, atol=1e-12)
    assert res.stats["gradient_passes"] == (len(train) + len(test)) * 2


def test_factored_invariant_to_batches_chunks_and_float32_close():
    states = _checkpoints(n=2, seed=21)
    factory = _factory()
    train, test = _examples(11, seed=5, prefix="z"), _examples(5, seed=6, prefix="t")
    base = TracIn(factory, states, dtype="float64", batch_size=4, show_progress=False).scores(train, test).total
    for kw in (dict(batch_size=1), dict(batch_size=11), dict(test_chunk=2, shard_size=3), dict(sort_by_length=False)):
        out = TracIn(factory, states, dtype="float64", show_progress=False, linear_path="factored", **{"batch_size": 4, **kw}).scores(train, test)
        np.testing.assert_allclose(out.total, base, rtol=1e-9, atol=1e-12, err_msg=str(kw))
    f32 = TracIn(factory, states, dtype="float32", batch_size=4, show_progress=False, linear_path="factored").scores(train, test).total
    assert _rel(f32, base) <= 1e-4


def test_cost_model_chooses_per_layer():
    layers = {
        "ffn": (384, 1536, 6.0),  # 36 * 1920 = 69k < 590k: factored
        "ffn_long": (384, 1536, 21.0),  # 441 * 1920 = 847k > 590k: materialised
        "attn": (384, 384, 13.0),  # 169 * 768 = 130k < 147k: factored
        "attn_long": (384, 384, 14.0),  # 196 * 768 = 151k > 147k: materialised
        "head": (384, 384, 1.0),  # one position (the pooled token): always factored
    }
    assert choose_factored(layers, "auto") == ["ffn", "attn", "head"]
    assert choose_factored(layers, "materialised") == []
    assert choose_factored(layers, "factored") == list(layers)
    with pytest.raises(ValueError):
        choose_factored(layers, "sometimes")


def test_auto_keeps_long_examples_materialised_and_short_ones_factored():
    model = _factory()(_checkpoints(n=1)[0]).double().eval()
    sel = select_params(model)
    batch = collate(*(lambda e: (e.ids, e.labels))(_examples(3, seed=4, max_len=9)), PAD)
    short = PerSampleGradients(model, sel, linear_path="auto", avg_tokens=2.0)
    short(batch)
    long = PerSampleGradients(model, sel, linear_path="auto", avg_tokens=500.0)
    long(batch)
    # the tiny model's layers are small, so at 2 tokens everything is cheaper factored; at 500 only
    # the head (one position) is
    assert set(short.factored) == set(short.linears)
    assert long.factored and all(n.startswith("classifier") for n in long.factored)


def test_only_linear_weights_selected_all_factored():
    """A selection of Linear weights alone leaves no materialised parameter: the scores still equal brute force."""
    states = _checkpoints(n=2, seed=4)
    factory = _factory()
    train, test = _examples(5, seed=1, prefix="z"), _examples(3, seed=2, prefix="t")
    params = ["*.dense.weight", "*.query.weight"]
    ref = brute_force(factory, states, train, test, "cosine", params=params)
    res = TracIn(factory, states, params=params, dtype="float64", breakdown=True, linear_path="factored", show_progress=False).scores(train, test)
    assert _rel(res.total, ref.sum(0)) <= 1e-6


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
@pytest.mark.parametrize("path", ["auto", "factored"])
def test_product_blocks_equal_brute_force_float64(arch, path):
    """Several batches gathered into one product block (``Tuning.product_rows``; the probed Linear
    weights materialised straight into it), block edges inside and across shards, equal float64 brute
    force and the engine without blocks, breakdown included."""
    states = _checkpoints(arch, n=2, seed=8)
    factory = _factory(arch)
    train, test = _examples(13, seed=3, prefix="z"), _examples(5, seed=4, prefix="t")
    ref = brute_force(factory, states, train, test, "cosine")
    kw = dict(dtype="float64", batch_size=2, breakdown=True, show_progress=False, linear_path=path)
    plain = TracIn(factory, states, product_rows=0, **kw)
    none = plain.scores(train, test)
    assert plain.engine.estimator.product_rows is None
    for rows, extra in ((4, {}), (6, dict(shard_size=5)), (None, dict(test_chunk=2))):
        tracin = TracIn(factory, states, product_rows=rows, **{**kw, **extra})
        seen: list[int] = []
        score_many = tracin.engine.estimator.score_many
        tracin.engine.estimator.score_many = lambda res, gs, _f=score_many, _seen=seen: _seen.append(sum(len(g.loss) for g in gs)) or _f(res, gs)
        got = tracin.scores(train, test)
        assert max(seen) > 2, (rows, seen)  # batches were gathered
        for e in (1, 2):
            assert _rel(got.per_epoch[e], ref[e - 1]) <= 1e-6, (rows, extra)
            for group, values in got.groups[e].items():
                np.testing.assert_allclose(values, none.groups[e][group], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got.train_norm[2], none.train_norm[2], rtol=1e-9)


def test_blocks_only_where_one_batch_is_memory_bound():
    """Blocks by default only where a batch's product with the resident test gradients does fewer
    than MACHINE_BALANCE flops per byte (B m / (2 (B + m))): 16 x 50 (the demo) is, 64 x 50 is not."""
    from lingtrace.influence.methods.gradient import MACHINE_BALANCE, memory_bound

    assert memory_bound(16, 50) and not memory_bound(64, 50) and memory_bound(2, 5)
    assert 16 * 50 / (2 * 66) < MACHINE_BALANCE < 64 * 50 / (2 * 114)
    states = _checkpoints(n=1, seed=9)
    train = _examples(9, seed=3, prefix="z")
    for batch, n_test, path, blocks in ((2, 4, "auto", True), (64, 50, "auto", False), (2, 4, "materialised", False)):
        tracin = TracIn(_factory(), states, dtype="float64", batch_size=batch, linear_path=path, show_progress=False)
        tracin.scores(train, _examples(n_test, seed=4, prefix="t"))
        assert tracin.engine.estimator.blocking is blocks, (batch, n_test, path)


def test_product_block_allocated_once_and_reused_by_later_checkpoints(monkeypatch):
    """The block's buffers are made at the first checkpoint and kept by the later ones (no second
    allocation, so no second round of page faults)."""
    import lingtrace.influence.methods.gradient as gradient

    made = []

    class Counting(gradient.DenseBlock):
        def __init__(self, *a, **k):
            made.append(a[0])
            super().__init__(*a, **k)

    monkeypatch.setattr(gradient, "DenseBlock", Counting)
    states = _checkpoints(n=3, seed=11)
    train, test = _examples(10, seed=3, prefix="z"), _examples(4, seed=4, prefix="t")
    ref = brute_force(_factory(), states, train, test, "cosine")
    tracin = TracIn(_factory(), states, dtype="float64", batch_size=2, product_rows=6, show_progress=False)
    got = tracin.scores(train, test)
    assert made == [6]
    assert _rel(got.total, ref.sum(0)) <= 1e-6
