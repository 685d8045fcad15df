"""Many images fast: decode in parallel threads, in input order, while the model runs.

OpenCV's decoder releases the GIL, so a thread pool decodes several photos at once on a CPU while
the main thread runs the network; a bounded read-ahead keeps memory flat on long folders.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .images import DEFAULT_MAX_PIXELS, ImageError, read_image

__all__ = ["default_workers", "iter_images"]


def default_workers() -> int:
    """Decoding threads used when none are asked for: the usable CPU cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def iter_images(paths: Iterable[str | os.PathLike], *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                workers: int | None = None, prefetch: int | None = None,
                ) -> Iterator[tuple[Path, np.ndarray | ImageError]]:
    """Reads images in parallel threads and yields them in input order.

    A file that cannot be read is yielded with its :class:`~fcnclassify.images.ImageError` in place of
    the pixels, so that one bad photo in a folder does not stop the others; any other exception
    (a bug) is raised.

    Args:
        paths: Image files, in the order wanted.
        max_pixels: Passed to :func:`~fcnclassify.images.read_image`.
        workers: Decoding threads; 0 decodes in the calling thread, None uses :func:`default_workers`.
        prefetch: Images decoded ahead of the consumer (memory bound); default ``2 * workers``.

    Yields:
        ``(path, image)`` with image an RGB uint8 ``(H, W, 3)`` array, or ``(path, ImageError)``.
    """
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"expected workers >= 0 or None, but got {workers}")
    if prefetch is None:
        prefetch = 2 * max(workers, 1)
    if prefetch < 1:
        raise ValueError(f"expected prefetch >= 1 or None, but got {prefetch}")
    paths = (Path(p) for p in paths)
    if workers == 0:
        for path in paths:
            yield path, _read(path, max_pixels)
        return

    pending: deque[tuple[Path, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fcnclassify-decode") as pool:
        try:
            for path in paths:
                pending.append((path, pool.submit(_read, path, max_pixels)))
                if len(pending) >= prefetch:
                    done_path, future = pending.popleft()
                    yield done_path, future.result()
            while pending:
                done_path, future = pending.popleft()
                yield done_path, future.result()
        finally:  # the consumer stopped early: do not decode the rest
            for _, future in pending:
                future.cancel()


def _read(path: Path, max_pixels: int | None) -> np.ndarray | ImageError:
    try:
        return read_image(path, max_pixels=max_pixels)
    except ImageError as err:
        return err
