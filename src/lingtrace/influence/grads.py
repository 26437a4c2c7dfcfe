"""Per-example gradients of an objective's loss for a batch, with ``torch.func`` (``functional_call`` + ``vmap(grad)``).

Each example's loss is its own (``Objective.example_loss``, summed over the example, never a batch mean),
computed in ``model.eval()`` mode (dropout off). The model is called with ``inputs_embeds`` looked up
outside the vmapped function, so the gradient with respect to the word-embedding matrix arrives as
one gradient row per token position and is kept sparse (``SparseRows``), never as a dense V x H
matrix.

An ``nn.Linear`` weight can instead be kept *factored* (``factored``): its per-example gradient is
``sum_t b_t a_t^T`` over the example's positions (``a_t`` the layer's input, ``b_t`` the gradient of
the loss with respect to its output), so the pass returns the ``a`` and ``b`` of every position
(``LinearFactors``) and never forms the [d_out x d_in] matrix. ``b`` is taken as the gradient with
respect to a zero "probe" added to the layer's output inside the vmapped function, ``a`` is returned
as an auxiliary output; the weight itself is then a constant of the pass, so its per-example
gradient is not computed at all. Two such gradients' inner product is a sum over position pairs,
``sum_{s,t} (a_s . a_t)(b_s . b_t)``: cheaper than the materialised product when
``T_i T_j (d_in + d_out) < d_in d_out`` (short texts), and exact either way. ``choose_factored``
decides per layer from that cost model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.func import functional_call, grad_and_value, vmap

from lingtrace.config.influence import LINEAR_PATHS
from lingtrace.influence.params import TrackedParams
from lingtrace.influence.sparse import SparseRows
from lingtrace.objectives import Batch, ClassificationObjective, Objective, collate

__all__ = ["Batch", "BatchGrads", "LinearFactors", "PerSampleGradients", "choose_factored", "collate"]

@dataclass
class LinearFactors:
    """The per-example gradient of an ``nn.Linear`` weight as its positions' factors: ``inputs``
    [B, T, d_in] and output gradients ``grads`` [B, T, d_out]; the gradient of example i is
    ``grads[i].T @ inputs[i]`` ([d_out, d_in], the weight's layout)."""

    inputs: torch.Tensor
    grads: torch.Tensor

    def sq_norms(self) -> torch.Tensor:
        """|sum_t b_t a_t^T|^2 per example [B] (float64): the sum over position pairs of (a_s.a_t)(b_s.b_t)."""
        ga = torch.bmm(self.inputs, self.inputs.transpose(1, 2))
        gb = torch.bmm(self.grads, self.grads.transpose(1, 2))
        return (ga * gb).sum((1, 2)).double()

    def materialise(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d_out * d_in]: the per-example gradients flattened as the weight is (written into the
        contiguous ``out`` [B, d_out * d_in] when given: no new allocation)."""
        b, d_in, d_out = self.inputs.shape[0], self.inputs.shape[-1], self.grads.shape[-1]
        if out is None:
            return torch.bmm(self.grads.transpose(1, 2), self.inputs).reshape(b, -1)
        torch.bmm(self.grads.transpose(1, 2), self.inputs, out=out.view(b, d_out, d_in))
        return out


def factored_cost(positions_a: float, positions_b: float, d_in: int, d_out: int) -> float:
    """Multiply-adds of one factored inner product over position pairs (against d_in * d_out materialised)."""
    return positions_a * positions_b * (d_in + d_out)


def choose_factored(layers: dict[str, tuple[int, int, float]], path: str = "auto") -> list[str]:
    """The Linear weights to keep factored: ``layers`` maps a weight's name to (d_in, d_out, positions
    per example at the average length). ``auto`` keeps a weight factored where the position-pair
    product costs fewer multiply-adds than the materialised one; ``factored`` keeps them all,
    ``materialised`` none."""
    if path not in LINEAR_PATHS:
        raise ValueError(f"linear path must be one of {', '.join(LINEAR_PATHS)}, got {path!r}")
    if path == "materialised":
        return []
    if path == "factored":
        return list(layers)
    return [n for n, (d_in, d_out, t) in layers.items() if factored_cost(t, t, d_in, d_out) < d_in * d_out]


@dataclass
class BatchGrads:
    """Per-example gradients of a batch: dense parameters flattened to [B, numel], and the gradients
    with respect to the input word embeddings at each position (``emb_pos`` [B, T, H], with the token
    ``ids`` and ``mask`` of the positions; ``None`` when the word embeddings are not selected). The
    gradient of the word-embedding matrix is their sum per token: ``rows()`` gives it sparse."""

    dense: dict[str, torch.Tensor]
    emb_pos: torch.Tensor | None
    ids: torch.Tensor
    mask: torch.Tensor
    loss: torch.Tensor  # [B]
    vocab_size: int = 0
    #: nn.Linear weights whose gradients left the pass as factors (name -> factors); not in ``dense``
    factors: dict[str, LinearFactors] = field(default_factory=dict)
    #: the squared norms [B] (float64) when already computed (``sq_norms`` returns them)
    sq: torch.Tensor | None = None

    @property
    def has_emb(self) -> bool:
        return self.emb_pos is not None

    def rows(self) -> SparseRows:
        """The word-embedding gradients as one row per distinct (example, token)."""
        assert self.emb_pos is not None
        return SparseRows.from_positions(self.emb_pos, self.ids, self.mask, self.vocab_size or None)

    def emb_sq_norms(self) -> torch.Tensor:
        """Squared norm of each example's word-embedding gradient [B] (float64), without grouping by
        token: |sum_u row_u|^2 = sum over position pairs holding the same token of g_t . g_s."""
        assert self.emb_pos is not None
        m = self.mask.to(self.emb_pos.dtype)
        g = self.emb_pos * m[..., None]
        same = (self.ids[:, :, None] == self.ids[:, None, :]).to(g.dtype)
        gram = torch.bmm(g, g.transpose(1, 2))
        return (gram * same).sum((1, 2)).double()

    def sq_norms(self) -> torch.Tensor:
        """Squared gradient norm per example over every selected parameter [B] (float64)."""
        if self.sq is not None:
            return self.sq
        b = int(self.loss.shape[0])
        out = torch.zeros(b, dtype=torch.float64, device=self.loss.device)
        for g in self.dense.values():
            # a float32 norm (cascade-summed by torch) squared in float64; no float64 copy of g
            out += torch.linalg.vector_norm(g, dim=1).double().pow(2)
        for f in self.factors.values():
            out += f.sq_norms()
        if self.emb_pos is not None:
            out += self.emb_sq_norms()
        return out


class PerSampleGradients:
    """Callable computing ``BatchGrads`` for a ``Batch`` with one vmapped pass over the model.

    ``objective`` gives the loss and the model inputs (default: sequence classification).
    ``autocast_dtype`` (bfloat16/float16, CUDA only) runs the forward and backward under autocast;
    gradients of the float32 parameters stay float32. ``linear_path`` decides which tracked
    ``nn.Linear`` weights are kept factored (module docstring; ``materialised``, the default, keeps
    none); ``auto`` decides at the first batch from the layers' sizes and ``avg_tokens`` (the mean
    example length; the first batch's length when None). ``factored`` is the decision (set after
    the first call). ``probe_all`` takes every candidate Linear weight's gradient out of the pass as
    factors, also those the cost model materialises (``probed``; the consumer materialises them with
    ``LinearFactors.materialise``, e.g. straight into a product block), so that the pass itself never
    allocates the per-example weight gradients.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tracked: TrackedParams,
        autocast_dtype: torch.dtype | None = None,
        objective: Objective | None = None,
        linear_path: str = "materialised",
        avg_tokens: float | None = None,
        probe_all: bool = False,
    ):
        if linear_path not in LINEAR_PATHS:
            raise ValueError(f"linear_path must be one of {', '.join(LINEAR_PATHS)}, got {linear_path!r}")
        self.model = model
        self.tracked = tracked
        self.objective = objective or ClassificationObjective()
        self.autocast_dtype = autocast_dtype
        self.linear_path = linear_path
        self.avg_tokens = avg_tokens
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.with_emb = tracked.word_embedding is not None
        self.word_weight = model.get_input_embeddings().weight
        self.buffers = dict(model.named_buffers())
        self.probe_all = bool(probe_all)
        self.linears = _linear_weights(model, tracked) if (linear_path != "materialised" or self.probe_all) else {}
        #: the weights whose scores are kept factored (the cost model's choice; None before the first call)
        self.factored: list[str] | None = None if self.linears else []
        self._state: dict | None = None
        self._shapes: dict[int, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}
        self.frozen = self._constants()  # before the decision: for the plain forward that finds the output shapes
        if self.factored is not None:
            self._build()

    @property
    def probed(self) -> list[str]:
        """The Linear weights whose gradients leave the pass as factors (``BatchGrads.factors``)."""
        if self.factored is None:
            return []
        return list(self.linears) if self.probe_all else list(self.factored)

    @property
    def dense_names(self) -> list[str]:
        """The tracked dense parameters whose per-example gradients the pass materialises."""
        skip = set(self.probed)
        return [n for n in self.tracked.dense_names if n not in skip]

    @property
    def materialised_factors(self) -> list[str]:
        """Probed weights the cost model materialises (outside the pass)."""
        kept = set(self.factored or ())
        return [n for n in self.probed if n not in kept]

    def _constants(self) -> dict[str, torch.Tensor]:
        """Parameters that are not differentiated (the factored weights among them), passed as constants."""
        dense = set(self.dense_names)
        return {n: p.detach() for n, p in self.model.named_parameters() if n not in dense}

    def _build(self) -> None:
        self.frozen = self._constants()
        argnums = (0, 1, 3) if self.with_emb else (0, 3)

        def loss_one(params, embeds, inputs, probes):
            self._state = {"mode": "grad", "probes": probes, "inputs": {}}
            try:
                loss = self.objective.example_loss(self._forward(params), embeds, inputs)
                return loss, dict(self._state["inputs"])
            finally:
                self._state = None

        self._grad = vmap(grad_and_value(loss_one, argnums=argnums, has_aux=True), in_dims=(None, 0, 0, 0))

    def _forward(self, params):
        def forward(**kwargs):
            return functional_call(self.model, ({**self.frozen, **params}, self.buffers), args=(), kwargs=kwargs)

        return forward

    @contextlib.contextmanager
    def _patched(self):
        """The factored (or, before the decision, candidate) Linear modules with a forward that records
        their input and adds their probe (in the "grad" state) or their output's shape ("shapes")."""
        names = self.linears if self.factored is None else {n: self.linears[n] for n in self.probed}
        patched = []
        for name, module in names.items():

            def forward(x, _name=name, _module=module):
                y = torch.nn.functional.linear(x, _module.weight, _module.bias)
                st = self._state
                if st is None:
                    return y
                if st["mode"] == "shapes":
                    if _name in st["shapes"]:
                        st["twice"].add(_name)
                    st["shapes"][_name] = (tuple(y.shape), y.dtype)
                    return y
                if _name not in st["probes"]:
                    return y
                if _name in st["inputs"]:
                    raise RuntimeError(f"{_name} is called more than once in one forward")
                st["inputs"][_name] = x
                return y + st["probes"][_name]

            module.forward = forward
            patched.append(module)
        try:
            yield
        finally:
            for module in patched:
                del module.forward  # back to the class's forward

    def _output_shapes(self, params, embeds, inputs) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Each patched module's output shape and dtype for one example of this length (one plain forward)."""
        t = int(embeds.shape[1])
        if t not in self._shapes:
            self._state = {"mode": "shapes", "shapes": {}, "twice": set()}
            try:
                with torch.no_grad():
                    self.objective.example_loss(self._forward(params), embeds[0], {k: v[0] for k, v in inputs.items()})
                shapes, twice = self._state["shapes"], self._state["twice"]
            finally:
                self._state = None
            for name in twice:  # a module called twice in one forward cannot be factored this way
                shapes.pop(name, None)
                self.linears.pop(name, None)
            self._shapes[t] = shapes
        return self._shapes[t]

    def _decide(self, params, embeds, inputs) -> None:
        t = int(embeds.shape[1])
        shapes = self._output_shapes(params, embeds, inputs)
        avg = float(self.avg_tokens) if self.avg_tokens is not None else float(t)
        layers = {}
        for name, (shape, _) in shapes.items():
            d_out, d_in = self.tracked_shape(name)
            per_example = int(torch.Size(shape).numel()) // d_out
            positions = avg * per_example / t if per_example % t == 0 and per_example >= t else float(per_example)
            layers[name] = (d_in, d_out, positions)
        self.factored = choose_factored(layers, self.linear_path)
        self._shapes.clear()
        self._build()

    def tracked_shape(self, name: str) -> tuple[int, int]:
        w = self.linears[name].weight
        return int(w.shape[0]), int(w.shape[1])

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is not None and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def __call__(self, batch: Batch) -> BatchGrads:
        """Per-example gradients (and losses) of a batch already on the model's device."""
        named = dict(self.model.named_parameters())
        ids = batch.input_ids
        inputs = self.objective.example_inputs(self.model, batch)
        embeds = torch.nn.functional.embedding(ids, self.word_weight.detach())
        b = len(batch)
        with self._autocast(ids.device), self._patched():
            if self.factored is None:
                self._decide({n: named[n].detach() for n in self.tracked.dense_names}, embeds, inputs)
            params = {n: named[n].detach() for n in self.dense_names}
            probes = {}
            if self.probed:
                shapes = self._output_shapes(params, embeds, inputs)
                probes = {n: torch.zeros((b, *shapes[n][0]), dtype=shapes[n][1], device=ids.device) for n in self.probed}
            out, (loss, acts) = self._grad(params, embeds, inputs, probes)
        g_params, g_embeds, g_probes = (out if self.with_emb else (out[0], None, out[1]))
        dense = {n: g_params[n].reshape(b, -1) for n in self.dense_names}
        factors = {}
        dtype = self.word_weight.dtype  # the parameters' (autocast may have made the activations half)
        for n in self.probed:
            d_out, d_in = self.tracked_shape(n)
            factors[n] = LinearFactors(acts[n].reshape(b, -1, d_in).to(dtype), g_probes[n].reshape(b, -1, d_out).to(dtype))
        return BatchGrads(
            dense=dense, emb_pos=g_embeds, ids=ids, mask=batch.attention_mask, loss=loss.detach(), vocab_size=self.vocab_size, factors=factors
        )


def _linear_weights(model: torch.nn.Module, tracked: TrackedParams) -> dict[str, torch.nn.Linear]:
    """Tracked dense weights that belong to an ``nn.Linear`` and to nothing else (name -> module)."""
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    out = {}
    for name in tracked.dense_names:
        path, _, leaf = name.rpartition(".")
        if leaf != "weight":
            continue
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if type(module) is torch.nn.Linear and uses.get(id(module.weight), 0) == 1:
            out[name] = module
    return out
