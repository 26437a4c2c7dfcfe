"""The score store of one influence method: ``RUN/influence/METHOD/`` (see ``RunDir.influence_store``).

Layout::

    meta.json               method, mode, epochs, parameter selection, groups, dtype, projection,
                            sizes, the fingerprint of the config that made it, and ``complete``
                            (one typed definition: ``store/meta.py``)
    train_uids.json         uid of every column (training example), in order
    test_uids.json          uid of every row (selected test example), in order
    epoch-K.safetensors     "scores": float32 [test x train] for checkpoint K (already normalised:
                            tracin's cosine / dot / train-normalised, lr-weighted when asked; the
                            other methods' cosines);
                            "group.<name>": the same matrix restricted to one parameter group, so the
                            groups sum to "scores" (present when the breakdown was asked for);
                            "test_norm" [test], "train_norm" [train]: feature norms at checkpoint K

    parts/                  work in progress: one file per (epoch, test chunk, training shard), the
                            unit of resumption (and of distribution across ranks); merged into
                            epoch-K.safetensors when an epoch is complete, then deleted

The summed score is the sum of the per-epoch matrices. Files are written atomically; a reader only
trusts epochs listed in ``meta.json`` (``complete`` is true once every epoch is written). Matrices
are memory-mapped, so a store larger than memory can be read block by block
(``InfluenceScores.blocks``, ``InfluenceScores.total(out=memmap)``).

Modules: ``files`` (safetensors files), ``meta`` (meta.json), ``writer`` (``StoreWriter``, resumable),
``reader`` (``load_scores``, ``InfluenceScores``).
"""

from lingtrace.influence.plan import GROUP_PREFIX, SCORES
from lingtrace.influence.store.files import (
    PARTS,
    TEST_UIDS,
    TRAIN_UIDS,
    epoch_file,
    mmap_tensor,
    part_file,
    tensor_names,
    write_axes,
    write_epoch,
    write_streaming,
)
from lingtrace.influence.store.meta import META, StoreMeta, read_meta, write_meta
from lingtrace.influence.store.reader import InfluenceScores, load_scores, store_directory
from lingtrace.influence.store.writer import StoreWriter

__all__ = [
    "GROUP_PREFIX",
    "META",
    "PARTS",
    "SCORES",
    "TEST_UIDS",
    "TRAIN_UIDS",
    "InfluenceScores",
    "StoreMeta",
    "StoreWriter",
    "epoch_file",
    "load_scores",
    "mmap_tensor",
    "part_file",
    "read_meta",
    "store_directory",
    "tensor_names",
    "write_axes",
    "write_epoch",
    "write_meta",
    "write_streaming",
]
