"""Exact tiled dense evaluation: huge images under a memory budget, equal to the untiled map.

The map is split into tiles of output cells. For each tile the input region that the receptive fields
of its cells cover is cropped out, its start rounded down to a multiple of the network's stride so
that every layer's grid lines up with the untiled one, and clipped to the image. The network runs on
the crop, and the tile's cells are taken from the crop's map. A cell is computed from the same pixels
as in the untiled pass: its receptive field lies inside the crop, except where the crop edge is the
image edge, where the crop is zero-padded exactly as the whole image is. So the stitched map equals
the untiled one (bit-equal in practice on the CPU).

Networks with global context (squeeze-and-excitation, group norm) see the whole image in every cell:
no tiling can reproduce them, and they are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .convert import FullyConvNet
from .geometry import Geometry
from .memory import activation_memory, available_memory, bytes_per_pixel

__all__ = ["Tile", "choose_tile", "needs_tiling", "plan_tiles", "tiled_forward"]

# share of the available memory that the automatic switch to tiling leaves to one pass
AUTO_FRACTION = 0.5


class Tile(NamedTuple):
    """Output cells ``rows x cols`` of one tile and the input ``crop`` that computes them.

    Ranges are half-open; ``crop`` is ``(y0, y1, x0, x1)`` in input pixels; ``first`` is the
    ``(row, col)`` in the whole map of the crop's cell 0.
    """

    rows: range
    cols: range
    crop: tuple[int, int, int, int]
    first: tuple[int, int]


def tiled_forward(fcn: FullyConvNet, x: torch.Tensor, *, max_memory: int | None = None,
                  tile: int | tuple[int, int] | None = None, progress: bool = False) -> torch.Tensor:
    """Logits of ``fcn`` on ``x``, computed tile by tile within a memory budget.

    Args:
        fcn: The network, already on the device and in the dtype of ``x``.
        x: Normalised input ``(N, 3, H, W)``.
        max_memory: Activation-memory budget in bytes for one tile (weights and the whole input and
            output are not counted); None: half of what the device has available.
        tile: Output cells per tile side (``(rows, cols)`` or one int); overrides ``max_memory``.
        progress: Show a progress bar over the tiles (tqdm; shown only on a terminal).

    Returns:
        Logits ``(N, classes, h, w)``, float32 on the CPU, equal to ``fcn(x)``.

    Raises:
        ValueError: The network has global context, the input is smaller than one window, or not
            even one cell fits in ``max_memory``.
    """
    geometry = fcn.geometry
    _check_tileable(fcn, x)
    height, width = x.shape[-2:]
    out_h, out_w = geometry.output_size(height, width)
    if tile is None:
        if max_memory is None:
            max_memory = int(available_memory(x.device) * AUTO_FRACTION)
        tile = choose_tile(fcn, (height, width), max_memory, batch=len(x), dtype=x.dtype)
    tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
    if min(tile) < 1:
        raise ValueError(f"expected a tile of at least one cell but got {tile}")
    tiles = list(plan_tiles(geometry, (height, width), tile))
    out = torch.empty(len(x), fcn.num_classes, out_h, out_w, dtype=torch.float32)
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    bar = tqdm(tiles, desc="tiles", unit="tile", disable=not progress or len(tiles) == 1, leave=False)
    with torch.inference_mode():
        for t in bar:
            y0, y1, x0, x1 = t.crop
            logits = fcn(x[..., y0:y1, x0:x1].contiguous(memory_format=fmt))
            i0, j0 = t.rows.start - t.first[0], t.cols.start - t.first[1]
            if logits.shape[-2] < i0 + len(t.rows) or logits.shape[-1] < j0 + len(t.cols):
                raise AssertionError(f"tile {t} gave a map of {tuple(logits.shape[-2:])}")  # a bug
            out[..., t.rows.start:t.rows.stop, t.cols.start:t.cols.stop] = (
                logits[..., i0:i0 + len(t.rows), j0:j0 + len(t.cols)].float().cpu())
    return out


def plan_tiles(geometry: Geometry, size: tuple[int, int], tile: tuple[int, int]) -> Iterator[Tile]:
    """The tiles covering the map of an input of ``size = (H, W)``, row by row."""
    rows = _axis_plan(geometry, size[0], tile[0])
    cols = _axis_plan(geometry, size[1], tile[1])
    for r, (y0, y1), fy in rows:
        for c, (x0, x1), fx in cols:
            yield Tile(r, c, (y0, y1, x0, x1), (fy, fx))


def _axis_plan(geometry: Geometry, n: int, cells: int) -> list[tuple[range, tuple[int, int], int]]:
    """Along one axis: ``(cells owned, input crop, map index of the crop's cell 0)`` per tile."""
    total = geometry.output_size(n, n)[0]
    plan = []
    for start in range(0, total, cells):
        stop = min(start + cells, total)
        lo, hi = _crop(geometry, start, stop, n)
        plan.append((range(start, stop), (lo, hi), lo // geometry.stride))
    return plan


def _crop(geometry: Geometry, start: int, stop: int, n: int) -> tuple[int, int]:
    """Input range ``[lo, hi)`` that computes cells ``start .. stop - 1`` exactly (one axis)."""
    s, half = geometry.stride, geometry.receptive_field / 2
    lo = math.floor(geometry.center - half + start * s)  # first pixel of cell `start`'s field
    hi = math.ceil(geometry.center + half + (stop - 1) * s)  # one past the last of cell `stop - 1`
    lo = max(0, lo // s * s)  # aligned: every layer's grid in the crop is a shift of the whole one
    return lo, min(n, hi)


def choose_tile(fcn: FullyConvNet, size: tuple[int, int], max_memory: int, *, batch: int = 1,
                dtype: torch.dtype | None = None) -> tuple[int, int]:
    """The largest tile, in output cells ``(rows, cols)``, whose crop fits in ``max_memory`` bytes.

    Tiles are square, or as long as the map on an axis that the map does not fill.
    """
    g = fcn.geometry
    out_h, out_w = g.output_size(*size)

    def fits(t: int) -> bool:
        th, tw = min(t, out_h), min(t, out_w)
        crop = (_crop_len(g, th, size[0]), _crop_len(g, tw, size[1]))
        return activation_memory(fcn, crop, batch=batch, dtype=dtype) <= max_memory

    longest = max(out_h, out_w)
    if fits(longest):
        return out_h, out_w
    if not fits(1):
        one = activation_memory(fcn, (_crop_len(g, 1, size[0]), _crop_len(g, 1, size[1])),
                                batch=batch, dtype=dtype)
        raise ValueError(f"expected max_memory of at least {one} bytes (one cell of a batch of "
                         f"{batch}) but got {max_memory}")
    lo, hi = 1, longest  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return min(lo, out_h), min(lo, out_w)


def _crop_len(geometry: Geometry, cells: int, n: int) -> int:
    """The longest crop, in input pixels, of a tile of ``cells`` cells on an axis of ``n`` pixels."""
    total = geometry.output_size(n, n)[0]
    if cells >= total:
        return n
    lo, hi = _crop(geometry, total // 2, total // 2 + cells, n)  # an inner tile: halo on both sides
    return min(n, hi - lo + geometry.stride)


def needs_tiling(fcn: FullyConvNet, x: torch.Tensor) -> bool:
    """Whether the untiled pass on ``x`` would take more than half of the device's available memory."""
    if fcn.geometry.global_context:
        return False
    pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
    if pixels < 2**20:  # a megapixel never needs it on a machine that holds the weights
        return False
    limit = available_memory(x.device) * AUTO_FRACTION
    if bytes_per_pixel(fcn, dtype=x.dtype) * pixels < 0.8 * limit:  # clearly fits: skip the replay
        return False
    return activation_memory(fcn, tuple(x.shape[-2:]), batch=len(x), dtype=x.dtype) > limit


def _check_tileable(fcn: FullyConvNet, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected an input of shape (N, 3, H, W) but got {tuple(x.shape)}")
    if fcn.geometry.global_context:
        raise ValueError(
            f"{type(fcn.body).__name__} has layers that pool over the whole image (squeeze-and-"
            "excitation or group norm): every cell depends on every pixel, so it cannot be tiled "
            "exactly; run it untiled (max_memory=None)")
    low = fcn.geometry.min_input
    if min(x.shape[-2:]) < low:
        raise ValueError(f"expected an input of at least {low}x{low} pixels but got "
                         f"{x.shape[-2]}x{x.shape[-1]}")
