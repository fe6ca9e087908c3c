"""Multi-process training helpers: ranks, all-gather with the local gradient, a torchrun launcher.

Everything here is a no-op (or the identity) in a single process, so losses and samplers call it
unconditionally.

* :func:`rank`, :func:`world_size`, :func:`is_main_process`, :func:`barrier` -- read the process
  group when one is initialised, else torchrun's environment (``RANK`` / ``WORLD_SIZE``), so they
  answer correctly before the trainer has created the group (e.g. while a recipe builds its sampler).
* :func:`all_gather` -- concatenate a tensor's rows from every rank, in rank order, with the
  gradient kept: in the backward pass the gradients of all ranks' losses with respect to this
  rank's rows are summed (all-reduce) and flow into the local tensor, so a 2-process run with batch
  B computes the same gradient as a 1-process run with batch 2B (DistributedDataParallel then
  averages over ranks). Ranks may hold different numbers of rows (padded internally).
* :func:`launch` / :func:`launch_workers` -- run ``embedkit train`` (or any command) on N local
  processes through torchrun's own launcher; a worker that dies ends the run with one
  :class:`~embedkit.errors.DistributedError` line naming its rank.

.. code-block:: bash

    embedkit train configs/esimcse.yaml --nproc 2                          # one machine, 2 processes
    torchrun --nproc-per-node 2 -m embedkit.cli.main train configs/esimcse.yaml   # the same by hand
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from embedkit.errors import DistributedError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_COLLECTIVE_TIMEOUT", "all_gather", "barrier", "describe_failure", "is_distributed",
           "is_main_process", "launch", "launch_workers", "local_rank", "rank", "world_size"]

#: seconds a collective waits for the other ranks before the run fails (recipe ``training.ddp_timeout``)
DEFAULT_COLLECTIVE_TIMEOUT = 600


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return world_size() > 1


def world_size() -> int:
    """Number of training processes: the process group's size, else ``$WORLD_SIZE`` (torchrun), else 1."""
    dist = _dist()
    if dist is not None:
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    """This process's global rank: the process group's, else ``$RANK`` (torchrun), else 0."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    """This process's rank on its machine (``$LOCAL_RANK``), 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and prints results."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def _gather_padded(tensor, sizes: list[int]):
    import torch

    dist = _dist()
    n_max = max(sizes)
    local = tensor
    if local.shape[0] < n_max:
        pad = local.new_zeros((n_max - local.shape[0], *local.shape[1:]))
        local = torch.cat([local, pad], dim=0)
    parts = [torch.empty_like(local) for _ in sizes]
    dist.all_gather(parts, local.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def _gather_sizes(tensor) -> list[int]:
    import torch

    dist = _dist()
    n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.empty_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    return [int(s.item()) for s in sizes]


def _make_gather_fn():
    import torch

    class _AllGatherKeepLocalGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, tensor, sizes):
            ctx.sizes = sizes
            ctx.rank = _dist().get_rank()
            return _gather_padded(tensor.detach(), sizes)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous().clone()
            _dist().all_reduce(grad)  # sum of every rank's loss gradient w.r.t. every row
            start = sum(ctx.sizes[: ctx.rank])
            return grad[start:start + ctx.sizes[ctx.rank]], None

    return _AllGatherKeepLocalGrad


_GATHER_FN = None


def all_gather(tensor, *, with_sizes: bool = False):
    """Rows of ``tensor`` from every rank, concatenated in rank order; the identity in one process.

    The result keeps the autograd graph: the local rows are differentiable, and the gradient that any
    rank's loss puts on this rank's rows is summed back into ``tensor`` (every rank must therefore run
    backward through the gathered tensor, as DistributedDataParallel training does). Under
    ``torch.no_grad()`` it is a plain gather.

    Args:
        tensor: ``(n, ...)``; ``n`` may differ between ranks.
        with_sizes: also return the list of row counts per rank.

    Returns:
        The gathered ``(sum(n), ...)`` tensor (and the sizes, with ``with_sizes=True``).
    """
    global _GATHER_FN
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return (tensor, [int(tensor.shape[0])]) if with_sizes else tensor
    sizes = _gather_sizes(tensor)
    if _GATHER_FN is None:
        _GATHER_FN = _make_gather_fn()
    import torch

    if torch.is_grad_enabled() and tensor.requires_grad:
        out = _GATHER_FN.apply(tensor, sizes)
    else:
        out = _gather_padded(tensor.detach(), sizes)
    return (out, sizes) if with_sizes else out


def collective_timeout(seconds: float | None = None) -> timedelta:
    """The collective timeout as a ``timedelta`` (``None`` -> :data:`DEFAULT_COLLECTIVE_TIMEOUT`)."""
    return timedelta(seconds=float(DEFAULT_COLLECTIVE_TIMEOUT if seconds is None else seconds))


# --- launching ----------------------------------------------------------------------------------


def describe_failure(err) -> str:
    """One line naming the failed rank of a torchrun ``ChildFailedError``.

    The root cause is chosen first: a worker killed by a signal other than the launcher's SIGTERM /
    SIGINT, else one that exited with an error status, else the earliest failure.
    """
    failures = dict(getattr(err, "failures", {}) or {})
    if not failures:
        return f"training workers failed: {' '.join(str(err).split())[:300]}"
    import signal as _signal

    stop_signals = {-int(_signal.SIGTERM), -int(_signal.SIGINT)}  # what the launcher sends the survivors

    def tier(f) -> int:
        if f.exitcode < 0 and f.exitcode not in stop_signals:
            return 0  # killed from outside (SIGKILL, out of memory, segfault): the root cause
        return 1 if f.exitcode > 0 else 2

    r0 = min(failures, key=lambda r: (tier(failures[r]), failures[r].timestamp, r))
    f = failures[r0]
    if f.exitcode < 0:
        how = f"was killed by {f.signal_name()}"
    else:
        how = f"exited with status {f.exitcode}"
        msg = f.message if isinstance(f.message, str) else ""
        if msg and not msg.startswith("To enable traceback"):
            how += f" ({' '.join(msg.split())[:200]})"
    others = sorted(r for r in failures if r != r0)
    if not others:
        tail = "; the other ranks were stopped"
    else:
        tail = f"; rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped with it"
    return (f"training worker rank {r0} (pid {f.pid}) {how}{tail}; "
            "continue from the last complete checkpoint with --resume")


def launch_workers(command: Sequence[str], nproc: int, *, torchrun_args: Sequence[str] = (),
                   env: dict[str, str] | None = None) -> None:
    """Run ``command`` (an executable and its arguments) as ``nproc`` torchrun workers on this machine.

    Uses torchrun's own launcher (``torch.distributed.run``), standalone rendezvous unless
    ``torchrun_args`` names another (``--nnodes``, ``--rdzv-endpoint``, ...), no restarts.

    Raises:
        DistributedError: a worker failed; one line naming its rank (the others are stopped).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise DistributedError(f"--nproc: must be a whole number >= 1, got {nproc!r}")
    extra = list(torchrun_args)
    has_rdzv = any(a.startswith(("--rdzv", "--nnodes", "--master", "--standalone")) for a in extra)
    argv = [*([] if has_rdzv else ["--standalone"]), f"--nproc-per-node={nproc}", "--max-restarts=0", *extra,
            "--no-python", *command]
    args = parse_args(argv)
    old_env = {}
    for k, v in (env or {}).items():
        old_env[k] = os.environ.get(k)
        os.environ[k] = v
    try:
        run(args)
    except ChildFailedError as e:
        raise DistributedError(describe_failure(e)) from None
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(recipe_path: str | os.PathLike, nproc: int, extra_args: Sequence[str] = (), *,
           torchrun_args: Sequence[str] = ()) -> None:
    """``embedkit train RECIPE --nproc N``: run ``embedkit train RECIPE *extra_args`` on ``nproc`` processes.

    Each worker is ``python -m embedkit.cli.main train RECIPE *extra_args`` under torchrun (gloo on
    CPU, NCCL on GPUs, chosen by the trainer); ``extra_args`` are the CLI options without ``--nproc``.

    Raises:
        DistributedError: a worker died or failed; the message names its rank.
    """
    launch_workers([sys.executable, "-m", "embedkit.cli.main", "train", str(recipe_path), *extra_args], nproc,
                   torchrun_args=torchrun_args)
