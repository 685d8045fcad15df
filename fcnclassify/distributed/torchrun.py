"""``torchrun --nproc-per-node N -m fcnclassify ...``: the list shared between N processes.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`map_ordered` joins the process
group (gloo on CPU, nccl on GPUs, each rank on GPU ``LOCAL_RANK``), gives rank ``r`` the items
``r::WORLD_SIZE`` of the list (a count that does not divide is neither dropped nor done twice) and
gathers each round's results on rank 0, which yields them in input order; the other ranks yield
nothing, so only rank 0 prints and writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["environment", "rank", "map_ordered"]


def environment() -> tuple[int, int] | None:
    """``(rank, world_size)`` when started by torchrun (``RANK`` and ``WORLD_SIZE`` set), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(f"expected whole numbers in RANK and WORLD_SIZE but got "
                         f"{os.environ['RANK']!r} and {os.environ['WORLD_SIZE']!r}") from None
    if not 0 <= rank < world:
        raise ValueError(f"expected 0 <= RANK < WORLD_SIZE but got RANK={rank}, WORLD_SIZE={world}")
    return rank, world


def rank() -> int:
    """This process's rank under torchrun, 0 otherwise."""
    env = environment()
    return env[0] if env else 0


def _join() -> tuple[int, int, bool]:
    import torch
    import torch.distributed as dist

    env = environment()
    if env is None:
        raise ValueError("--engine torchrun: expected RANK and WORLD_SIZE in the environment "
                         "(start with 'torchrun --nproc-per-node N -m fcnclassify ...')")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # "cuda" is this rank's GPU
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), True


def map_ordered(work, items: Sequence) -> Iterator[Any]:
    """``work.run(state, item, work.decode(item))`` for every item, rank ``r`` doing ``r::world``;
    on rank 0 the results in input order, on the others nothing.

    Every rank must call it with the same items (they all list the same folder, sorted).
    """
    import torch.distributed as dist

    rank, world, joined = _join()
    try:
        state = work.setup()
        for start in range(0, len(items), world):
            index = start + rank
            result = (work.run(state, items[index], work.decode(items[index]))
                      if index < len(items) else None)
            gathered = [None] * world if rank == 0 else None
            dist.gather_object(result, gathered, dst=0)
            if rank == 0:
                yield from gathered[:len(items) - start]
    finally:
        if joined:
            dist.destroy_process_group()
