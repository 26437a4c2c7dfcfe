"""Writing a score store, resumably: ``StoreWriter``, the engine's on-disk sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from lingtrace.errors import LingtraceError
from lingtrace.influence.plan import SCORES, Part, Plan
from lingtrace.influence.store.files import (
    PARTS,
    TEST_UIDS,
    TRAIN_UIDS,
    epoch_file,
    mmap_tensor,
    part_file,
    tensor_names,
    write_axes,
    write_streaming,
)
from lingtrace.influence.store.meta import META, StoreMeta, read_meta, write_meta
from lingtrace.io import atomic_path
from lingtrace.run import has_store


class StoreWriter:
    """The on-disk sink of the engine: one part file per (epoch, chunk, shard), merged into
    ``epoch-K.safetensors`` once an epoch's parts are all there.

    A store made with the same ``fingerprint`` is resumed (its saved plan is followed and its finished
    parts are kept); one made with a different fingerprint is refused unless ``overwrite``, which
    clears it (its own files only: other methods' stores below it are left alone). ``meta`` is a
    ``StoreMeta`` (or a mapping of its keys). ``assemble=False`` (ranks other than 0 in a distributed
    run) only writes parts.
    """

    def __init__(
        self,
        directory: str | Path,
        fingerprint: str,
        meta: StoreMeta | dict[str, Any],
        train_uids: list[str],
        test_uids: list[str],
        overwrite: bool = False,
        assemble: bool = True,
    ):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.assemble = assemble
        self.n_train, self.n_test = len(train_uids), len(test_uids)
        self.plan: Plan | None = None
        old = read_meta(self.directory) if has_store(self.directory) else None
        if old is not None and old.fingerprint != fingerprint:
            if not overwrite:
                raise LingtraceError(
                    f"{self.directory} holds influence scores made with a different config or data",
                    "use a new run directory, or pass --overwrite to recompute them",
                )
            if assemble:
                self.clear()
            old = None
        if old is not None and old.plan:
            self.plan = Plan.from_dict(old.plan)
            self.meta = old
        else:
            self.meta = meta if isinstance(meta, StoreMeta) else StoreMeta.from_dict(dict(meta))
            self.meta.fingerprint = fingerprint
            self.meta.complete = False
            self.meta.epochs_done = []
            self.meta.n_train, self.meta.n_test = self.n_train, self.n_test
        if assemble and old is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_axes(self.directory, train_uids, test_uids)
            write_meta(self.directory, self.meta)

    def clear(self) -> None:
        """Delete this store's files (meta, uids, epoch files, parts)."""
        import shutil

        if not self.directory.exists():
            return
        shutil.rmtree(self.directory / PARTS, ignore_errors=True)
        for p in self.directory.glob("epoch-*.safetensors"):
            p.unlink(missing_ok=True)
        for name in (TRAIN_UIDS, TEST_UIDS, META):
            (self.directory / name).unlink(missing_ok=True)

    # -- the sink protocol ---------------------------------------------------------
    def begin(self, plan: Plan) -> None:
        self.plan = plan
        if self.assemble:
            self.meta.plan = plan.to_dict()
            write_meta(self.directory, self.meta)

    def _epoch_complete(self, epoch: int) -> bool:
        return epoch in (self.meta.epochs_done or []) and epoch_file(self.directory, epoch).exists()

    def is_done(self, epoch: int, chunk: int, shard: int) -> bool:
        if self._epoch_complete(epoch):
            return True
        path = part_file(self.directory, epoch, chunk, shard)
        if not path.exists():
            return False
        try:
            names = tensor_names(path)
            mmap_tensor(path, SCORES)
        except LingtraceError:
            path.unlink(missing_ok=True)  # damaged: recompute that unit
            return False
        return SCORES in names

    def put(self, part: Part) -> None:
        tensors = dict(part.matrices)
        tensors["test_norm"] = np.asarray(part.test_norm, dtype=np.float64)
        tensors["train_norm"] = np.asarray(part.train_norm, dtype=np.float64)
        path = part_file(self.directory, part.epoch, part.chunk, part.shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))

    def parts_complete(self, epoch: int) -> bool:
        return all(
            part_file(self.directory, epoch, c, s).exists()
            for c in range(len(self.plan.chunks))
            for s in range(len(self.plan.shards))
        )

    def epoch_done(self, epoch: int) -> None:
        if not self.assemble or self._epoch_complete(epoch) or not self.parts_complete(epoch):
            return
        self.merge(epoch)

    def merge(self, epoch: int, block_rows: int = 256) -> None:
        """Merge an epoch's parts into ``epoch-K.safetensors`` (streamed, row blocks), then drop them."""
        plan = self.plan
        parts = {(c, s): part_file(self.directory, epoch, c, s) for c in range(len(plan.chunks)) for s in range(len(plan.shards))}
        names = [n for n in tensor_names(parts[(0, 0)]) if n not in ("test_norm", "train_norm")]
        dtype = mmap_tensor(parts[(0, 0)], SCORES).dtype
        specs: dict[str, tuple[tuple[int, ...], Any]] = {n: ((self.n_test, self.n_train), dtype) for n in names}
        specs["test_norm"] = ((self.n_test,), np.float64)
        specs["train_norm"] = ((self.n_train,), np.float64)

        def fill(name, write):
            if name == "test_norm":
                for c in range(len(plan.chunks)):
                    write(mmap_tensor(parts[(c, 0)], name))
                return
            if name == "train_norm":
                for s in range(len(plan.shards)):
                    write(mmap_tensor(parts[(0, s)], name))
                return
            for c, (r0, r1) in enumerate(plan.chunks):
                mats = [mmap_tensor(parts[(c, s)], name) for s in range(len(plan.shards))]
                for a in range(0, r1 - r0, block_rows):
                    write(np.concatenate([m[a : a + block_rows] for m in mats], axis=1))

        write_streaming(epoch_file(self.directory, epoch), specs, fill)
        done = sorted(set(self.meta.epochs_done or []) | {epoch})
        self.meta.epochs_done = done
        self.meta.complete = all(e in done for e in self.meta.epochs)
        write_meta(self.directory, self.meta)
        for p in parts.values():
            p.unlink(missing_ok=True)

    def finish(self, stats: dict[str, Any] | None = None) -> None:
        if not self.assemble:
            return
        if stats:
            self.meta.stats = stats
        self.meta.complete = all(e in (self.meta.epochs_done or []) for e in self.meta.epochs)
        write_meta(self.directory, self.meta)
        parts_dir = self.directory / PARTS
        if self.meta.complete and parts_dir.exists() and not any(parts_dir.iterdir()):
            parts_dir.rmdir()
