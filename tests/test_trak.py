"""The trak method against a float64 brute force built by hand: per-example gradients by plain autograd
(of the cross-entropy, or of the correct-class margin for TRAK's output function), the CountSketch as an
explicit scatter of every coordinate to its hashed bucket with its sign (numpy), the damped kernel solved
by numpy, TRAK's 1 - p weighting from the softmax; and each option of the estimator doing what it says.
Also the premises of ``benchmarks/bench_trak.py`` (a CountSketch to k is the fold of one to a multiple
of k; the kernel through the Gram matrix equals the kernel solve)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence import errors
from lingtrace.influence.context import Checkpoint
from lingtrace.influence.engine import Engine
from lingtrace.influence.methods import estimator_class
from lingtrace.influence.methods.trak import DAMPING, DEFAULT_DIM, DEFAULT_OUTPUT, TrakEstimator
from lingtrace.influence.params import select_params
from lingtrace.influence.plan import MemorySink
from lingtrace.influence.projection import CountSketch
from lingtrace.influence.tracin import TracInResult
from test_influence import _checkpoints, _examples, _factory, _rel

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(estimator, factory, states, train, test, options):
    engine = Engine(estimator, factory, [Checkpoint(s, e + 1) for e, s in enumerate(states)], options, Tuning(show_progress=False))
    sink = MemorySink(len(test), len(train))
    engine.run(train, test, sink)
    return TracInResult.from_sink(sink, engine.epochs, train, test, engine.stats), engine


def _grad(model, ids, label, names, output):
    """(full gradient over ``names``, 1 - p(gold)) of one example by plain autograd in float64."""
    model.zero_grad(set_to_none=True)
    x = torch.as_tensor(ids)[None]
    z = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
    y = int(label)
    if output == "loss":
        f = -torch.log_softmax(z, 0)[y]
    else:  # the correct-class margin z_y - logsumexp of the others, by hand
        f = z[y] - torch.logsumexp(torch.cat([z[:y], z[y + 1 :]]), 0)
    f.backward()
    params = dict(model.named_parameters())
    g = torch.cat([params[n].grad.reshape(-1) for n in names]).numpy()
    return g, 1.0 - float(torch.softmax(z.detach(), 0)[y])


def _sketch_matrix(sel, dim, seed, params):
    """Bucket and sign of every coordinate of the full gradient (``sel.names`` order), from the library's
    hash of the documented layout: dense parameters at running offsets, the word-embedding matrix after
    them as token * H + column."""
    numel = {n: sel.numel[n] for n in sel.dense_names}
    sketch = CountSketch(dim, seed, numel)
    coords = []
    for n in sel.names:
        if n == sel.word_embedding:
            coords.append(sketch.word_offset + torch.arange(params[n].numel(), dtype=torch.int64))
        else:
            coords.append(sketch.offsets[n] + torch.arange(sel.numel[n], dtype=torch.int64))
    bucket, sign = sketch._hash(torch.cat(coords))
    return bucket.numpy(), sign.double().numpy()


def trak_brute_force(factory, states, train, test, dim, seed, damping, output, weighted=True):
    """sum over checkpoints of phi_test^T (Phi^T Phi + lambda I)^-1 phi_j w_j, lambda = damping * trace / dim,
    float64, with w_j = 1 - p_j for the margin output (TRAK's Q) and 1 for the loss."""
    total = np.zeros((len(test), len(train)))
    lambdas = []
    for state in states:
        model = factory(state).double().eval()
        sel = select_params(model)
        params = dict(model.named_parameters())
        bucket, sign = _sketch_matrix(sel, dim, seed, params)

        def phi(ex, i):
            g, q = _grad(model, ex.ids[i], ex.labels[i], sel.names, output)
            return np.bincount(bucket, weights=sign * g, minlength=dim), q

        tr = [phi(train, j) for j in range(len(train))]
        te = [phi(test, i) for i in range(len(test))]
        big, q = np.stack([p for p, _ in tr]), np.array([w for _, w in tr])
        small = np.stack([p for p, _ in te])
        kernel = big.T @ big
        lam = damping * np.trace(kernel) / dim
        lambdas.append(lam)
        scores = small @ np.linalg.solve(kernel + lam * np.eye(dim), big.T)
        total += scores * (q[None, :] if output == "margin" and weighted else 1.0)
    return total, lambdas


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("output", ["loss", "margin"])
def test_trak_equals_float64_brute_force(output):
    states = _checkpoints(n=2, seed=13)
    factory = _factory()
    train, test = _examples(9, seed=3, prefix="z"), _examples(4, seed=4, prefix="t")
    dim, seed = 64, 5
    options = InfluenceOptions(dtype="float64", batch_size=4, projection_dim=dim, projection_seed=seed)
    estimator = TrakEstimator(options, output=output)
    res, engine = _run(estimator, factory, states, train, test, options)
    assert engine.stats["gradient_passes"] == (2 * len(train) + len(test)) * 2  # the kernel takes one more pass
    ref, lambdas = trak_brute_force(factory, states, train, test, dim, seed, DAMPING, output)
    assert _rel(res.total, ref) <= 1e-8
    info = estimator.describe()
    assert info["output"] == output and info["relative_damping"] == DAMPING
    np.testing.assert_allclose([info["damping"][str(e)] for e in (1, 2)], lambdas, rtol=1e-9)


def test_trak_in_float32_stays_close_to_the_float64_brute_force():
    """float32 gradients, float64 kernel and products: the ill-conditioned solve loses nothing visible."""
    states = _checkpoints(n=1, seed=2)
    factory = _factory()
    train, test = _examples(10, seed=5, prefix="z"), _examples(3, seed=6, prefix="t")
    options = InfluenceOptions(dtype="float32", batch_size=4, projection_dim=32, projection_seed=1)
    res, _ = _run(TrakEstimator(options), factory, states, train, test, options)
    ref, _ = trak_brute_force(factory, states, train, test, 32, 1, DAMPING, DEFAULT_OUTPUT)
    assert res.total.dtype == np.float64 and _rel(res.total, ref) <= 1e-3


# ---------------------------------------------------------------- each option does what it says


def test_damping_option_sets_lambda_relative_to_the_mean_kernel_diagonal():
    states = _checkpoints(n=1, seed=7)
    factory = _factory()
    train, test = _examples(12, seed=8, prefix="z"), _examples(3, seed=9, prefix="t")
    # 0.5 with k = 16 > N = 12 (a singular kernel made invertible by the damping); 0 (the plain inverse) with k = 8 < N
    for dim, damping in [(16, 0.5), (8, 0.0)]:
        options = InfluenceOptions(dtype="float64", batch_size=5, projection_dim=dim, projection_seed=2)
        estimator = TrakEstimator(options, damping=damping)
        res, _ = _run(estimator, factory, states, train, test, options)
        ref, lambdas = trak_brute_force(factory, states, train, test, dim, 2, damping, "loss")
        assert _rel(res.total, ref) <= 1e-7
        assert estimator.describe()["relative_damping"] == damping
        assert estimator.describe()["damping"]["1"] == pytest.approx(lambdas[0], rel=1e-9, abs=0)
    # more damping shrinks the scores
    options = InfluenceOptions(dtype="float64", batch_size=5, projection_dim=16, projection_seed=2)
    low, _ = _run(TrakEstimator(options, damping=1e-3), factory, states, train, test, options)
    high, _ = _run(TrakEstimator(options, damping=10.0), factory, states, train, test, options)
    assert np.abs(high.total).max() < np.abs(low.total).max()


def test_zero_damping_on_a_singular_kernel_is_refused():
    states = _checkpoints(n=1, seed=7)
    train, test = _examples(5, seed=8, prefix="z"), _examples(2, seed=9, prefix="t")
    options = InfluenceOptions(dtype="float64", batch_size=5, projection_dim=16)  # rank <= 5 < 16
    with pytest.raises(errors.InfluenceError, match="singular"):
        _run(TrakEstimator(options, damping=0.0), _factory(), states, train, test, options)


def test_projection_dim_and_seed_are_honoured_and_the_default_dimension_applies():
    states = _checkpoints(n=1, seed=3)
    factory = _factory()
    train, test = _examples(8, seed=1, prefix="z"), _examples(3, seed=2, prefix="t")
    totals = {}
    for dim, seed in [(16, 0), (32, 0), (32, 9)]:
        options = InfluenceOptions(dtype="float64", batch_size=4, projection_dim=dim, projection_seed=seed)
        estimator = TrakEstimator(options)
        assert estimator.projection() == {"kind": "countsketch", "dim": dim, "seed": seed}
        res, _ = _run(estimator, factory, states, train, test, options)
        ref, _ = trak_brute_force(factory, states, train, test, dim, seed, DAMPING, DEFAULT_OUTPUT)
        assert _rel(res.total, ref) <= 1e-8
        totals[dim, seed] = res.total
    assert _rel(totals[16, 0], totals[32, 0]) > 1e-3 and _rel(totals[32, 9], totals[32, 0]) > 1e-3
    default = estimator_class("trak")(InfluenceOptions())
    assert default.projection_dim == DEFAULT_DIM and default.projection()["dim"] == DEFAULT_DIM
    assert default.output == DEFAULT_OUTPUT and default.relative_damping == DAMPING


def test_margin_output_weights_the_training_side_by_one_minus_p():
    """TRAK's output: the margin's gradients in the kernel and on both sides, and each training example's
    column multiplied by Q = 1 - p_j (p_j from the softmax); other scores than the loss output's."""
    states = _checkpoints(n=1, seed=11)
    factory = _factory()
    train, test = _examples(8, seed=12, prefix="z"), _examples(3, seed=13, prefix="t")
    options = InfluenceOptions(dtype="float64", batch_size=3, projection_dim=16, projection_seed=4)
    margin, _ = _run(TrakEstimator(options, output="margin"), factory, states, train, test, options)
    loss, _ = _run(TrakEstimator(options, output="loss"), factory, states, train, test, options)
    no_q, _ = trak_brute_force(factory, states, train, test, 16, 4, DAMPING, "margin", weighted=False)
    model = factory(states[0]).double().eval()
    with torch.no_grad():
        p = [float(torch.softmax(model(input_ids=torch.as_tensor(x)[None]).logits[0], 0)[int(y)]) for x, y in zip(train.ids, train.labels)]
    assert _rel(margin.total, no_q * (1.0 - np.array(p))[None, :]) <= 1e-8
    assert _rel(margin.total, loss.total) > 1e-2


def test_the_config_keys_reach_the_estimator_and_concern_only_trak():
    from lingtrace.config.influence import foreign_keys, rerun_keys
    from lingtrace.errors import LingtraceError

    est = estimator_class("trak")(InfluenceOptions(trak_damping=0.25, trak_output="margin"))
    assert (est.relative_damping, est.output) == (0.25, "margin")
    assert (DAMPING, DEFAULT_OUTPUT) == (1.0, "loss")  # the measured default (BENCHMARKS.md, trak)
    assert {"trak_damping", "trak_output"} <= rerun_keys()  # a change recomputes the store
    assert {"trak_damping", "trak_output"} <= foreign_keys("tracin") and not {"trak_damping", "trak_output"} & foreign_keys("trak")
    with pytest.raises(LingtraceError, match="trak_damping"):
        InfluenceOptions(trak_damping=-0.1).validate()
    with pytest.raises(LingtraceError, match="trak_output"):
        InfluenceOptions(trak_output="logit").validate()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="output"):
        TrakEstimator(InfluenceOptions(), output="logit")
    with pytest.raises(ValueError, match="damping"):
        TrakEstimator(InfluenceOptions(), damping=-1.0)


# ---------------------------------------------------------------- the benchmark's premises


@pytest.fixture
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_trak

        yield bench_trak
    finally:
        sys.path.remove(str(BENCH))


def test_a_countsketch_to_k_is_the_fold_of_one_to_a_multiple_of_k(bench):
    rng = np.random.default_rng(0)
    numel = {"a": 300, "b": 1000}
    grads = {n: torch.as_tensor(rng.normal(size=(3, c))) for n, c in numel.items()}
    big = CountSketch(256, 7, numel).sketch_dense(grads).numpy()
    for k in (8, 64, 256):
        np.testing.assert_allclose(bench.fold(big, k), CountSketch(k, 7, numel).sketch_dense(grads).numpy(), rtol=1e-12, atol=1e-12)


def test_bench_kernel_scores_through_the_gram_equal_the_kernel_solve(bench):
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(12, 20)), rng.normal(size=(3, 20))
    lam = 0.1 * np.trace(train.T @ train) / 20
    ref = test @ np.linalg.solve(train.T @ train + lam * np.eye(20), train.T)
    np.testing.assert_allclose(bench.kernel_scores(train, test, 0.1), ref, rtol=1e-9)  # k > N: the N x N Gram
    wide = rng.normal(size=(30, 20))
    ref = test @ np.linalg.solve(wide.T @ wide + 0.1 * np.trace(wide.T @ wide) / 20 * np.eye(20), wide.T)
    np.testing.assert_allclose(bench.kernel_scores(wide, test, 0.1), ref, rtol=1e-9)  # k <= N: the k x k kernel
