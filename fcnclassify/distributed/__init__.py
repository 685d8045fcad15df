"""Beyond one process: the single-process per-image work on Ray workers or torchrun ranks.

* :mod:`fcnclassify.distributed.ray` (the ``ray`` extra): Ray Data reads the list, decodes on CPU
  tasks and runs the network in an actor pool (one model load per actor; Ray restarts a dead actor
  and retries its batch); :func:`~fcnclassify.distributed.ray.map_ordered` yields the results in
  input order.
* :mod:`fcnclassify.distributed.torchrun`: under ``torchrun --nproc-per-node N``, rank ``r`` takes
  items ``r::N`` of the list and rank 0 gathers them in input order.

The work itself (:mod:`fcnclassify.distributed.work`) is what the single-process commands do per
image, so the outputs, written once by the driver or rank 0, are the plain run's.
"""

from __future__ import annotations

__all__ = ["ENGINES", "default_engine", "map_ordered"]

ENGINES = ("local", "ray", "torchrun")


def default_engine() -> str:
    """``"torchrun"`` when started by torchrun (``RANK`` and ``WORLD_SIZE`` set), else ``"local"``."""
    from .torchrun import environment

    return "torchrun" if environment() is not None else "local"


def map_ordered(engine: str, work, items, *, address: str | None = None, device: str = "auto"):
    """``work`` over ``items`` on ``engine`` (``"ray"`` or ``"torchrun"``), results in input order
    (on torchrun only rank 0 receives them; the others get none). On Ray each actor gets a GPU
    when the cluster has them, unless ``device`` is ``"cpu"``."""
    if engine == "ray":
        from .ray import map_ordered as on_ray

        return on_ray(work, list(items), address=address, num_gpus=0.0 if device == "cpu" else None)
    if engine == "torchrun":
        from .torchrun import map_ordered as on_ranks

        return on_ranks(work, list(items))
    raise ValueError(f"expected an engine in ray, torchrun but got {engine!r}")
