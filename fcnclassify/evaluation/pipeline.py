"""Many images fast: decode in parallel threads, in input order, while the model runs.

OpenCV's decoder releases the GIL, so a thread pool decodes several photos at once on a CPU while
the main thread runs the network; a bounded read-ahead keeps memory flat on long folders.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..network.convert import FullyConvNet
from ..network.device import prepare, resolve
from .dense import dense_evaluate
from ..io.images import DEFAULT_MAX_PIXELS, ImageError, read_image
from .scoremap import ScoreMap

__all__ = ["default_workers", "dense_maps", "iter_batches", "iter_images"]


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

    A file that cannot be read is yielded with its :class:`~fcnclassify.io.images.ImageError` in place of
    the pixels, so that one bad photo in a folder does not stop the others; any other exception
    (a bug) is raised.

    Args:
        paths: Image files, in the order wanted.
        max_pixels: Passed to :func:`~fcnclassify.io.images.read_image`.
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


def iter_batches(paths: Iterable[str | os.PathLike], *, batch_size: int = 8,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None,
                 ) -> Iterator[list[tuple[Path, np.ndarray | ImageError]]]:
    """Consecutive images of equal size, grouped into batches of at most ``batch_size``, in order.

    A run of photos from one camera becomes full batches; an image of another size, or one that
    cannot be read, starts a new group (a failed one is yielded alone with its error).
    """
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1 but got {batch_size}")
    batch: list[tuple[Path, np.ndarray | ImageError]] = []
    for path, image in iter_images(paths, max_pixels=max_pixels, workers=workers,
                                   prefetch=max(2 * batch_size, 2 * (workers or default_workers()))):
        fits = (batch and not isinstance(image, ImageError)
                and image.shape == batch[0][1].shape and len(batch) < batch_size)
        if batch and not fits:
            yield batch
            batch = []
        if isinstance(image, ImageError):
            yield [(path, image)]
        else:
            batch.append((path, image))
    if batch:
        yield batch


def dense_maps(fcn: FullyConvNet, paths: Iterable[str | os.PathLike], *,
               normalize: Callable[[np.ndarray], torch.Tensor], batch_size: int = 8,
               workers: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               scales: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
               flip: bool = False,
               device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               max_memory: int | None = None,
               ) -> Iterator[tuple[Path, np.ndarray | ImageError, list[ScoreMap] | None]]:
    """Score maps of many images: decoding runs in threads while the model runs on batches.

    Args:
        fcn: The network.
        paths: Image files, in the order wanted.
        normalize: RGB uint8 ``(H, W, 3)`` -> normalised ``(3, H, W)`` float tensor (a model's
            :class:`~fcnclassify.models.registry.Normalization`).
        batch_size: Images of equal size evaluated together.
        workers, max_pixels: As in :func:`iter_images`.
        scales, sizes, flip, device, dtype, max_memory: As in :func:`~fcnclassify.evaluation.dense.dense_evaluate`;
            an image smaller than one window is zero-padded (``pad=True``).

    Yields:
        ``(path, image, maps)`` in input order; ``(path, ImageError, None)`` for an unreadable file.
    """
    device, dtype = resolve(device, dtype)
    fcn, nhwc = prepare(fcn, device=device, dtype=dtype)  # once, not per batch
    for batch in iter_batches(paths, batch_size=batch_size, max_pixels=max_pixels, workers=workers):
        if isinstance(batch[0][1], ImageError):
            yield batch[0][0], batch[0][1], None
            continue
        x = torch.stack([normalize(image) for _, image in batch])
        maps = dense_evaluate(fcn, x, scales=scales, sizes=sizes, flip=flip, device=device, dtype=dtype,
                              channels_last=nhwc, pad=True, max_memory=max_memory)
        for (path, image), image_maps in zip(batch, maps):
            yield path, image, image_maps
