"""Streamed dense evaluation: images that never fit in memory, read tile by tile from their file.

The exact tiling of :mod:`fcnclassify.evaluation.tiling`, with the reader in the loop: the map is
split into tiles of output cells, and for each tile only the input crop that its cells' receptive
fields cover is read from the file (:meth:`fcnclassify.io.slides.Slide.read_scaled`, tile-consistent:
a region read alone equals that region of the whole image read at once), normalised, and evaluated.
The tile's logits go to a sink (a chunked zarr store, :class:`fcnclassify.outputs.scorestore.ScoreStore`,
or :class:`ArraySink` in memory); the map is never held whole. So the streamed map equals the
in-memory map of the same image cell for cell, whatever the image's size.

Memory is bounded by the budget whatever the image size: one tile's crop (as read, uint8, and as
the network's float input), its working memory, and its logits. Background tiles, where a tissue
mask computed on a low pyramid level holds no foreground, are skipped and left NaN in the map. A
sink remembers which tiles are done, so an interrupted run resumes with the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..network.convert import FullyConvNet
from ..network.device import prepare, resolve
from ..network.geometry import Geometry
from .memory import available_memory
from .tiling import AUTO_FRACTION, Tile, _check_tileable, _crop, choose_tile, plan_tiles

__all__ = ["ArraySink", "Mask", "MapSink", "RegionSource", "StreamPlan", "StreamStats", "plan_stream",
           "streamed_evaluate"]

# bytes per crop pixel that reading holds besides the network's input: the RGB crop, and the
# reader's decoded chunks around it (about as much again)
READ_BYTES = 2 * 3
# cells per tile side at most: a tile is one chunk of the stored map (and the unit of resuming)
TILE_CAP = 64


class RegionSource(Protocol):
    """An image read by regions at a scale (:class:`fcnclassify.io.slides.Slide`)."""

    def scaled_size(self, scale: float) -> tuple[int, int]: ...

    def read_scaled(self, scale: float, y0: int, y1: int, x0: int, x1: int) -> np.ndarray: ...


class MapSink(Protocol):
    """Where the tiles' logits go: ``write`` a tile's ``(classes, rows, cols)`` at its first cell,
    ``skip`` a background tile, ``pending`` the first cells of the tiles not yet done."""

    def write(self, row0: int, col0: int, logits: np.ndarray) -> None: ...

    def skip(self, row0: int, col0: int) -> None: ...

    def pending(self) -> list[tuple[int, int]]: ...


class Mask(NamedTuple):
    """A foreground mask of the image: ``mask[i, j]`` covers level-0 pixels ``[i * d, (i + 1) * d)``
    (``d = downsample``) along each axis."""

    mask: np.ndarray
    downsample: float


@dataclass
class StreamPlan:
    """The tiles of a streamed evaluation.

    Attributes:
        size: ``(H, W)`` of the image at the evaluated scale (the network's input).
        shape: ``(rows, cols)`` of the map.
        tile: cells per tile ``(rows, cols)``; every tile has this many except the last row and column.
        tiles: the tiles, row by row (:class:`fcnclassify.evaluation.tiling.Tile`).
    """

    size: tuple[int, int]
    shape: tuple[int, int]
    tile: tuple[int, int]
    tiles: list[Tile]


@dataclass
class StreamStats:
    """What a streamed evaluation did: tiles evaluated, skipped as background, done by an earlier
    run; input megapixels read; seconds."""

    evaluated: int = 0
    skipped: int = 0
    resumed: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0


class ArraySink:
    """The map in memory, ``(classes, rows, cols)`` float32 (NaN where skipped): small images,
    tests, and the tile jobs of one image spread over workers."""

    def __init__(self, classes: int, shape: tuple[int, int]) -> None:
        self.logits = np.full((classes, *shape), np.nan, dtype=np.float32)
        self.done: set[tuple[int, int]] = set()
        self.skipped: set[tuple[int, int]] = set()

    def write(self, row0: int, col0: int, logits: np.ndarray) -> None:
        self.logits[:, row0:row0 + logits.shape[1], col0:col0 + logits.shape[2]] = logits
        self.done.add((row0, col0))

    def skip(self, row0: int, col0: int) -> None:
        self.skipped.add((row0, col0))

    def pending(self) -> list[tuple[int, int]] | None:
        return None  # nothing done before: every tile


def plan_stream(fcn: FullyConvNet, size: tuple[int, int], *, max_memory: int | None = None,
                tile: int | tuple[int, int] | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str = "cpu", cap: int = TILE_CAP) -> StreamPlan:
    """The tiles for an image of ``size = (H, W)`` at the evaluated scale.

    The tile is the one of least overlap work whose working memory fits (:func:`choose_tile`), at
    most ``cap`` cells a side. ``max_memory`` counts one tile's crop as read (uint8, and a second
    copy for the reader's decoded chunks), its float input, the network's working memory and its
    logits; the weights are not counted. None: half of what the device has available.

    Raises:
        ValueError: the image is smaller than one window, the network has global context, or the
            budget cannot hold even one-cell tiles (naming the smallest that works).
    """
    geometry = fcn.geometry
    _check_tileable(fcn, torch.empty(1, 3, *size, device="meta"))
    shape = geometry.output_size(*size)
    if tile is None:
        budget = max_memory if max_memory is not None else int(available_memory(device) * AUTO_FRACTION)
        # chosen for a part of the image of cap x cap cells: the same tiles, far fewer candidates
        part = tuple(min(n, _crop(geometry, 0, cap, n)[1]) for n in size)
        tile = choose_tile(fcn, part, budget, dtype=dtype, staging=True, budget=budget,
                           extra_per_pixel=READ_BYTES)
    tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
    tile = (min(tile[0], cap, shape[0]), min(tile[1], cap, shape[1]))
    return StreamPlan(tuple(size), tuple(shape), tile, list(plan_tiles(geometry, size, tile)))


def streamed_evaluate(
    fcn: FullyConvNet,
    source: RegionSource,
    normalize: Callable[[np.ndarray], torch.Tensor],
    sink: MapSink,
    *,
    scale: float = 1.0,
    plan: StreamPlan | None = None,
    mask: Mask | None = None,
    max_memory: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool | None = None,
    progress: bool = False,
) -> StreamStats:
    """Evaluate ``fcn`` on ``source`` at ``scale``, tile by tile, into ``sink``.

    Args:
        fcn: the fully-convolutional network.
        source: the image, read by regions (:class:`fcnclassify.io.slides.Slide`).
        normalize: ``(h, w, 3)`` uint8 RGB -> ``(3, h, w)`` float tensor (the model's
            :class:`~fcnclassify.models.loaded.Normalization`).
        sink: receives each tile's logits ``(classes, rows, cols)`` as float32 numpy, at the tile's
            first cell; its ``pending()`` (None: all) says which tiles are left to do.
        scale: level-0 pixels are resized by this factor before the network (0.5: half the width).
        plan: the tiles (:func:`plan_stream`); default: planned for ``max_memory``.
        mask: foreground mask; a cell whose own area (its centre +- half a stride) holds no
            foreground is background: NaN in the map, and a tile of background cells only is
            skipped (``sink.skip``), not read nor evaluated. None: every cell is evaluated.
        max_memory: budget in bytes for one tile's reading and working memory (see
            :func:`plan_stream`).
        device, dtype, channels_last: as in :func:`fcnclassify.evaluation.dense.dense_evaluate`.
        progress: a progress bar over the tiles with megapixels per second and the time left.

    Returns:
        What was done (:class:`StreamStats`).
    """
    device, dtype = resolve(device, dtype)
    fcn, nhwc = prepare(fcn, device=device, dtype=dtype, channels_last=channels_last)
    size = source.scaled_size(scale)
    if plan is None:
        plan = plan_stream(fcn, size, max_memory=max_memory, dtype=dtype, device=device)
    elif tuple(plan.size) != tuple(size):
        raise ValueError(f"expected a plan for {size[1]}x{size[0]} pixels but got one for "
                         f"{plan.size[1]}x{plan.size[0]}")
    pending = sink.pending()
    if pending is not None:
        pending = set(pending)
    todo = plan.tiles if pending is None else [t for t in plan.tiles if _first(t) in pending]
    stats = StreamStats(resumed=len(plan.tiles) - len(todo))
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    counts = None if mask is None else _summed_area(mask.mask)
    start = time.perf_counter()
    bar = tqdm(todo, desc="tiles", unit="tile", disable=not progress, leave=False, smoothing=0.1)
    with torch.inference_mode():
        for t in bar:
            foreground = None if mask is None else _foreground(fcn.geometry, t, mask, scale, counts)
            if foreground is not None and not foreground.any():
                sink.skip(*_first(t))
                stats.skipped += 1
                continue
            y0, y1, x0, x1 = t.crop
            rgb = source.read_scaled(scale, y0, y1, x0, x1)
            x = normalize(rgb)[None].to(device=device, dtype=dtype).contiguous(memory_format=fmt)
            del rgb
            logits = fcn(x)
            del x
            i0, j0 = t.rows.start - t.first[0], t.cols.start - t.first[1]
            cells = logits[0, :, i0:i0 + len(t.rows), j0:j0 + len(t.cols)]
            if tuple(cells.shape[1:]) != (len(t.rows), len(t.cols)):
                raise AssertionError(f"tile {t} gave a map of {tuple(logits.shape[-2:])}")  # a bug
            cells = cells.float().cpu().numpy()
            if foreground is not None:
                cells[:, ~foreground] = np.nan  # background cells of a tile with some tissue
            sink.write(*_first(t), cells)
            del logits, cells
            stats.evaluated += 1
            stats.megapixels += (y1 - y0) * (x1 - x0) / 1e6
            stats.seconds = time.perf_counter() - start
            bar.set_postfix_str(f"{stats.megapixels_per_second:.1f} Mpx/s", refresh=False)
    stats.seconds = time.perf_counter() - start
    return stats


def _first(t: Tile) -> tuple[int, int]:
    return t.rows.start, t.cols.start


def _foreground(geometry: Geometry, t: Tile, mask: Mask, scale: float,
                counts: np.ndarray) -> np.ndarray:
    """``(rows, cols)``: whether each cell's own area (its centre +- half a stride) holds a
    foreground pixel of the mask; ``counts`` is the mask's summed-area table."""
    d = mask.downsample * scale  # scaled-image pixels per mask pixel
    h, w = mask.mask.shape

    def spans(cells: range, n: int) -> tuple[np.ndarray, np.ndarray]:
        centres = np.array([geometry.cell_center(k) for k in cells], dtype=np.float64)
        lo = np.clip(np.floor((centres - geometry.stride / 2) / d), 0, n).astype(np.int64)
        hi = np.clip(np.ceil((centres + geometry.stride / 2) / d), 0, n).astype(np.int64)
        return lo, np.maximum(hi, lo)

    (i0, i1), (j0, j1) = spans(t.rows, h), spans(t.cols, w)
    inside = (counts[i1[:, None], j1[None, :]] - counts[i0[:, None], j1[None, :]]
              - counts[i1[:, None], j0[None, :]] + counts[i0[:, None], j0[None, :]])
    return inside > 0


def _summed_area(mask: np.ndarray) -> np.ndarray:
    """``S[i, j]`` = foreground pixels in ``mask[:i, :j]``."""
    counts = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    counts[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return counts
