"""The influence methods besides tracin, each against an independent computation, and the engine's
protocol: adam-cosine against float64 autograd with AdamW's preconditioner applied by hand (second
moments from a real torch.optim.AdamW), representation against numpy on output_hidden_states."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lingtrace.config.influence import METHODS, InfluenceOptions, Tuning, method_names
from lingtrace.errors import LingtraceError
from lingtrace.influence import errors
from lingtrace.influence.context import Checkpoint
from lingtrace.influence.engine import Engine
from lingtrace.influence.methods import REGISTRY, estimator_class
from lingtrace.influence.methods.adam_cosine import (
    SECOND_MOMENTS_FILE,
    SECOND_MOMENTS_FORMAT,
    AdamCosineEstimator,
)
from lingtrace.influence.methods.representation import RepresentationEstimator
from lingtrace.influence.params import select_params
from lingtrace.influence.plan import GROUP_PREFIX, SCORES, MemorySink
from lingtrace.influence.tracin import TracInResult
from test_influence import PAD, _config, _examples, _flat_grad, _rel


def _run(estimator, factory, checkpoints, train, test, options):
    engine = Engine(estimator, factory, checkpoints, options, Tuning(show_progress=False))
    sink = MemorySink(len(test), len(train))
    engine.run(train, test, sink)
    return TracInResult.from_sink(sink, engine.epochs, train, test, engine.stats), engine


# ---------------------------------------------------------------- adam-cosine


def _state_factory(arch="xlm-roberta"):
    from transformers import AutoModelForSequenceClassification

    def make(directory):
        model = AutoModelForSequenceClassification.from_config(_config(arch))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model

    return make


def _train_with_adamw(tmp_path, arch="xlm-roberta", epochs=2, steps_per_epoch=3, seed=0):
    """A tiny model trained by a real torch.optim.AdamW; after each "epoch" its weights and the
    optimizer's exp_avg_sq (the second-moments file of the training contract) go to a directory."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(_config(arch))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    data = _examples(12, seed=seed + 100, prefix="d")
    names = {p: n for n, p in model.named_parameters()}
    dirs = []
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            idx = torch.randint(0, len(data), (4,))
            loss = 0.0
            for i in idx.tolist():
                x = torch.as_tensor(data.ids[i])[None]
                logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
                loss = loss + torch.nn.functional.cross_entropy(logits, torch.as_tensor([int(data.labels[i])]))
            opt.zero_grad()
            (loss / len(idx)).backward()
            opt.step()
            step += 1
        d = tmp_path / f"epoch-{epoch}"
        d.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
        group = opt.param_groups[0]
        moments = {names[p]: opt.state[p]["exp_avg_sq"].detach().clone() for p in model.parameters() if p in opt.state}
        meta = {
            "step": str(step),
            "beta1": str(group["betas"][0]),
            "beta2": str(group["betas"][1]),
            "eps": str(group["eps"]),
            "lr": str(group["lr"]),
            "weight_decay": str(group["weight_decay"]),
            "format": SECOND_MOMENTS_FORMAT,
        }
        save_file(moments, str(d / SECOND_MOMENTS_FILE), metadata=meta)
        dirs.append(d)
    return dirs


def adam_cosine_brute_force(factory, dirs, train, test):
    """Float64, pair by pair: each example's full gradient (word embeddings included, dense) by
    autograd, multiplied by 1/sqrt(exp_avg_sq / (1 - beta2^step) + eps) read from the file, then cosine."""
    from safetensors import safe_open

    out = np.zeros((len(dirs), len(test), len(train)))
    for e, d in enumerate(dirs):
        model = factory(d).double().eval()
        names = select_params(model).names
        with safe_open(str(d / SECOND_MOMENTS_FILE), framework="pt") as f:
            meta = f.metadata()
            v = torch.cat([f.get_tensor(n).double().reshape(-1) for n in names])
        vhat = v / (1 - float(meta["beta2"]) ** int(meta["step"]))
        r = 1.0 / torch.sqrt(vhat + float(meta["eps"]))
        for i in range(len(test)):
            gt = _flat_grad(model, test.ids[i], test.labels[i], names) * r
            for j in range(len(train)):
                gz = _flat_grad(model, train.ids[j], train.labels[j], names) * r
                out[e, i, j] = float(gt @ gz) / (float(gt.norm()) * float(gz.norm()))
    return out


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_adam_cosine_equals_float64_brute_force(tmp_path, arch):
    dirs = _train_with_adamw(tmp_path, arch)
    factory = _state_factory(arch)
    train, test = _examples(7, seed=1, prefix="z"), _examples(4, seed=2, prefix="t")
    ref = adam_cosine_brute_force(factory, dirs, train, test)
    options = InfluenceOptions(dtype="float64", batch_size=3, breakdown=True)
    estimator = AdamCosineEstimator(options, Tuning(show_progress=False))
    checkpoints = [Checkpoint(d, e + 1) for e, d in enumerate(dirs)]
    estimator.check(checkpoints)
    res, engine = _run(estimator, factory, checkpoints, train, test, options)
    assert engine.stats["gradient_passes"] == (len(train) + len(test)) * len(dirs)
    for e in range(len(dirs)):
        assert _rel(res.per_epoch[e + 1], ref[e]) <= 1e-6
        groups = res.groups[e + 1]
        assert "word_embeddings" in groups and np.abs(groups["word_embeddings"]).max() > 0  # rows preconditioned too
        assert _rel(sum(groups.values()), res.per_epoch[e + 1]) <= 1e-9
    assert _rel(res.total, ref.sum(0)) <= 1e-6
    assert np.all(np.abs(res.total) <= len(dirs) + 1e-9)
    assert estimator.describe()["steps"] == {"1": 3, "2": 6}
    # the preconditioner matters: plain cosine TracIn gives other scores
    plain = _run(estimator_class("tracin")(options), factory, checkpoints, train, test, options)[0]
    assert _rel(plain.total, ref.sum(0)) > 1e-2


def test_adam_cosine_without_second_moments_is_a_clear_error(tmp_path):
    dirs = _train_with_adamw(tmp_path, epochs=1, steps_per_epoch=1)
    (dirs[0] / SECOND_MOMENTS_FILE).unlink()
    estimator = AdamCosineEstimator(InfluenceOptions())
    with pytest.raises(errors.MissingSecondMoments, match="no optimizer second moments.*trained before"):
        estimator.check([Checkpoint(dirs[0], 1)])
    # a file of another format or lacking a parameter is refused too
    save_file({"nothing": torch.zeros(1)}, str(dirs[0] / SECOND_MOMENTS_FILE), metadata={"step": "1", "beta2": "0.999", "eps": "1e-8", "format": "other"})
    with pytest.raises(errors.BadSecondMoments, match="format 'other'"):
        estimator.check([Checkpoint(dirs[0], 1)])
    save_file({"nothing": torch.zeros(1)}, str(dirs[0] / SECOND_MOMENTS_FILE), metadata={"step": "1", "beta2": "0.999", "eps": "1e-8", "format": SECOND_MOMENTS_FORMAT})
    options = InfluenceOptions(batch_size=4)
    with pytest.raises(errors.BadSecondMoments, match="no second moments for"):
        _run(AdamCosineEstimator(options, Tuning(show_progress=False)), _state_factory(), [Checkpoint(dirs[0], 1)], _examples(2, 0), _examples(1, 1), options)


# ---------------------------------------------------------------- representation


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_representation_equals_numpy_on_hidden_states(arch):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(3)
    states = []
    model = AutoModelForSequenceClassification.from_config(_config(arch))
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in model.state_dict().items()})

    def factory(state):
        m = AutoModelForSequenceClassification.from_config(_config(arch))
        m.load_state_dict(state)
        return m

    train, test = _examples(9, seed=4, prefix="z"), _examples(5, seed=5, prefix="t")
    final = 1  # the final model is not the last checkpoint (early stopping)
    checkpoints = [Checkpoint(s, e + 1, final=(e == final)) for e, s in enumerate(states)]
    options = InfluenceOptions(dtype="float64", batch_size=4)
    res, engine = _run(RepresentationEstimator(options), factory, checkpoints, train, test, options)
    assert list(res.per_epoch) == [final + 1]  # the final checkpoint only
    assert engine.stats["forward_passes"] == len(train) + len(test)

    ref_model = factory(states[final]).double().eval()

    def hidden(ex):  # each example alone, unpadded, through the model's ordinary forward
        rows = []
        with torch.no_grad():
            for ids in ex.ids:
                x = torch.as_tensor(ids)[None]
                out = ref_model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True)
                rows.append(out.hidden_states[-1][0, 0].numpy())
        return np.stack(rows)

    h_test, h_train = hidden(test), hidden(train)
    expected = (h_test / np.linalg.norm(h_test, axis=1, keepdims=True)) @ (h_train / np.linalg.norm(h_train, axis=1, keepdims=True)).T
    np.testing.assert_allclose(res.total, expected, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(res.test_norm[final + 1], np.linalg.norm(h_test, axis=1), rtol=1e-9)


# ---------------------------------------------------------------- trak


def test_trak_equals_numpy_on_sketched_autograd_gradients():
    """phi_test^T (Phi^T Phi + lambda I)^-1 phi_train per checkpoint, summed, with Phi the CountSketch
    of float64 autograd gradients (word embeddings as dense rows) and the kernel solved by numpy."""
    from lingtrace.influence.methods.trak import DAMPING, TrakEstimator
    from lingtrace.influence.projection import CountSketch
    from lingtrace.influence.sparse import SparseRows
    from test_influence import _checkpoints, _factory

    states = _checkpoints(n=2, seed=13)
    factory = _factory()
    train, test = _examples(9, seed=3, prefix="z"), _examples(4, seed=4, prefix="t")
    dim = 64
    options = InfluenceOptions(dtype="float64", batch_size=4, projection_dim=dim, projection_seed=5)
    res, engine = _run(TrakEstimator(options), factory, [Checkpoint(s, e + 1) for e, s in enumerate(states)], train, test, options)
    assert engine.stats["gradient_passes"] == (2 * len(train) + len(test)) * 2  # the kernel takes one more pass

    expected = np.zeros((len(test), len(train)))
    for state in states:
        model = factory(state).double().eval()
        sel = select_params(model)
        sketch = CountSketch(dim, 5, {n: sel.numel[n] for n in sel.dense_names})
        params = dict(model.named_parameters())

        def phi(ids, label):
            full = _flat_grad(model, ids, label, sel.names)
            grads, offset = {}, 0
            for n in sel.names:
                grads[n] = full[offset : offset + sel.numel[n]].reshape(params[n].shape)
                offset += sel.numel[n]
            out = sketch.sketch_dense({n: grads[n].reshape(1, -1) for n in sel.dense_names})
            word = grads[sel.word_embedding]
            tokens = torch.nonzero(word.abs().sum(1)).squeeze(1)
            sketch.sketch_sparse(SparseRows(torch.zeros_like(tokens), tokens, word[tokens], 1), out=out)
            return out[0].numpy()

        big_phi = np.stack([phi(x, y) for x, y in zip(train.ids, train.labels)])
        test_phi = np.stack([phi(x, y) for x, y in zip(test.ids, test.labels)])
        kernel = big_phi.T @ big_phi
        kernel += DAMPING * np.trace(kernel) / dim * np.eye(dim)
        expected += test_phi @ np.linalg.solve(kernel, big_phi.T)
    assert _rel(res.total, expected) <= 1e-8


# ---------------------------------------------------------------- the protocol and the registry


def test_registry_names_its_classes_and_every_method_validates():
    assert method_names()[0] == "tracin" and set(REGISTRY) == {"tracin", "adam-cosine", "representation", "trak", "ekfac"}
    assert tuple(REGISTRY) == METHODS  # the config's method names and the registry's entries are the same, in order
    for name in method_names():
        assert estimator_class(name).name == name
    with pytest.raises(LingtraceError, match="unknown influence method 'nope'"):
        InfluenceOptions(methods=["tracin", "nope"]).validate()
    with pytest.raises(LingtraceError, match="duplicates"):
        InfluenceOptions(methods=["tracin", "tracin"]).validate()


def test_engine_raises_plain_exceptions():
    from test_influence import _checkpoints, _factory

    options = InfluenceOptions(batch_size=2)
    estimator = estimator_class("tracin")(options)
    with pytest.raises(errors.NoCheckpoints):
        Engine(estimator, _factory(), [], options)

    def broken(_):
        raise OSError("truncated file")

    engine = Engine(estimator, broken, [Checkpoint("ckpt", 1)], options, Tuning(show_progress=False))
    with pytest.raises(errors.CheckpointLoadError, match="cannot load checkpoint ckpt: OSError: truncated file") as info:
        engine.run(_examples(2, 0), _examples(1, 1), MemorySink(1, 2))
    assert not isinstance(info.value, LingtraceError)
    engine = Engine(estimator, _factory(), [Checkpoint(s, 1) for s in _checkpoints(n=1)], options, Tuning(show_progress=False))
    with pytest.raises(errors.NoExamples):
        engine.run(_examples(0, 0), _examples(1, 1), MemorySink(1, 0))


def test_the_api_turns_engine_errors_into_lingtrace_errors_with_a_fix():
    import pandas as pd

    from lingtrace.influence.tracin import TracIn
    from test_influence import _checkpoints, _factory

    tracin = TracIn(_factory(), _checkpoints(n=1), show_progress=False)
    with pytest.raises(LingtraceError, match="examples lack column 'label' .*fix: give text_a and label columns"):
        tracin.scores(pd.DataFrame({"text_a": ["x"]}), pd.DataFrame({"text_a": ["y"]}), tokenizer=None)
    with pytest.raises(LingtraceError, match="no checkpoints .*fix: train the model first"):
        TracIn(_factory(), [])


def test_pad_id_defaults_to_the_model_config():
    """Without a pad id the engine pads with the model's: the same scores as with it given."""
    from test_influence import _checkpoints, _factory

    states = _checkpoints(n=1, seed=9)
    options = InfluenceOptions(dtype="float64", batch_size=3)
    train, test = _examples(5, seed=1), _examples(3, seed=2)
    runs = []
    for pad in (None, PAD):
        engine = Engine(estimator_class("tracin")(options), _factory(), [Checkpoint(states[0], 1)], options, Tuning(show_progress=False))
        sink = MemorySink(len(test), len(train))
        engine.run(train, test, sink, pad_id=pad)
        runs.append(sink.mats[1][SCORES])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert any(k.startswith(GROUP_PREFIX) for k in sink.mats[1])  # the breakdown is on by default
