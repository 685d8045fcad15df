"""``--engine ray``: many images over a Ray cluster with Ray Data (the ``ray`` extra).

Ray Data reads the list, decodes the files on CPU tasks (``map_batches``) and runs the network in
an actor pool (``ActorPoolStrategy``: one model load per actor, ``num_gpus`` each on GPUs). Ray's
own machinery does the rest: backpressure between the stages, object spilling, and fault
tolerance (an actor that dies is restarted, ``max_restarts``, and its batch retried,
``max_task_retries``). Results come back in input order, so the driver writes exactly what the
single-process run writes.

Ray is imported only here, only when asked for; without the extra :func:`import_ray` raises one
line naming the install command.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["import_ray", "init", "map_ordered", "predict_paths", "evaluate_samples", "Worker"]

INSTALL = "pip install 'fcnclassify[ray]'"
DECODE_CPUS = 0.5  # logical CPUs of one decoding task


def import_ray():
    """The ``ray`` module with Ray Data; ValueError (one line) when the extra is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ValueError(f"--engine ray needs Ray Data ({INSTALL}): {e}") from None
    return ray


def init(address: str | None = None, *, num_cpus: int | None = None):
    """Connects to the cluster at ``address`` (``"auto"``, ``ray://host:10001``, ``host:6379``),
    or starts a local one; nothing when Ray is already initialised in this process."""
    ray = import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if address is None:
            kwargs["num_cpus"] = num_cpus
        ray.init(address=address, **kwargs)
    return ray


class Worker:
    """The actor of the network stage: ``work.setup()`` once, then ``work.run`` per row."""

    def __init__(self, work) -> None:
        self.work = work
        self.state = work.setup()

    def __call__(self, batch: dict) -> dict:
        results = [pickle.dumps(self.run(pickle.loads(item), pickle.loads(decoded)))
                   for item, decoded in zip(batch["item"], batch["decoded"])]
        return {"index": batch["index"], "result": results}

    def run(self, item, decoded):
        return self.work.run(self.state, item, decoded)


def _decode(batch: dict, *, work) -> dict:
    decoded = [pickle.dumps(work.decode(pickle.loads(item))) for item in batch["item"]]
    return {"index": batch["index"], "item": batch["item"], "decoded": decoded}


def map_ordered(work, items: Sequence, *, workers: int | None = None, num_gpus: float | None = None,
                address: str | None = None, worker: type[Worker] = Worker,
                progress: bool = False) -> Iterator[Any]:
    """``work.run(state, item, work.decode(item))`` for every item on Ray, yielded in input order.

    Args:
        work: A picklable work object (:mod:`fcnclassify.distributed.work`).
        items: Picklable items (paths, samples).
        workers: Network actors (default: the cluster's CPUs, or its GPUs with ``num_gpus``).
        num_gpus: GPUs per actor (0 runs on CPU; default: 1 when the cluster has GPUs, else 0).
        address: The cluster (:func:`init`); None starts a local one unless Ray is initialised.
        worker: The actor class (a subclass may wrap ``run``).
        progress: Ray Data's progress bars.
    """
    ray = init(address)
    if not items:
        return
    resources = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if workers is None:
        workers = int(resources.get("GPU", 0) // num_gpus) if num_gpus else int(resources.get("CPU", 1))
    workers = max(1, min(workers, len(items)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    # Ray Data's INFO lines (plans, "finished in"), and its note that bars are off, are not ours
    logging.getLogger("ray.data").setLevel(logging.WARNING if progress else logging.ERROR)
    context.execution_options.preserve_order = True
    rows = [{"index": i, "item": pickle.dumps(item)} for i, item in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(functools.partial(_decode, work=work), batch_size=1, batch_format="numpy",
                        num_cpus=DECODE_CPUS)
    # actors on CPU leave room for the decoding tasks (all CPUs to actors would starve them);
    # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1,
    # max_task_retries=-1 on the actor pool)
    cpus = 1.0 if num_gpus else min(1.0, (resources.get("CPU", 1) - DECODE_CPUS) / workers)
    ds = ds.map_batches(worker, fn_constructor_args=(work,), batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=num_gpus,
                        num_cpus=cpus)
    pending: dict[int, Any] = {}
    following = 0
    for row in ds.iter_rows():
        pending[int(row["index"])] = pickle.loads(row["result"])
        while following in pending:  # in input order, each once
            yield pending.pop(following)
            following += 1
    if following != len(items):
        raise RuntimeError(f"expected {len(items)} results from Ray but got {following}")


def predict_paths(paths: Sequence[str | os.PathLike], *, load, max_pixels: int | None = None,
                  workers: int | None = None, num_gpus: float | None = None,
                  address: str | None = None, **options) -> Iterator[tuple[str, Any]]:
    """``(path, Prediction or Failure)`` of each image on Ray, in input order.

    Args:
        paths: Image files.
        load: Builds the :class:`~fcnclassify.models.loaded.LoadedModel` in each actor; picklable
            (``functools.partial(load_model, "efficientnet_lite0")``).
        max_pixels: Refuse larger images.
        workers, num_gpus, address: As in :func:`map_ordered`.
        options: Keyword arguments of :func:`~fcnclassify.evaluation.predict.predict`.
    """
    from ..io.images import DEFAULT_MAX_PIXELS
    from .work import PredictWork

    work = PredictWork(load, options, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    items = [str(p) for p in paths]
    yield from zip(items, map_ordered(work, items, workers=workers, num_gpus=num_gpus,
                                      address=address))


def evaluate_samples(samples, *, load, protocol: str = "dense", workers: int | None = None,
                     num_gpus: float | None = None, address: str | None = None, **options):
    """:func:`~fcnclassify.evaluation.protocols.evaluate` of ``samples`` on Ray: the same
    :class:`~fcnclassify.evaluation.protocols.EvaluationResult`."""
    from .work import EvaluateWork, accuracy

    work = EvaluateWork(load, protocol, **options)
    return accuracy(protocol, list(map_ordered(work, list(samples), workers=workers,
                                               num_gpus=num_gpus, address=address)))
