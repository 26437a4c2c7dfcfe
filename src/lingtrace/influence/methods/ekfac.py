"""``ekfac``: EK-FAC influence functions (George et al. 2018; Grosse et al. 2023) through kronfluence 1.0.1.

At each checkpoint (or the final model alone, ``influence.ekfac_final_only``) the Fisher of the mean
training loss over the tracked layers is approximated layer by layer with EK-FAC, fitted on the
training set: the Kronecker factors A (input activations, bias column appended) and S (output
gradients), both averaged over tokens, their eigenbases Q_A, Q_S, and the corrected eigenvalues
Lambda = mean over training examples of (Q_S^T G_n Q_A)^2. Then

    score(z, z_test) = grad f(z_test)^T (G + lambda I)^-1 grad L(z)

summed over checkpoints, with L(z) the training example's own cross-entropy and f the test
example's measurement (``influence.ekfac_measurement``):

* ``margin`` (default): minus the correct-class margin z_y - logsumexp_{k != y} z_k (kronfluence's
  classification examples, taken from TRAK; what the LDS experiment measures on retrained models);
* ``loss``: the test example's cross-entropy, what TracIn differentiates.

Per test example the two are proportional: grad CE = (1 - p_y) grad(-margin), so both rank the
training examples identically; they differ by the weight (1 - p_y) of each test example at each
checkpoint in sums over checkpoints or test examples. A positive score means a (preconditioned)
gradient step on z raises the margin / lowers the test loss: a proponent, as for TracIn.

Damping: ``influence.ekfac_damping`` unset uses kronfluence's heuristic, lambda = 0.1 x the mean of
each layer's corrected eigenvalues (per layer, scale-free); a float sets lambda for every layer
(kronfluence's own default, 1e-8, is practically undamped). The factors use the true Fisher: labels
sampled from the model's own softmax with a generator seeded with ``FISHER_SEED`` at each checkpoint,
so they are reproducible and independent of the global random state.

Only ``nn.Linear`` layers are tracked (weights and biases; with ``influence.params`` only the Linear
layers whose weight is selected): every other trained parameter (embeddings, LayerNorm, ...) is left
out, and the store's ``method_info`` lists them (``left_out``). Cost per checkpoint: two passes over
the training set to fit the factors (covariances, then the corrected eigenvalues, which takes
per-example gradients), an eigendecomposition per layer, then one pass over the test and the
training examples to score: (3N + M) per-example passes per checkpoint.

kronfluence is an optional dependency (the ``ekfac`` extra and ``pip install --no-deps
"kronfluence==1.0.1"``, see the README), imported only when this method runs. Its factors are
written under ``RUN/influence/ekfac/work/`` (one directory per checkpoint, named by the store's
fingerprint and the checkpoint; reused when a rerun finds it complete, cleared otherwise, deleted
once the checkpoint is scored). kronfluence runs in this process only (no torchrun sharding); its
known GradScaler FutureWarning and its INFO logging are silenced around its calls, nothing else.
The stores' ``test_norm`` is the norm of the preconditioned test gradient; ``train_norm`` is NaN
(kronfluence never materialises the training gradients: it contracts them with the test gradients
directly). The engine's ``products`` seconds include the training gradients.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence.errors import MissingDependency, NoParametersSelected, UnsupportedModel
from lingtrace.influence.methods.base import BlockScores, Estimator, Memory, Resident
from lingtrace.influence.plan import SCORES
from lingtrace.io import read_json, write_json
from lingtrace.objectives import Batch, Objective, correct_class_margin

log = logging.getLogger(__name__)

KRONFLUENCE_VERSION = "1.0.1"
MEASUREMENTS = ("margin", "loss")
#: seed of the labels sampled for the true Fisher, re-seeded at every checkpoint
FISHER_SEED = 0
#: kronfluence's name of the fitted factors inside its analysis directory
FACTORS = "factors"
#: the file that marks a checkpoint's factors as whole (holds the key they were fitted for)
COMPLETE = "complete.json"
# kronfluence 1.0.1 builds torch.cuda.amp.GradScaler(...) in every factor pass; torch >= 2.4 warns
_GRADSCALER_WARNING = r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated"


def check_kronfluence() -> None:
    """Raise ``MissingDependency`` unless kronfluence 1.0.1 and its run-time dependencies import."""
    from importlib import metadata

    try:
        version = metadata.version("kronfluence")
    except metadata.PackageNotFoundError as e:
        raise MissingDependency(f"the ekfac method needs kronfluence {KRONFLUENCE_VERSION}, which is not installed") from e
    if version != KRONFLUENCE_VERSION:
        raise MissingDependency(f"the ekfac method needs kronfluence {KRONFLUENCE_VERSION}, found {version}")
    try:
        import kronfluence.analyzer  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"kronfluence {KRONFLUENCE_VERSION} does not import: {e}") from e


@contextlib.contextmanager
def quiet_kronfluence() -> Iterator[None]:
    """Silence only kronfluence's known GradScaler FutureWarning and its INFO logging (its Analyzer logs
    ``locals()``, the whole model). Never pass ``log_level`` to its Analyzer: that sets the root logger's
    level too."""
    logger = logging.getLogger("kronfluence")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_GRADSCALER_WARNING, category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


@functools.cache
def _task_class() -> type:
    """kronfluence's Task on lingtrace batches for an objective with class logits (``Objective.batch_logits``:
    the encoder and decoder classifiers), defined on first use so that importing this module does not
    import kronfluence."""
    from kronfluence.task import Task

    class SequenceClassifierTask(Task):
        """Batch losses are sums over examples (kronfluence splits them per example): the training loss is
        the cross-entropy, with labels sampled from the model's softmax for the true Fisher (``sample``),
        and the measurement the negative margin or the cross-entropy."""

        def __init__(self, objective: Objective, tracked: list[str], measurement: str):
            self.objective = objective
            self.tracked = list(tracked)
            self.measurement = measurement
            self.generator = torch.Generator().manual_seed(FISHER_SEED)

        def logits(self, batch, model) -> torch.Tensor:
            return self.objective.batch_logits(model, Batch(batch["input_ids"], batch["attention_mask"], batch["labels"]))

        def compute_train_loss(self, batch, model, sample=False):
            logits = self.logits(batch, model)
            labels = batch["labels"]
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach().to(torch.float64), dim=-1).cpu()
                    labels = torch.multinomial(probs, 1, generator=self.generator).flatten().to(logits.device)
            return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model):
            logits = self.logits(batch, model)
            if self.measurement == "loss":
                return torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")
            return -correct_class_margin(logits, batch["labels"]).sum()

        def get_influence_tracked_modules(self):
            return self.tracked

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return SequenceClassifierTask


class _StreamedBatches(torch.utils.data.Dataset):
    """The engine's batches of the training set as a dataset of batches, read in order by kronfluence's
    sequential DataLoader (batch size 1, unwrapped by ``_only``): the batching, padding, pass counts and
    progress bar are the engine's."""

    def __init__(self, stream: Iterator, count: int):
        self.stream = iter(stream)
        self.count = count
        self.position = 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if index != self.position:
            raise IndexError(f"streamed batches are read in order (asked for {index}, at {self.position})")
        self.position += 1
        return next(self.stream)[1]


def as_mapping(batch: Batch) -> dict[str, torch.Tensor]:
    """A lingtrace batch as the mapping kronfluence's loops take (they find the batch size in it)."""
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}


def _only(items: list) -> dict[str, torch.Tensor]:
    return as_mapping(items[0])


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as the ``cuda:N`` it stands for (kronfluence's State says ``cuda``)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass
class EkfacResident(Resident):
    #: the chunk's preconditioned test gradients, per tracked module ([m, out, in + 1])
    gradients: dict[str, torch.Tensor]


class EkfacEstimator(Estimator):
    name = "ekfac"
    ignores = frozenset({"mode", "lr_weighted", "breakdown", "projection_dim", "projection_seed"})

    def __init__(self, options: InfluenceOptions, tuning: Tuning | None = None):
        super().__init__(options, tuning)
        self.damping = options.ekfac_damping
        self.measurement = options.ekfac_measurement
        if self.measurement not in MEASUREMENTS:
            raise ValueError(f"ekfac measurement must be one of {', '.join(MEASUREMENTS)}")
        self.work_root: Path | None = None
        self.store_key: str | None = None
        self._temporary = False
        self.model: nn.Module | None = None
        # what the store's method_info holds (filled as checkpoints are prepared)
        self.info: dict[str, Any] = {
            "library": f"kronfluence {KRONFLUENCE_VERSION}",
            "strategy": "ekfac",
            "fisher": f"true Fisher (labels sampled from the model, seed {FISHER_SEED} at each checkpoint)",
            "damping": "heuristic: 0.1 x the mean corrected eigenvalue of each layer" if self.damping is None else float(self.damping),
            "measurement": self.measurement,
            "checkpoints": "final" if options.ekfac_final_only else "each",
            "tracked": "nn.Linear layers (weights and biases)",
            "tracked_modules": None,
            "tracked_params": None,
            "left_out": None,
            "left_out_params": None,
            "seconds": {},
        }

    @property
    def mode(self) -> str:
        return "preconditioned-dot"

    def describe(self):
        return self.info  # the store's meta holds this dict: what prepare adds reaches meta.json

    def bind_store(self, directory, fingerprint):
        self.work_root = Path(directory) / "work"
        self.store_key = fingerprint

    def select_checkpoints(self, checkpoints):
        if self.options.ekfac_final_only:
            final = [c for c in checkpoints if c.final]
            return final[-1:] or checkpoints[-1:]
        return checkpoints

    def check(self, checkpoints):
        check_kronfluence()
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            raise UnsupportedModel("the ekfac method runs in one process: kronfluence fits its factors on the whole training set")

    # -- a checkpoint --------------------------------------------------------------
    def prepare(self, ctx):
        if ctx.objective.no_batch_logits:  # the loss with sampled labels and the margin need class logits
            raise UnsupportedModel(f"the ekfac method needs class logits of a batch: {ctx.objective.no_batch_logits}")
        check_kronfluence()
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.utils.dataset import DataLoaderKwargs

        self.ctx = ctx
        tracked, left_out = self._tracked(ctx)
        self.task = _task_class()(ctx.objective, tracked, self.measurement)
        modules = dict(ctx.model.named_modules())
        self.tracked_numel = sum(p.numel() for name in tracked for p in modules[name].parameters())
        self.layer_width = max(max(modules[name].in_features, modules[name].out_features) for name in tracked)
        self.n_layers = len(tracked)
        self.info.update(
            tracked_modules=len(tracked),
            tracked_params=self.tracked_numel,
            left_out=left_out,
            left_out_params=sum(ctx.tracked.numel[n] for n in left_out),
        )
        if ctx.train is None:  # only planning: the sizes are known
            self.model = None
            return
        with quiet_kronfluence():
            self.model = prepare_model(ctx.model, self.task)
            self.analyzer = Analyzer(
                analysis_name=f"epoch-{ctx.epoch}",
                model=self.model,
                task=self.task,
                cpu=ctx.device.type == "cpu",
                disable_tqdm=True,
                output_dir=str(self._work_dir(ctx)),
                disable_model_save=True,
            )
        if _indexed(self.analyzer.state.device) != _indexed(ctx.device):
            raise UnsupportedModel(f"kronfluence runs on {self.analyzer.state.device} in this process, the influence engine on {ctx.device}")
        self.analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=_only))
        self._fit(ctx)
        self._load_factors(ctx)

    def _tracked(self, ctx) -> tuple[list[str], list[str]]:
        """The Linear modules tracked (those whose weight is selected) and the selected parameters left out."""
        selected = set(ctx.tracked.names)
        tracked, covered = [], set()
        for name, module in ctx.model.named_modules():
            if isinstance(module, nn.Linear) and f"{name}.weight" in selected:
                tracked.append(name)
                covered.update(f"{name}.{p}" for p, _ in module.named_parameters())
        if not tracked:
            raise NoParametersSelected("the ekfac method tracks nn.Linear layers, and the parameter selection holds none")
        return tracked, [n for n in ctx.tracked.names if n not in covered]

    def _work_dir(self, ctx) -> Path:
        """This checkpoint's kronfluence directory: reused when complete for the same key, else cleared
        (with every other checkpoint's, which a completed checkpoint no longer needs)."""
        if self.work_root is None:
            self.work_root, self._temporary = Path(tempfile.mkdtemp(prefix="lingtrace-ekfac-")), True
        key = self._factor_key(ctx)
        directory = self.work_root / f"epoch-{ctx.epoch}-{key[:16]}"
        marker = read_json(directory / COMPLETE) if (directory / COMPLETE).exists() else None
        self._reuse = isinstance(marker, dict) and marker.get("key") == key
        if self.work_root.exists():
            for old in self.work_root.iterdir():
                if old != directory or not self._reuse:
                    shutil.rmtree(old, ignore_errors=True)
        self.work_dir, self._key = directory, key
        return directory

    def _factor_key(self, ctx) -> str:
        """What the factors depend on: the store (config, training run, checkpoints and examples) and this
        checkpoint, or without a store the checkpoint and the training examples."""
        train = hashlib.sha256("\n".join(ctx.train.uids).encode()).hexdigest()
        parts = [self.store_key or repr(ctx.checkpoint.source), str(ctx.epoch), train, str(ctx.dtype), str(ctx.batch_size), str(FISHER_SEED)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _factor_arguments(self):
        from kronfluence.arguments import FactorArguments

        dtype = self.ctx.dtype
        return FactorArguments(
            strategy="ekfac",
            use_empirical_fisher=False,
            covariance_max_examples=None,  # kronfluence's default caps at 100,000: always the whole training set
            lambda_max_examples=None,
            activation_covariance_dtype=dtype,
            gradient_covariance_dtype=dtype,
            per_sample_gradient_dtype=dtype,
            lambda_dtype=dtype,
        )

    def _score_arguments(self):
        from kronfluence.arguments import ScoreArguments

        dtype = self.ctx.dtype
        return ScoreArguments(damping_factor=self.damping, per_sample_gradient_dtype=dtype, precondition_dtype=dtype, score_dtype=dtype)

    def _fit(self, ctx) -> None:
        """The factors on the training set: covariances, eigendecomposition, corrected eigenvalues (each
        pass over the training set in the engine's batches), unless complete ones are on disk."""
        seconds = self.info["seconds"].setdefault(str(ctx.epoch), {})
        if self._reuse:
            seconds["reused"] = True
            return
        self.task.generator.manual_seed(FISHER_SEED)
        args = self._factor_arguments()
        count = -(-len(ctx.train) // ctx.batch_size)

        def training_pass(fit, what: str) -> None:
            stream = ctx.stream(ctx.train, f"epoch {ctx.epoch} EK-FAC {what}")
            fit(factors_name=FACTORS, dataset=_StreamedBatches(stream, count), per_device_batch_size=1, factor_args=args, overwrite_output_dir=True)

        phases = [
            ("covariance", lambda: training_pass(self.analyzer.fit_covariance_matrices, "covariances")),
            ("eigendecomposition", lambda: self.analyzer.perform_eigendecomposition(factors_name=FACTORS, factor_args=args, overwrite_output_dir=True)),
            ("lambda", lambda: training_pass(self.analyzer.fit_lambda_matrices, "eigenvalue corrections")),
        ]
        with quiet_kronfluence():
            for phase, run in phases:
                t0 = time.perf_counter()
                run()
                seconds[phase] = round(time.perf_counter() - t0, 2)
        write_json(self.work_dir / COMPLETE, {"key": self._key})

    def _load_factors(self, ctx) -> None:
        """Put the eigenbases and corrected eigenvalues into the tracked modules for scoring."""
        from kronfluence.module import TrackedModule
        from kronfluence.module.tracked_module import ModuleMode
        from kronfluence.module.utils import (
            get_tracked_module_names,
            prepare_modules,
            set_factors,
            set_mode,
            update_factor_args,
            update_score_args,
        )

        self.names = get_tracked_module_names(self.model)
        with quiet_kronfluence():
            factors = self.analyzer.load_all_factors(FACTORS)
            update_factor_args(self.model, self.analyzer.load_factor_args(FACTORS))
            update_score_args(self.model, self._score_arguments())
            set_mode(self.model, ModuleMode.PRECONDITION_GRADIENT, tracked_module_names=self.names, release_memory=True)
            for factor_name, per_module in factors.items():
                set_factors(self.model, factor_name, per_module)
            prepare_modules(self.model, self.names, ctx.device)
        self.modules = [m for m in self.model.modules() if isinstance(m, TrackedModule) and m.name in self.names]

    def memory(self, avg_tokens):
        itemsize = self.ctx.itemsize
        # a test example keeps its preconditioned gradient; a training example in a batch has its per-layer
        # activations and output gradients cached, and in the test pass a per-example gradient, rotated
        # and preconditioned (about three copies)
        activations = 2 * avg_tokens * self.layer_width * self.n_layers * itemsize
        return Memory(per_test=self.tracked_numel * itemsize, per_train=3 * self.tracked_numel * itemsize + activations)

    def featurise(self, batch):
        return batch  # the gradients are taken by kronfluence's hooks in resident() and score()

    # -- test chunk and training batches ---------------------------------------------
    def resident(self, chunk, features):
        from kronfluence.module.tracked_module import ModuleMode
        from kronfluence.module.utils import set_mode
        from kronfluence.utils.constants import (
            ACCUMULATED_PRECONDITIONED_GRADIENT_NAME,
            PRECONDITIONED_GRADIENT_NAME,
        )

        for module in self.modules:  # the previous chunk's test gradients
            module.storage[ACCUMULATED_PRECONDITIONED_GRADIENT_NAME] = None
        set_mode(self.model, ModuleMode.PRECONDITION_GRADIENT, tracked_module_names=self.names)
        gradients: dict[str, torch.Tensor] = {}
        norm2 = torch.zeros(len(chunk), dtype=torch.float64, device=self.ctx.device)
        with quiet_kronfluence():
            for idx, batch in features:
                self.model.zero_grad(set_to_none=True)
                self.task.compute_measurement(as_mapping(batch), self.model).backward()
                for module in self.modules:
                    g = module.storage[PRECONDITIONED_GRADIENT_NAME]
                    module.storage[PRECONDITIONED_GRADIENT_NAME] = None
                    if module.name not in gradients:
                        gradients[module.name] = torch.zeros((len(chunk), *g.shape[1:]), dtype=g.dtype, device=g.device)
                    gradients[module.name][idx] = g
                    norm2[idx] += g.double().flatten(1).square().sum(1)
        self.model.zero_grad(set_to_none=True)
        for module in self.modules:
            module.storage[ACCUMULATED_PRECONDITIONED_GRADIENT_NAME] = gradients[module.name]
        set_mode(self.model, ModuleMode.PAIRWISE_SCORE, tracked_module_names=self.names)
        return EkfacResident(test_norm=norm2.sqrt(), gradients=gradients)

    def score(self, resident, batch):
        from kronfluence.utils.constants import PAIRWISE_SCORE_MATRIX_NAME

        self.model.zero_grad(set_to_none=True)
        with quiet_kronfluence():
            self.task.compute_train_loss(as_mapping(batch), self.model, sample=False).backward()
        total = None
        for module in self.modules:
            part = module.storage[PAIRWISE_SCORE_MATRIX_NAME]  # [m, B]
            module.storage[PAIRWISE_SCORE_MATRIX_NAME] = None
            total = part if total is None else total.add_(part)
        self.model.zero_grad(set_to_none=True)
        nan = torch.full((len(batch),), torch.nan, dtype=torch.float64, device=total.device)
        return BlockScores({SCORES: total.T}, nan)

    def finish(self):
        """Drop the model and delete this checkpoint's factors (a checkpoint is scored once)."""
        self.model = self.analyzer = self.modules = None
        if self.work_root is not None and self.work_root.exists():
            if self._temporary:
                shutil.rmtree(self.work_root, ignore_errors=True)
                self.work_root, self._temporary = None, False
            else:
                for old in self.work_root.iterdir():
                    shutil.rmtree(old, ignore_errors=True)
                self.work_root.rmdir()
