"""``adam-cosine``: gradient cosine with the optimizer correction of TrackStar (Chang et al. 2024,
"Scalable influence and fact tracing for large language model pretraining").

At each checkpoint every per-example gradient is multiplied elementwise by

    R = 1 / sqrt(v_hat + eps),    v_hat = exp_avg_sq / (1 - beta2 ** step)

(AdamW's bias-corrected second-moment estimate at that checkpoint, with the optimizer's own eps),
then unit-normalised; the score is the cosine per checkpoint, summed over checkpoints. Exact over the
selected parameters; the word-embedding matrix, when trained, gets its rows preconditioned too (row u
of a gradient by row u of R, so it stays sparse). Not part of it: TrackStar's random projection (the
gradients stay exact here) and its task-specific Hessian (second-moment) correction term.

The second moments come from ``checkpoints/epoch-K/optimizer_second_moments.safetensors``, written by
training next to each checkpoint: one float32 tensor per trained parameter, keyed by its name in
``model.named_parameters()``, holding AdamW's raw ``exp_avg_sq``, with the safetensors metadata
strings ``step``, ``beta1``, ``beta2``, ``eps``, ``lr``, ``weight_decay`` and ``format`` =
``adamw-exp_avg_sq-v1``. ``lingtrace import`` writes the same file from the ``optimizer.pt`` of a
``transformers.Trainer`` checkpoint, and ``LingtraceCallback`` from the Trainer's live optimizer. Checkpoints
without the file (runs trained before training saved it, checkpoints imported without an AdamW state)
cannot be scored by this method; the manifest's ``second_moments`` record of the epoch says why, and the
refusal repeats it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from lingtrace.config.influence import InfluenceOptions, Tuning
from lingtrace.influence.context import Checkpoint
from lingtrace.influence.errors import BadSecondMoments, MissingSecondMoments
from lingtrace.influence.grads import BatchGrads
from lingtrace.influence.methods.base import cosine_
from lingtrace.influence.methods.gradient import GradientEstimator

SECOND_MOMENTS_FILE = "optimizer_second_moments.safetensors"
SECOND_MOMENTS_FORMAT = "adamw-exp_avg_sq-v1"
_REQUIRED = ("step", "beta2", "eps", "format")

#: (tensors by parameter name, metadata strings) of a checkpoint's second moments
Moments = tuple[dict[str, torch.Tensor], dict[str, str]]


def second_moments_path(source: Any) -> Path:
    return Path(source) / SECOND_MOMENTS_FILE


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise BadSecondMoments(f"{path} is not a readable safetensors file: {e}") from e
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise BadSecondMoments(f"{path} lacks the metadata {', '.join(missing)}")
    if meta["format"] != SECOND_MOMENTS_FORMAT:
        raise BadSecondMoments(f"{path} has format {meta['format']!r}, expected {SECOND_MOMENTS_FORMAT!r}")
    return meta


def read_second_moments(source: Any, names: list[str] | None = None) -> Moments:
    """The second moments saved with checkpoint directory ``source`` (only ``names`` when given)."""
    path = second_moments_path(source)
    meta = _metadata(path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        wanted = names if names is not None else sorted(keys)
        missing = [n for n in wanted if n not in keys]
        if missing:
            raise BadSecondMoments(f"{path} has no second moments for {missing[0]} (it holds {len(keys)} tensors)")
        return {n: f.get_tensor(n) for n in wanted}, meta


def _recorded_reason(checkpoint: Path) -> str | None:
    """Why an imported checkpoint has no second moments, as its epoch's manifest record says (None when
    the run records nothing: a native run trained before training saved them)."""
    from lingtrace.run import RunDir, read_manifest

    try:
        manifest = read_manifest(RunDir.holding_checkpoint(checkpoint)) or {}
    except (OSError, ValueError):
        return None
    for record in manifest.get("epochs", []):
        if record.get("path") == checkpoint.name and isinstance(record.get("second_moments"), dict):
            return record["second_moments"].get("reason")
    return None


class AdamCosineEstimator(GradientEstimator):
    name = "adam-cosine"
    ignores = frozenset({"mode", "lr_weighted", "projection_dim", "projection_seed"})

    def __init__(self, options: InfluenceOptions, tuning: Tuning | None = None, second_moments: Callable[[Checkpoint, list[str]], Moments] | None = None):
        """``second_moments(checkpoint, names)`` gives a checkpoint's moments (default: the file in
        its directory, see the module docstring)."""
        super().__init__(options, tuning)
        self.second_moments = second_moments
        self.steps: dict[int, int] = {}

    def describe(self):
        return {
            "preconditioner": "1/sqrt(exp_avg_sq / (1 - beta2^step) + eps)",
            "second_moments": SECOND_MOMENTS_FILE if self.second_moments is None else "given",
            "steps": {str(e): s for e, s in self.steps.items()},
        }

    def check(self, checkpoints):
        if self.second_moments is not None:
            return
        for ckpt in checkpoints:
            path = second_moments_path(ckpt.source) if isinstance(ckpt.source, str | Path) else None
            if path is None or not path.is_file():
                why = _recorded_reason(Path(ckpt.source)) if path is not None else None
                raise MissingSecondMoments(
                    f"checkpoint {ckpt.source} has no optimizer second moments ({SECOND_MOMENTS_FILE}): adam-cosine "
                    "preconditions by AdamW's exp_avg_sq at each checkpoint, "
                    + (f"which this imported checkpoint lacks: {why}" if why else "which runs trained before training saved it lack")
                )
            self.steps[ckpt.epoch] = int(float(_metadata(path)["step"]))

    def prepare(self, ctx):
        super().prepare(ctx)
        names = ctx.tracked.names
        loader = self.second_moments or (lambda ckpt, wanted: read_second_moments(ckpt.source, wanted))
        tensors, meta = loader(ctx.checkpoint, names)
        step, beta2, eps = int(float(meta["step"])), float(meta["beta2"]), float(meta["eps"])
        if step < 1:
            raise BadSecondMoments(f"the second moments of checkpoint {ctx.checkpoint.source} are from step {step}")
        self.steps[ctx.epoch] = step
        params = dict(ctx.model.named_parameters())
        correction = 1.0 - beta2**step
        self.scale: dict[str, torch.Tensor] = {}
        for name in names:
            v = tensors[name]
            if tuple(v.shape) != tuple(params[name].shape):
                raise BadSecondMoments(f"the second moments of {name} have shape {tuple(v.shape)}, the parameter {tuple(params[name].shape)}")
            r = (v.double() / correction + eps).rsqrt().to(device=ctx.device, dtype=ctx.dtype)
            self.scale[name] = r if name == ctx.tracked.word_embedding else r.reshape(-1)
        self.word = ctx.tracked.word_embedding

    def transform(self, g: BatchGrads) -> BatchGrads:
        for name, grad in g.dense.items():
            grad.mul_(self.scale[name])
        if g.emb_pos is not None:
            # the gradient row of token u is the sum of its positions' gradients: scale each by row u
            g.emb_pos = g.emb_pos * self.scale[self.word][g.ids]
        return g

    def normalise(self, matrix, train_norm, test_norm):
        cosine_(matrix, train_norm, test_norm)

    def finish(self):
        super().finish()
        self.scale = {}
