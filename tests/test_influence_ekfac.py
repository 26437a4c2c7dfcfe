"""ekfac (EK-FAC influence functions through kronfluence 1.0.1): the engine's scores against kronfluence
driven directly through its public API (the same matrix) and against EK-FAC built by hand in float64;
the stage's store, options, work files and resumption; warnings; the error without kronfluence."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from importlib import metadata

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from lingtrace.config import apply_overrides
from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.errors import LingtraceError
from lingtrace.influence import store
from lingtrace.influence.context import Checkpoint
from lingtrace.influence.engine import Engine
from lingtrace.influence.errors import MissingDependency
from lingtrace.influence.methods import estimator_class
from lingtrace.influence.methods.ekfac import EkfacEstimator, quiet_kronfluence
from lingtrace.influence.plan import SCORES, MemorySink
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json
from lingtrace.pipeline import run_stages
from test_influence import PAD, _checkpoints, _examples, _factory, _rel

needs_kronfluence = pytest.mark.skipif(
    importlib.util.find_spec("kronfluence") is None,
    reason='kronfluence is not installed (pip install --no-deps "kronfluence==1.0.1", see the README)',
)
BATCH = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two contending ones (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    states = _checkpoints(n=2, seed=3)
    # 40 training examples: with fewer, some layer's factors are near-degenerate here and EK-FAC itself moves
    # by 1e-8 under a 1e-13 change of the weights (with 40: 3e-14), too ill-conditioned to compare by hand
    train, test = _examples(40, seed=11, prefix="z", max_len=10), _examples(5, seed=12, prefix="t")
    assert len(set(train.lengths)) > 1  # batches are padded
    return states, train, test


def _engine_scores(states, train, test, sort=True, **options):
    options = InfluenceOptions(methods=["ekfac"], dtype="float64", batch_size=BATCH, test_chunk=2, **options)
    estimator = EkfacEstimator(options)
    checkpoints = [Checkpoint(s, e, final=(e == len(states))) for e, s in enumerate(states, 1)]
    tuning = Tuning(show_progress=False, shard_size=7, sort_by_length=sort)
    engine = Engine(estimator, _factory(), checkpoints, options, tuning, device="cpu")
    sink = MemorySink(len(test), len(train))
    engine.run(train, test, sink)
    return {e: m[SCORES] for e, m in sink.mats.items()}, estimator, sink


# ---------------------------------------------------------------- kronfluence driven directly


def _pad(items):
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, _) in enumerate(items):
        input_ids[row, : len(ids)] = torch.as_tensor(ids)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": torch.tensor([label for _, label in items])}


def _direct_task(modules, measurement):
    from kronfluence.task import Task

    class DirectTask(Task):
        """kronfluence's text-classification Task (its GLUE example) on dict batches, written here."""

        def __init__(self):
            self.generator = torch.Generator().manual_seed(0)

        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"]
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=self.generator).flatten()
            return functional.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            if measurement == "loss":
                return functional.cross_entropy(logits, batch["labels"], reduction="sum")
            margins = [row[y] - torch.logsumexp(torch.cat([row[:y], row[y + 1 :]]), 0) for row, y in zip(logits, batch["labels"].tolist())]
            return -torch.stack(margins).sum()

        def get_influence_tracked_modules(self):
            return modules

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return DirectTask()


def kronfluence_directly(state, train, test, work, measurement="margin", damping=None):
    """[test x train] from kronfluence's public API: fit_all_factors and compute_pairwise_scores, the
    training set in the order the engine batches it (by length) and put back in dataset order."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    model = _factory()(state).double().eval()
    model.set_attn_implementation("eager")  # as the engine runs it
    modules = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    order = np.argsort(train.lengths, kind="stable")
    train_items = [(train.ids[i], int(train.labels[i])) for i in order]
    test_items = [(ids, int(y)) for ids, y in zip(test.ids, test.labels)]
    f64 = torch.float64
    task = _direct_task(modules, measurement)
    with quiet_kronfluence():
        model = prepare_model(model, task)
        analyzer = Analyzer("direct", model, task, cpu=True, disable_tqdm=True, output_dir=str(work))
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=_pad))
        factor_args = FactorArguments(
            strategy="ekfac", covariance_max_examples=None, lambda_max_examples=None, activation_covariance_dtype=f64,
            gradient_covariance_dtype=f64, per_sample_gradient_dtype=f64, lambda_dtype=f64,
        )
        analyzer.fit_all_factors("factors", train_items, per_device_batch_size=BATCH, factor_args=factor_args, overwrite_output_dir=True)
        score_args = ScoreArguments(damping_factor=damping, per_sample_gradient_dtype=f64, precondition_dtype=f64, score_dtype=f64)
        analyzer.compute_pairwise_scores(
            "scores", "factors", test_items, train_items, per_device_query_batch_size=len(test_items),
            per_device_train_batch_size=BATCH, score_args=score_args, overwrite_output_dir=True,
        )
        scores = analyzer.load_pairwise_scores("scores")["all_modules"].numpy()
    out = np.empty_like(scores)
    out[:, order] = scores
    return out


@needs_kronfluence
def test_engine_equals_kronfluence_driven_directly_at_every_checkpoint(data, tmp_path):
    states, train, test = data
    got, estimator, sink = _engine_scores(states, train, test)
    for epoch, state in enumerate(states, 1):
        want = kronfluence_directly(state, train, test, tmp_path / f"direct-{epoch}")
        assert got[epoch].shape == (len(test), len(train))
        assert _rel(got[epoch], want) < 1e-12, epoch
    # the test norms are those of the preconditioned test gradients; training norms are not computed
    assert np.all(sink.test_norm[1] > 0) and np.all(np.isnan(sink.train_norm[1]))
    info = estimator.describe()
    assert info["tracked_modules"] == 14 and set(info["seconds"]["2"]) == {"covariance", "eigendecomposition", "lambda"}
    assert "roberta.embeddings.word_embeddings.weight" in info["left_out"] and any("LayerNorm" in n for n in info["left_out"])


@needs_kronfluence
def test_loss_measurement_and_fixed_damping_equal_kronfluence_driven_directly(data, tmp_path):
    states, train, test = data
    got, _, _ = _engine_scores(states, train, test, ekfac_measurement="loss", ekfac_damping=1e-3, ekfac_final_only=True)
    assert list(got) == [2]
    assert _rel(got[2], kronfluence_directly(states[1], train, test, tmp_path, "loss", 1e-3)) < 1e-12


# ---------------------------------------------------------------- EK-FAC by hand (float64, no kronfluence)


def _linear_params(model, modules):
    named = dict(model.named_modules())
    return [p for m in modules for p in (named[m].weight, named[m].bias) if p is not None]


def _per_example_gradients(model, modules, ids_list, labels, measurement=None):
    """{module: [n, out, in + 1]}: [weight | bias] gradient of each example's loss (or measurement), one
    unpadded example per autograd pass."""
    params = _linear_params(model, modules)
    out = {m: [] for m in modules}
    for ids, label in zip(ids_list, labels):
        x = torch.as_tensor(ids)[None]
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
        y = int(label)
        if measurement == "margin":
            value = -(logits[y] - torch.logsumexp(torch.cat([logits[:y], logits[y + 1 :]]), 0))
        else:
            value = functional.cross_entropy(logits[None], torch.tensor([y]))
        grads = iter(torch.autograd.grad(value, params))
        for m in modules:
            w, b = next(grads), next(grads)
            out[m].append(torch.cat([w, b[:, None]], dim=1))
    return {m: torch.stack(v) for m, v in out.items()}


def ekfac_by_hand(model, train, test, measurement="margin"):
    """EK-FAC from scratch: labels sampled batch by batch (generator seeded 0, the covariance pass, then the
    eigenvalue pass); A = sum a a^T / tokens (a 1 appended for the bias, zero on padding) and S = sum g g^T /
    tokens from hooks; eigenbases; Lambda = mean_n (Q_S^T G_n Q_A)^2 over per-example gradients; damping
    0.1 mean(Lambda) per layer; score = <Q_S [(Q_S^T G_test Q_A) / (Lambda + damping)] Q_A^T, G_train>."""
    modules = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    named = dict(model.named_modules())
    generator = torch.Generator().manual_seed(0)
    batches = [list(range(s, min(s + BATCH, len(train)))) for s in range(0, len(train), BATCH)]

    def sampled_labels():
        labels = []
        for idx in batches:
            b = _pad([(train.ids[i], 0) for i in idx])
            with torch.no_grad():
                probs = torch.softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, -1)
            labels += torch.multinomial(probs, 1, generator=generator).flatten().tolist()
        return labels

    cov_labels, lam_labels = sampled_labels(), sampled_labels()
    sums = {m: {"A": 0.0, "S": 0.0, "n": 0} for m in modules}
    mask = {}

    def hook(name):
        def forward(module, inputs, output):
            a, keep = inputs[0].detach(), mask["now"]
            if a.dim() == 3:
                a = torch.cat([a, torch.ones_like(a[..., :1])], -1) * keep[..., None]
                count = int(keep.sum())
            else:
                a, count = torch.cat([a, torch.ones_like(a[..., :1])], -1), a.shape[0]
            sums[name]["A"] = sums[name]["A"] + a.reshape(-1, a.shape[-1]).T @ a.reshape(-1, a.shape[-1])
            sums[name]["n"] += count

            def backward(grad):
                g = grad.detach() * keep[..., None] if grad.dim() == 3 else grad.detach()
                sums[name]["S"] = sums[name]["S"] + g.reshape(-1, g.shape[-1]).T @ g.reshape(-1, g.shape[-1])

            output.register_hook(backward)

        return forward

    handles = [named[m].register_forward_hook(hook(m)) for m in modules]
    for idx in batches:
        b = _pad([(train.ids[i], cov_labels[i]) for i in idx])
        mask["now"] = b["attention_mask"]
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        functional.cross_entropy(logits, b["labels"], reduction="sum").backward()
    for h in handles:
        h.remove()
    g_fisher = _per_example_gradients(model, modules, train.ids, lam_labels)
    g_train = _per_example_gradients(model, modules, train.ids, train.labels)
    g_test = _per_example_gradients(model, modules, test.ids, test.labels, measurement)
    total = 0.0
    for m in modules:
        _, q_a = torch.linalg.eigh(sums[m]["A"] / sums[m]["n"])
        _, q_s = torch.linalg.eigh(sums[m]["S"] / sums[m]["n"])
        lam = ((q_s.T @ g_fisher[m] @ q_a) ** 2).mean(0)
        pre = q_s @ ((q_s.T @ g_test[m] @ q_a) / (lam + 0.1 * lam.mean())) @ q_a.T
        total = total + torch.einsum("qoi,noi->qn", pre, g_train[m])
    return total.numpy()


@needs_kronfluence
def test_engine_equals_ekfac_by_hand(data):
    states, train, test = data
    got, _, _ = _engine_scores(states, train, test, sort=False, ekfac_final_only=True)
    model = _factory()(states[1]).double().eval()
    model.set_attn_implementation("eager")  # as the engine runs it
    want = ekfac_by_hand(model, train, test)
    assert _rel(got[2], want) < 1e-10
    # EK-FAC is not the plain gradient dot product (the agreement above is not trivial)
    model = _factory()(states[1]).double().eval()
    modules = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    g_train = _per_example_gradients(model, modules, train.ids, train.labels)
    g_test = _per_example_gradients(model, modules, test.ids, test.labels, "margin")
    dot = sum(torch.einsum("qoi,noi->qn", g_test[m], g_train[m]) for m in modules).numpy()
    assert _rel(dot, want) > 0.1


# ---------------------------------------------------------------- through the stage


@pytest.fixture
def trained_run(tiny_run):
    run, cfg = tiny_run
    cfg = apply_overrides(cfg, ["train.epochs=1", "select.per_lang=1", "influence.batch_size=6"])
    run.save_config(cfg)
    run_stages(run, cfg, ["train", "select"])
    return run, cfg


@needs_kronfluence
def test_stage_store_resume_work_files_and_other_methods_untouched(trained_run, monkeypatch):
    run, cfg = trained_run
    cfg = apply_overrides(cfg, ["influence.methods=[representation,ekfac]"])
    real_put = store.StoreWriter.put
    seen = {"n": 0}

    def crash_in_ekfac(self, part):
        if self.directory.name == "ekfac":
            raise KeyboardInterrupt
        real_put(self, part)

    monkeypatch.setattr(store.StoreWriter, "put", crash_in_ekfac)
    with pytest.raises(KeyboardInterrupt):
        run_stages(run, cfg, ["influence"])
    work = run.influence_store("ekfac") / "work"
    kept = list(work.iterdir())  # the checkpoint's factors, complete: a rerun uses them
    assert len(kept) == 1 and kept[0].name.startswith("epoch-1-") and (kept[0] / "complete.json").exists()

    def counting_put(self, part):
        seen["n"] += 1
        real_put(self, part)

    monkeypatch.setattr(store.StoreWriter, "put", counting_put)
    run_stages(run, cfg, ["influence"])
    meta = read_json(run.influence_store("ekfac") / "meta.json")
    assert meta["complete"] and meta["mode"] == "preconditioned-dot" and meta["epochs"] == [1]
    info = meta["method_info"]
    # the factors fitted before the interruption (their seconds recorded then) were reused
    assert info["seconds"]["1"]["reused"] is True and info["seconds"]["1"]["lambda"] >= 0
    assert info["left_out"] and info["tracked_modules"] > 0
    assert not work.exists()  # deleted once every checkpoint is scored
    scores = load_scores(run, method="ekfac")
    assert scores.shape == (len(scores.test_uids), len(scores.train_uids)) and np.isfinite(scores.total()).all()

    # an ekfac option leaves the other methods' stores as they are: only ekfac is recomputed
    representation = run.influence_store("representation") / "epoch-1.safetensors"
    stamp = representation.stat().st_mtime_ns
    damped = apply_overrides(cfg, ["influence.ekfac_damping=0.5"])
    with pytest.raises(LingtraceError, match="different config"):
        run_stages(run, damped, ["influence"])
    run_stages(run, damped, ["influence"], overwrite=True)
    assert read_json(run.influence_store("ekfac") / "meta.json")["method_info"]["damping"] == 0.5
    assert representation.stat().st_mtime_ns == stamp
    assert not np.allclose(load_scores(run, method="ekfac").total(), scores.total())


# ---------------------------------------------------------------- warnings, logging, errors


@needs_kronfluence
def test_only_kronfluences_gradscaler_warning_and_info_logging_are_silenced(data, caplog):
    states, train, test = data
    root = logging.getLogger().level
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        _engine_scores(states[:1], train.subset(range(6)), test.subset(range(2)))
        with quiet_kronfluence():
            warnings.warn("an unrelated FutureWarning", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("GradScaler" in m for m in messages), messages
    assert "an unrelated FutureWarning" in messages
    assert not [r for r in caplog.records if r.name.startswith("kronfluence")]
    assert logging.getLogger().level == root and logging.getLogger("kronfluence").level == logging.NOTSET


def test_missing_or_other_kronfluence_is_a_clear_error_before_any_work(tiny_run, monkeypatch):
    real_version = metadata.version
    installed = {"kronfluence": "1.0.0"}

    def version(name):
        if name not in installed:
            return real_version(name)
        if installed[name] is None:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(metadata, "version", version)
    estimator = estimator_class("ekfac")(InfluenceOptions(methods=["ekfac"]))
    with pytest.raises(MissingDependency, match="needs kronfluence 1.0.1, found 1.0.0"):
        estimator.check([Checkpoint("ckpt", 1)])
    installed["kronfluence"] = None
    run, cfg = tiny_run
    cfg = apply_overrides(cfg, ["train.epochs=1", "influence.methods=[tracin,ekfac]"])
    run_stages(run, cfg, ["train", "select"])
    fix = r'fix: pip install -e "\.\[ekfac\]" && pip install --no-deps "kronfluence==1\.0\.1"'
    with pytest.raises(LingtraceError, match=r"needs kronfluence 1\.0\.1, which is not installed.*" + fix):
        run_stages(run, cfg, ["influence"])
    assert not (run.influence_store("tracin") / "meta.json").exists()  # nothing was computed


def test_ekfac_options_are_validated_and_belong_to_ekfac_alone():
    from lingtrace.config.influence import foreign_keys

    with pytest.raises(LingtraceError, match="ekfac_damping must be at least 0"):
        InfluenceOptions(ekfac_damping=-1.0).validate()
    with pytest.raises(LingtraceError, match="unknown influence ekfac measurement 'x'"):
        InfluenceOptions(ekfac_measurement="x").validate()
    assert {"ekfac_damping", "ekfac_measurement", "ekfac_final_only"} <= foreign_keys("tracin")
    assert not foreign_keys("ekfac") & {"ekfac_damping", "ekfac_measurement", "ekfac_final_only"}


def test_ekfac_measures_the_objectives_margin_and_refuses_an_objective_without_class_logits():
    """The kronfluence task takes its logits from the objective (encoder or decoder classifier alike) and its
    measurement is minus the shared correct-class margin; a causal LM (no class logits on a batch) is refused
    with the reason."""
    from transformers import LlamaForSequenceClassification

    from lingtrace.evaluation import correct_class_margin
    from lingtrace.influence.errors import UnsupportedModel
    from lingtrace.influence.methods.ekfac import _task_class
    from lingtrace.models.prompts import PromptFormat
    from lingtrace.objectives import CausalLMObjective, DecoderClassificationObjective
    from support.tiny import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(num_labels=3)).double().eval()
    objective = DecoderClassificationObjective()
    ids = [np.array([5, 6, 7, 8]), np.array([9, 10]), np.array([11, 12, 13])]
    batch = objective.collate(ids, np.array([0, 2, 1]), pad_id=0)  # left-padded, as the engine batches decoders
    task = _task_class()(objective, [], "margin")
    mapping = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}
    with torch.no_grad():
        # the logits of each example alone (no padding) give the margins by the numpy definition
        alone = np.stack([model(input_ids=torch.as_tensor(x)[None]).logits[0].numpy() for x in ids])
        want = -correct_class_margin(alone, batch.labels.numpy()).sum()
        got = task.compute_measurement(mapping, model)
        loss = task.compute_train_loss(mapping, model)
    assert float(got) == pytest.approx(want, rel=1e-10)
    want_loss = torch.nn.functional.cross_entropy(torch.from_numpy(alone), batch.labels, reduction="sum")
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-10)

    lm = CausalLMObjective(PromptFormat("unused"), {})
    assert lm.no_batch_logits and "verbalisation" in lm.no_batch_logits
    with pytest.raises(UnsupportedModel, match="verbalisation"):
        lm.batch_logits(model, batch)
    estimator = EkfacEstimator(InfluenceOptions(methods=["ekfac"]), Tuning(show_progress=False))

    class Ctx:
        objective = lm

    with pytest.raises(UnsupportedModel, match="the ekfac method needs class logits of a batch: a causal LM"):
        estimator.prepare(Ctx())
