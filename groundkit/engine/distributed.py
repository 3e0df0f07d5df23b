"""torchrun / DistributedDataParallel helpers.

``torchrun --nproc_per_node=4 -m groundkit.cli train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts
the process group (NCCL on CUDA, gloo on CPU). Without those variables everything here is a no-op
for a single process, so the same code runs with and without torchrun.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` in ``[0, world_size)``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, timeout_minutes: float = 60.0) -> DistInfo:
    """Start the process group from the torchrun environment, once; return this process's place.

    ``backend`` defaults to NCCL when CUDA is available and gloo otherwise. On CUDA the current
    device is set to ``cuda:LOCAL_RANK``. ``timeout_minutes`` bounds a collective: other ranks
    wait at a barrier while rank 0 evaluates, so it must exceed the evaluation time. Calling it
    again (or with no torchrun environment) only returns the information.
    """
    info = _env_info()
    if info.is_distributed and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"),
                                rank=info.rank, world_size=info.world_size,
                                timeout=timedelta(minutes=timeout_minutes))
    return info


def _env_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    int(env.get("LOCAL_RANK", 0)))


def default_device() -> torch.device:
    """CUDA when available, else the CPU (single-process use: the API, evaluation)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DEVICE_FORMS = "cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device ``device`` names, checked once: None is :func:`default_device`; an unknown
    string, or a device this machine or torch build lacks (``cuda`` without CUDA, ``cuda:3`` with
    two GPUs, ``mps`` off Apple silicon), is a ConfigError saying which forms are valid or what
    is missing."""
    from groundkit.errors import ConfigError

    if device is None:
        return default_device()
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device '{device}': not a device; expected {DEVICE_FORMS}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device '{device}': not supported; expected {DEVICE_FORMS}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible on this machine")
            raise ConfigError(f"device '{device}': CUDA is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}': there are {torch.cuda.device_count()} CUDA "
                              f"devices (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
        raise ConfigError(f"device '{device}': MPS (Apple silicon) is not available on this "
                          f"machine; use --device cpu")
    return dev


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that logs and writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if get_world_size() > 1:
        dist.barrier()


def cleanup_distributed(synchronize: bool = True) -> None:
    """Destroy the process group if one was started; call once at the end of a torchrun job.

    With ``synchronize`` (a job that ended normally) every rank first waits at a barrier, so no
    rank tears its connections down while another is still inside a collective or its own
    teardown: a gloo rank that lost its peer mid-teardown could abort (SIGABRT) instead of
    exiting 0. After an error pass ``synchronize=False``: a failed rank may never reach the
    barrier.
    """
    global _cpu_group
    if dist.is_available() and dist.is_initialized():
        if synchronize and get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
    _cpu_group = None


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over ranks (same shape); ``values`` itself when single-process."""
    if get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """A picklable ``obj`` from every rank, in rank order (``[obj]`` when single-process).

    Used for small per-rank records such as RNG states; the objects are pickled on the wire
    between trusted ranks of one job, never written to disk.
    """
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


_cpu_group: Any = None  # a gloo group beside an NCCL one, for small host-side agreements


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over ranks (``value`` when single-process); every rank must call it
    at the same point.

    It runs on the CPU (the default group when it is gloo, else a gloo group made at the first
    call), so it neither waits for the GPU nor blocks its queue: the trainer asks it after every
    step whether any rank received a stop signal, for about 0.1 ms on one machine.
    """
    if get_world_size() == 1:
        return value
    flag = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_host_group())
    return int(flag.item())


def _host_group() -> Any:
    global _cpu_group
    if "gloo" in str(dist.get_backend()):
        return None  # the default group takes CPU tensors
    if _cpu_group is None:
        _cpu_group = dist.new_group(backend="gloo")
    return _cpu_group
