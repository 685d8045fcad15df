"""One slide over many workers: its tiles as jobs on a Ray cluster, reassembled exactly.

The driver plans the tiles (:func:`~fcnclassify.evaluation.streamed.plan_stream`) and computes
the tissue mask; :func:`tile_runner` sends the store's pending tiles in jobs of a few tiles each
through :func:`fcnclassify.distributed.ray.map_ordered` (one model load per actor; Ray retries a
job whose actor died), and the driver writes each job's cells into the zarr store as they come
back: the one writer, so resuming and the store's done marks stay as in a single-process run. A
tile's cells are computed as :func:`~fcnclassify.evaluation.streamed.streamed_evaluate` computes
them anywhere, so the map equals the single-process map.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..evaluation.streamed import StreamStats
from .work import SlideTilesWork

__all__ = ["TILES_PER_JOB", "tile_runner"]

TILES_PER_JOB = 4  # tiles sent to a worker at once: enough work per job, fine-grained retries


def tile_runner(load: Callable, path: str, *, scale: float, address: str | None = None,
                device: str | None = None, dtype: str | None = None,
                tiles_per_job: int | None = None) -> Callable:
    """A :data:`~fcnclassify.outputs.slide.TileRunner` that evaluates the tiles on Ray.

    Args:
        load: builds the model in each actor (picklable).
        path: the slide; every worker must be able to read it.
        scale, device, dtype: as the single-process run.
        address: the Ray cluster (None: a local one, or the one this process joined).
        tiles_per_job: tiles per Ray job (default :data:`TILES_PER_JOB`).
    """
    from .ray import map_ordered

    def run(plan, mask, store) -> StreamStats:
        pending = set(store.pending())
        todo = [t for t in plan.tiles if (t.rows.start, t.cols.start) in pending]
        per_job = tiles_per_job or TILES_PER_JOB
        jobs = [todo[i:i + per_job] for i in range(0, len(todo), per_job)]
        work = SlideTilesWork(load, str(path), scale, tuple(plan.size), tuple(plan.shape),
                              tuple(plan.tile), mask, device, dtype)
        stats = StreamStats(resumed=len(plan.tiles) - len(todo))
        start = time.perf_counter()
        results = map_ordered(work, jobs, address=address,
                              num_gpus=0.0 if device == "cpu" else None) if jobs else []
        for job, cells in zip(jobs, results):
            for (row0, col0, logits), tile in zip(cells, job):
                if logits is None:
                    store.skip(row0, col0)
                    stats.skipped += 1
                else:
                    store.write(row0, col0, logits)
                    stats.evaluated += 1
                    y0, y1, x0, x1 = tile.crop
                    stats.megapixels += (y1 - y0) * (x1 - x0) / 1e6
        stats.seconds = time.perf_counter() - start
        return stats

    return run
