"""The influence options: one definition of every key of the ``influence`` config section, and the
names of the influence methods.

``InfluenceOptions`` is the config section (``Config.influence``), the source of the CLI flags (each
field's metadata holds its help text and, where there are, its choices; see ``config.fields``) and
what the influence engine and its methods read. ``METHODS`` names the methods; the registry of their
estimator classes (``lingtrace.influence.methods.REGISTRY``) has one entry per name. Importing this
module needs no torch.

``Tuning`` holds the engine's API-only knobs: how the work is cut and reported. They are not config
keys (the pipeline uses their defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lingtrace.config.fields import option
from lingtrace.errors import LingtraceError

#: the influence methods, in the order the report shows them (``lingtrace.influence.methods`` maps each
#: name to its estimator class)
METHODS = ("tracin", "adam-cosine", "representation", "trak", "ekfac")
#: the method computed when none is asked for (its store is the one ``load_scores(RUN)`` opens)
DEFAULT_METHOD = "tracin"


def method_names() -> list[str]:
    return list(METHODS)

MODES = ("cosine", "dot", "train-normalised")
DTYPES = ("float32", "float64", "bfloat16", "float16")
CHECKPOINTS = ("trajectory", "all")
EKFAC_MEASUREMENTS = ("margin", "loss")
TRAK_OUTPUTS = ("loss", "margin")
EMBEDDING_METHODS = ("auto", "pairs", "vocab")
#: how tracin keeps nn.Linear weight gradients (influence/grads.py): auto (by the cost model), materialised, factored
LINEAR_PATHS = ("auto", "materialised", "factored")




@dataclass
class InfluenceOptions:
    mode: str = option("cosine", "cosine (paper: cosine per checkpoint, then summed), dot (plain TracIn), train-normalised", choices=MODES)
    lr_weighted: bool = option(False, "dot mode: weight each checkpoint by its learning rate from the manifest")
    params: list[str] = option(
        help="parameter selection: empty = all trainable; otherwise fnmatch patterns on parameter names "
        "or group names (embeddings, layer.N, head)",
        factory=list,
    )
    breakdown: bool = option(True, "store the per-layer-group breakdown of the scores (word embeddings separately)")
    batch_size: int = option(16, "training examples per per-sample-gradient batch")
    test_chunk: int | None = option(None, "test examples whose gradients are kept resident at once (default: sized to memory)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    dtype: str = option("float32", "float32 or float64 for the gradient passes (bfloat16/float16: autocast on GPU)", choices=DTYPES)
    checkpoints: str = option("trajectory", "trajectory (epochs up to the final model) or all (every saved epoch)", choices=CHECKPOINTS)
    projection_dim: int | None = option(None, "random projection dimension (None = exact, the default)")
    projection_seed: int = option(0, "seed of the random projection")
    methods: list[str] = option(
        help="influence methods to compute, one store each under RUN/influence/NAME/: tracin (the paper's), "
        "adam-cosine (gradients preconditioned by AdamW's second moments), representation (cosine of the final "
        "model's pooled representations), trak (CountSketch-projected gradients with the (K + lambda I)^-1 kernel preconditioner), "
        "ekfac (EK-FAC influence functions through kronfluence 1.0.1, an optional dependency)",
        factory=lambda: [DEFAULT_METHOD],
        choices=method_names(),
        rerun=True,
        new=True,
    )
    ekfac_damping: float | None = option(
        None,
        "ekfac: damping added to the eigenvalues of every layer; empty = kronfluence's heuristic, 0.1 x the mean eigenvalue of each layer",
        rerun=True,
        new=True,
        method="ekfac",
    )
    ekfac_measurement: str = option(
        "margin",
        "ekfac: the test example's function differentiated: margin (minus the correct-class margin, kronfluence's and LDS's) "
        "or loss (its cross-entropy, TracIn's); per test example they are proportional",
        choices=EKFAC_MEASUREMENTS,
        rerun=True,
        new=True,
        method="ekfac",
    )
    ekfac_final_only: bool = option(
        False,
        "ekfac: the final model alone (the classic influence function) instead of factors fitted and scores summed at every checkpoint",
        rerun=True,
        new=True,
        method="ekfac",
    )

    trak_damping: float = option(
        1.0,
        "trak: ridge damping of the kernel, relative to its mean eigenvalue (lambda = trak_damping x trace(K) / k); "
        "measured on the embedded demo: 1e-3 (lingtrace before issue 22) leaves the LDS at chance (0.09), 1 reaches 0.43 (BENCHMARKS.md)",
        rerun=True,
        new=True,
        method="trak",
    )
    trak_output: str = option(
        "loss",
        "trak: the output function differentiated: loss (the cross-entropy, as the other methods) or margin (TRAK's: the "
        "correct-class margin, the training side weighted by 1 - p)",
        choices=TRAK_OUTPUTS,
        rerun=True,
        new=True,
        method="trak",
    )

    def validate(self) -> None:
        """Raise ``LingtraceError`` naming the first bad key."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if not choices:
                continue
            for v in value if isinstance(value, list) else [value]:
                if v not in choices:
                    label = f.name[:-1] if isinstance(value, list) else f.name  # "methods" -> "method"
                    raise LingtraceError(
                        f"unknown influence {label.replace('_', ' ')} {v!r}: influence.{f.name} must be one of {', '.join(choices)}"
                    )
        if not self.methods:
            raise LingtraceError("influence.methods is empty", f"name at least one method, e.g. [{DEFAULT_METHOD}]")
        if len(set(self.methods)) != len(self.methods):
            raise LingtraceError(f"influence.methods has duplicates: {self.methods}")
        if self.batch_size < 1 or (self.test_chunk is not None and self.test_chunk < 1):
            raise LingtraceError("influence.batch_size and influence.test_chunk must be at least 1")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise LingtraceError(f"influence.projection_dim must be at least 1, got {self.projection_dim}")
        if not self.trak_damping >= 0:
            raise LingtraceError(f"influence.trak_damping must be at least 0, got {self.trak_damping}", "the default, 1, is the measured one")
        if self.ekfac_damping is not None and not self.ekfac_damping >= 0:
            raise LingtraceError(
                f"influence.ekfac_damping must be at least 0, got {self.ekfac_damping}", "leave it empty for kronfluence's heuristic"
            )


def rerun_keys() -> set[str]:
    """Keys of ``InfluenceOptions`` whose change reruns a completed stage (see the module docstring)."""
    return {f.name for f in dataclasses.fields(InfluenceOptions) if f.metadata.get("rerun")}


def foreign_keys(method: str) -> set[str]:
    """Keys that concern only a method other than ``method`` (left out of its store's fingerprint)."""
    return {f.name for f in dataclasses.fields(InfluenceOptions) if f.metadata.get("method") not in (None, method)}


@dataclass
class Tuning:
    """How the engine cuts and reports the work (API only; none changes the scores beyond float rounding,
    except ``trainable_only``)."""

    trainable_only: bool = True  # False: also parameters frozen in training (they did not move)
    shard_size: int | None = None  # training examples per shard (default: sized so partial matrices stay small)
    sort_by_length: bool = True  # batch examples of similar length together (less padding)
    embedding_method: str = "auto"  # word-embedding products: pairs (token matching), vocab (dense over the test vocabulary)
    linear_path: str = "auto"  # nn.Linear weights (tracin): auto (cost model, grads.py), materialised, factored (position pairs)
    #: training examples per product block (tracin, exact): the most rows gathered before one matrix
    #: product per parameter (None: up to 128 as memory allows, when one batch's products would be
    #: memory-bound, methods/gradient.memory_bound; 0: no blocks, one product per batch)
    product_rows: int | None = None
    profile: bool = False  # on a GPU, synchronise around each part so the per-part seconds are exact
    memory_fraction: float | None = None  # share of free memory for resident test features (default: 0.85 GPU, 0.5 CPU)
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.embedding_method not in EMBEDDING_METHODS:
            raise ValueError(f"embedding_method must be one of {', '.join(EMBEDDING_METHODS)}")
        if self.linear_path not in LINEAR_PATHS:
            raise ValueError(f"linear_path must be one of {', '.join(LINEAR_PATHS)}")
