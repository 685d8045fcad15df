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
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..network.convert import FullyConvNet
from ..network.geometry import Geometry
from .memory import activation_memory, available_memory, bytes_per_pixel, format_bytes

__all__ = ["SlowTilingWarning", "Tile", "budget_error", "choose_tile", "needs_tiling", "plan_tiles",
           "smallest_budget", "tiled_forward"]

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


class SlowTilingWarning(UserWarning):
    """The budget forces tiles so small that their overlap makes the pass much slower."""

    once_per_run = True  # the command line says it once, not once per image and size


# a plan whose crops hold this many times the image's pixels is "much slower" (work ~ pixels)
SLOW = 1.5


def tiled_forward(fcn: FullyConvNet, x: torch.Tensor, *, max_memory: int | None = None,
                  tile: int | tuple[int, int] | None = None, held: int = 0,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  progress: bool = False) -> torch.Tensor:
    """Logits of ``fcn`` on ``x``, computed tile by tile within a memory budget.

    The budget covers everything the pass holds besides the weights: ``held`` bytes that the caller
    keeps (other scales, earlier maps), the input ``x``, the output map, and the working memory of
    one tile (its crop, activations and logits, :func:`fcnclassify.evaluation.memory.activation_memory`). The
    tiles get what is left, and are chosen by :func:`choose_tile` for the least overlap work.

    Args:
        fcn: The network, already on the device and in its compute dtype.
        x: Input ``(N, 3, H, W)``: normalised, in the network's dtype, or anything that ``transform``
            turns into that crop by crop (e.g. uint8 pixels, 1 byte each instead of 4).
        max_memory: Budget in bytes (see above); None: half of what the device has available.
        tile: Output cells per tile side (``(rows, cols)`` or one int); overrides ``max_memory``.
        held: Bytes the caller holds during the pass, counted against ``max_memory``.
        transform: Applied to each input crop before the network (normalisation, dtype, layout).
        progress: Show a progress bar over the tiles (tqdm; shown only on a terminal).

    Returns:
        Logits ``(N, classes, h, w)``, float32 on the CPU, equal to ``fcn(transform(x))``.

    Raises:
        ValueError: The network has global context, the input is smaller than one window, or
            ``max_memory`` is below the smallest budget that works (named in the message).

    Warns:
        SlowTilingWarning: The tiles fitting the budget overlap so much that their crops hold at
            least :data:`SLOW` times the image's pixels.
    """
    geometry = fcn.geometry
    _check_tileable(fcn, x)
    height, width = x.shape[-2:]
    out_h, out_w = geometry.output_size(height, width)
    if tile is None:
        if max_memory is None:
            max_memory = int(available_memory(x.device) * AUTO_FRACTION)
        fixed = _held_by_pass(fcn, x, held)
        dtype = next(fcn.parameters()).dtype if transform is not None else x.dtype
        tile = choose_tile(fcn, (height, width), max_memory - fixed, batch=len(x), dtype=dtype,
                           fixed=fixed, budget=max_memory, staging=transform is not None)
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
            crop = x[..., y0:y1, x0:x1]
            crop = crop.contiguous(memory_format=fmt) if transform is None else transform(crop)
            logits = fcn(crop)
            del crop
            i0, j0 = t.rows.start - t.first[0], t.cols.start - t.first[1]
            if logits.shape[-2] < i0 + len(t.rows) or logits.shape[-1] < j0 + len(t.cols):
                raise AssertionError(f"tile {t} gave a map of {tuple(logits.shape[-2:])}")  # a bug
            out[..., t.rows.start:t.rows.stop, t.cols.start:t.cols.stop] = (
                logits[..., i0:i0 + len(t.rows), j0:j0 + len(t.cols)].float().cpu())
            del logits
    return out


def _nbytes(x: torch.Tensor) -> int:
    return x.untyped_storage().nbytes() if x.device.type != "meta" else x.numel() * x.element_size()


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


class _AxisOption(NamedTuple):
    longest: int  # the longest crop, input pixels
    work: int  # the crops' lengths added up, input pixels
    cells: int  # cells per tile


def _axis_options(geometry: Geometry, n: int) -> list[_AxisOption]:
    """Tile lengths worth considering on an axis of ``n`` pixels, longest crop ascending and work
    strictly descending: a length with a longer crop and no less work is never the better choice."""
    total = geometry.output_size(n, n)[0]
    options = []
    for cells in range(1, total + 1):
        crops = [hi - lo for _, (lo, hi), _ in _axis_plan(geometry, n, cells)]
        options.append(_AxisOption(max(crops), sum(crops), cells))
    options.sort(key=lambda o: (o.longest, o.work, -o.cells))
    front: list[_AxisOption] = []
    for option in options:
        if not front or option.work < front[-1].work:
            front.append(option)
    return front


def choose_tile(fcn: FullyConvNet, size: tuple[int, int], max_memory: int, *, batch: int = 1,
                dtype: torch.dtype | None = None, fixed: int = 0, budget: int | None = None,
                staging: bool = False, extra_per_pixel: int = 0) -> tuple[int, int]:
    """The tile, in output cells ``(rows, cols)``, of the least overlap work whose crops fit.

    Work is the number of input pixels that the crops hold together (the network's cost grows with
    it); a crop fits when :func:`fcnclassify.evaluation.memory.activation_memory` of the largest one is at most
    ``max_memory`` bytes. Memory grows with each side of the crop, so for each tile height on the
    Pareto front (shorter crops, more work) the widest tile that fits is the best one: a walk that
    costs one shape-only replay per step.

    Args:
        fcn: The network.
        size: The input ``(H, W)`` in pixels.
        max_memory: Bytes for one tile's working memory.
        batch, dtype: As in :func:`fcnclassify.evaluation.memory.activation_memory`.
        fixed, budget: For messages only: bytes held besides the tile, and the whole budget that
            ``max_memory`` is what is left of (default ``max_memory``), in the user's units.
        staging: Count one float32 copy of the crop besides the network's input (a transform's).
        extra_per_pixel: Bytes per crop pixel held besides (a reader's copies of the crop).

    Raises:
        ValueError: Not even one cell fits: names the smallest budget that works.

    Warns:
        SlowTilingWarning: The best tile that fits does at least :data:`SLOW` times the work of one pass.
    """
    g = fcn.geometry
    rows, cols = _axis_options(g, size[0]), _axis_options(g, size[1])

    def need(h: int, w: int) -> int:
        extra = batch * h * w * ((3 * 4 if staging else 0) + extra_per_pixel)
        return activation_memory(fcn, (h, w), batch=batch, dtype=dtype) + extra

    budget = max_memory if budget is None else budget
    smallest = need(rows[0].longest, cols[0].longest)
    if smallest > max_memory:
        raise budget_error(fixed, smallest, budget, batch=batch)
    best, j = None, len(cols) - 1
    for r in rows:  # crops grow taller, so the widest that fits can only get narrower
        while j >= 0 and need(r.longest, cols[j].longest) > max_memory:
            j -= 1
        if j < 0:
            break
        work = r.work * cols[j].work
        if best is None or work < best[0]:
            best = (work, r.cells, cols[j].cells)
    work, tile = best[0], best[1:]
    ratio = work / (size[0] * size[1])
    if ratio >= SLOW:
        warnings.warn(SlowTilingWarning(
            f"max_memory {format_bytes(budget, like=budget)} leaves room for tiles of {tile[0]}x"
            f"{tile[1]} cells, whose overlapping crops hold {ratio:.1f}x the image's pixels: about "
            f"{ratio:.1f}x slower than {_cheap_budget(need, rows, cols, size, fixed, budget)}"),
            stacklevel=3)
    return tile


def smallest_budget(fcn: FullyConvNet, x: torch.Tensor, *, held: int = 0) -> tuple[int, int]:
    """What :func:`tiled_forward` on ``x`` needs at least: ``(fixed, tile)``, the bytes it holds
    besides its tiles (``held``, the input, the map) and the working memory of one-cell tiles.
    ``x`` may be a meta tensor: only its shape, dtype and layout are read."""
    _check_tileable(fcn, x)
    g = fcn.geometry
    rows, cols = _axis_options(g, x.shape[-2]), _axis_options(g, x.shape[-1])
    tile = activation_memory(fcn, (rows[0].longest, cols[0].longest), batch=len(x), dtype=x.dtype)
    return _held_by_pass(fcn, x, held), tile


def budget_error(fixed: int, tile: int, budget: int, *, batch: int) -> ValueError:
    """The refusal of a budget below ``fixed + tile`` bytes, in the units the user gave."""
    detail = f"{format_bytes(fixed, like=budget, up=True)} for the image and its maps, " if fixed else ""
    return ValueError(
        f"expected max_memory of at least {format_bytes(fixed + tile, like=budget, up=True)} "
        f"({detail}{format_bytes(tile, like=budget, up=True)} for one-cell tiles of a batch "
        f"of {batch}) but got {format_bytes(budget, like=budget)}")


def _held_by_pass(fcn: FullyConvNet, x: torch.Tensor, held: int) -> int:
    """Bytes a tiled pass holds besides its tiles: the caller's, the input and the output map."""
    out_h, out_w = fcn.geometry.output_size(*x.shape[-2:])
    return held + _nbytes(x) + len(x) * fcn.num_classes * out_h * out_w * 4


def _cheap_budget(need: Callable[[int, int], int], rows: list[_AxisOption], cols: list[_AxisOption],
                  size: tuple[int, int], fixed: int, budget: int) -> str:
    """"a budget of at least X" for the least memory whose plan does under 1.1x the image's work."""
    limit = 1.1 * size[0] * size[1]
    least, j = None, len(cols) - 1
    for r in rows:  # the narrowest crop that keeps the work under the limit, per crop height
        while j > 0 and r.work * cols[j - 1].work <= limit:
            j -= 1
        if r.work * cols[j].work <= limit:
            m = need(r.longest, cols[j].longest)
            least = m if least is None else min(least, m)
    if least is None:
        return "one pass"
    return f"with max_memory of at least {format_bytes(fixed + least, like=budget, up=True)}"


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
            f"{type(getattr(fcn, 'body', fcn)).__name__} has layers that pool over the whole image (squeeze-and-"
            "excitation or group norm): every cell depends on every pixel, so it cannot be tiled "
            "exactly; run it untiled (max_memory=None)")
    low = fcn.geometry.min_input
    if min(x.shape[-2:]) < low:
        raise ValueError(f"expected an input of at least {low}x{low} pixels but got "
                         f"{x.shape[-2]}x{x.shape[-1]}")
