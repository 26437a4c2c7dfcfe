"""torch.distributed plumbing for ``torchrun``: one process per GPU (or per CPU share with ``gloo``).

``torchrun --nproc_per_node=G -m lingtrace influence RUN`` (or ``train``) starts G processes whose
environment carries RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; multi-node runs use
torchrun's usual rendezvous flags. lingtrace initialises the process group from that environment
(``nccl`` when the processes have GPUs, ``gloo`` otherwise), gives each process its own device
(``cuda:LOCAL_RANK``), and lets rank 0 alone write run-directory files other than its own work.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lingtrace.errors import LingtraceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def device(self, name: str) -> str:
        """The device this rank uses for ``name`` (``auto``/``cuda`` -> ``cuda:LOCAL_RANK``)."""
        if not self.enabled:
            return name
        if name in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        if name == "auto":
            return "cpu"
        return name


SINGLE = Dist()


def decide_on_main(dist: Dist, make: Callable[[], Any], to_user: Callable[[Exception], LingtraceError | None] | None = None) -> Any:
    """The one "rank 0 decides, then broadcasts" helper: rank 0 runs ``make()``; its result, or its
    ``LingtraceError`` (or the one ``to_user`` turns another exception into), reaches every rank, where
    the error is raised again. Without torchrun this is ``make()`` with ``to_user`` applied to its errors."""
    decision: dict[str, Any] = {}
    if dist.is_main:
        try:
            decision = {"value": make()}
        except LingtraceError as e:
            if not dist.enabled:
                raise
            decision = {"error": [e.problem, e.fix]}
        except Exception as e:
            err = to_user(e) if to_user is not None else None
            if err is None:
                raise
            if not dist.enabled:
                raise err from e
            decision = {"error": [err.problem, err.fix]}
    if not dist.enabled:
        return decision["value"]
    decision = dist.broadcast(decision)
    if "error" in decision:
        raise LingtraceError(*decision["error"])
    return decision["value"]


def from_env() -> Dist:
    """Initialise the default process group from torchrun's environment; ``SINGLE`` without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_available():
        raise LingtraceError("WORLD_SIZE > 1 but this torch build has no torch.distributed", "run without torchrun")
    if not torch.distributed.is_initialized():
        backend = os.environ.get("LINGTRACE_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        timeout = datetime.timedelta(seconds=int(os.environ.get("LINGTRACE_DIST_TIMEOUT", "3600")))
        torch.distributed.init_process_group(backend=backend, timeout=timeout)
    if not torch.cuda.is_available():
        # CPU processes share the machine's cores
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    log.info("distributed: rank %d of %d (local rank %d)", rank, world, local_rank)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def shutdown(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
