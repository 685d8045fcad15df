"""Dense evaluation: run a fully-convolutional network over whole images, at several scales and flips."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..network.convert import FullyConvNet
from ..network.device import prepare, resolve
from ..network.geometry import Geometry
from .scales import scale_factors
from .scoremap import ScoreMap

__all__ = ["dense_evaluate", "rescale", "run"]


def dense_evaluate(
    fcn: FullyConvNet,
    images: torch.Tensor,
    *,
    scales: Sequence[float] | None = None,
    sizes: Sequence[int] | None = None,
    flip: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool | None = None,
    pad: bool = False,
    max_memory: int | None = None,
    stride_factor: int = 1,
    method: str = "shift",
    progress: bool = False,
) -> list[list[ScoreMap]]:
    """Score maps of a batch of images at every scale, and flipped if asked.

    The one evaluation loop of the package: for each scale the batch is resized once (one rule,
    :func:`rescale`), then for each flip evaluated by one forward strategy: the whole input, exact
    tiles within a memory budget (:mod:`fcnclassify.evaluation.tiling`), or shift-and-stitch / offset pooling
    for a finer stride (:mod:`fcnclassify.evaluation.stitch`). :func:`fcnclassify.evaluation.predict.predict`, the
    ``dense`` protocol of :mod:`fcnclassify.evaluation.protocols` and the commands all come through here.

    Args:
        images: normalised images, ``(N, 3, H, W)`` or one ``(3, H, W)``.
        scales: resize factors; each image is resized to ``round(H * s) x round(W * s)``.
        sizes: instead of ``scales``, the VGG paper's Q: the shorter side in pixels
            (:mod:`fcnclassify.evaluation.scales`). Neither: the images as they are.
        flip: also evaluate the horizontally flipped images (the VGG protocol).
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``/None.
        dtype: float32 (default), bfloat16, or float16 (CUDA only).
        channels_last: NHWC memory format (default on).
        pad: zero-pad (bottom and right) an input smaller than one window instead of raising.
        max_memory: memory budget in bytes for everything the evaluation holds besides the
            weights: the images at each scale, the maps, one pass's working memory; larger inputs
            are evaluated in exact tiles (:func:`fcnclassify.evaluation.tiling.tiled_forward`). None: tiles
            only an input whose untiled pass would take more than half of the device's available
            memory.
        stride_factor: ``k > 1`` gives maps at stride ``stride / k`` from ``k * k`` shifted
            evaluations (:func:`fcnclassify.evaluation.stitch.shift_and_stitch`).
        method: with ``stride_factor > 1``, ``"shift"`` (shift-and-stitch, exact) or
            ``"offset_pool"`` (OverFeat's offset max-pooling, cheaper).
        progress: progress bars over the passes and the tiles (tqdm, on a terminal).

    Returns:
        For each image, its maps: for each scale, the map and then (with ``flip``) the flipped one.
        Logits are returned as float32 on the CPU.
    """
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W) but got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    factors = scale_factors((height, width), scales=scales, sizes=sizes)
    device, dtype = resolve(device, dtype)
    fcn, nhwc = prepare(fcn, device=device, dtype=dtype, channels_last=channels_last)
    forward, geometry = _strategy(fcn, stride_factor=stride_factor, method=method, pad=pad,
                                  channels_last=nhwc, max_memory=max_memory, progress=progress)
    flips = (False, True) if flip else (False,)
    if max_memory is not None and stride_factor == 1:
        _check_budget(fcn, images, factors, flips, dtype=dtype, pad=pad, channels_last=nhwc,
                      max_memory=max_memory)
    out: list[list[ScoreMap]] = [[] for _ in range(len(images))]
    bar = tqdm(total=len(factors) * len(flips), desc="passes", unit="pass", leave=False,
               disable=not progress or len(factors) * len(flips) == 1)
    maps = 0  # bytes of the maps kept so far: a budget counts them (tiling.tiled_forward)
    with torch.inference_mode(), bar:
        for size, flipped, arg, held in _passes(images, factors, flips, device=device, dtype=dtype):
            logits = forward(arg, held + maps)
            del arg
            if flipped:
                logits = logits.flip(-1)
            maps += _nbytes(logits)
            for n in range(len(images)):
                out[n].append(ScoreMap(logits[n], geometry, (height, width), size, flipped))
            bar.update()
    return out


def _passes(images: torch.Tensor, factors: Sequence[float], flips: Sequence[bool], *,
            device: torch.device, dtype: torch.dtype) -> Iterator[tuple[tuple[int, int], bool, torch.Tensor, int]]:
    """``(size, flipped, input, bytes held besides it)`` of each pass: each scale's batch resized
    once, then as it is and flipped. The held bytes are the caller's images and the resized batch
    where the input is another tensor (a budget counts them)."""
    for scale in factors:
        x = rescale(images.to(device=device, dtype=torch.float32), scale).to(dtype)
        for flipped in flips:
            arg = x.flip(-1) if flipped else x
            kept = {id(images): images, id(x): x}.values()  # x may be the images themselves
            yield tuple(x.shape[-2:]), flipped, arg, sum(_nbytes(t) for t in kept if t is not arg)
            del arg  # before the next pass allocates its input


def _check_budget(fcn: FullyConvNet, images: torch.Tensor, factors: Sequence[float],
                  flips: Sequence[bool], *, dtype: torch.dtype, pad: bool, channels_last: bool,
                  max_memory: int) -> None:
    """Refuse, before any pass runs, a budget that one of the passes cannot keep, naming what the
    most demanding one needs (else a later, larger size fails after the smaller ones ran). The
    passes are replayed on meta tensors: shapes and bytes only."""
    from .tiling import budget_error, smallest_budget

    meta = torch.empty(images.shape, dtype=images.dtype, device="meta")
    maps, worst = 0, (0, 0)
    for _, _, arg, held in _passes(meta, factors, flips, device=meta.device, dtype=dtype):
        x, held = _run_input(fcn, arg, pad=pad, channels_last=channels_last, held=held + maps)
        fixed, tile = smallest_budget(fcn, x, held=held)
        worst = max(worst, (fixed, tile), key=sum)
        maps += len(x) * fcn.num_classes * math.prod(fcn.geometry.output_size(*x.shape[-2:])) * 4
    if sum(worst) > max_memory:
        raise budget_error(*worst, max_memory, batch=len(images))


def _strategy(fcn: FullyConvNet, *, stride_factor: int, method: str, pad: bool,
              channels_last: bool, max_memory: int | None,
              progress: bool) -> tuple[Callable[[torch.Tensor, int], torch.Tensor], Geometry]:
    """The forward pass of one prepared input, and the grid of the maps it gives."""
    from . import stitch

    if stride_factor == 1:
        def forward(x: torch.Tensor, held: int = 0) -> torch.Tensor:
            return run(fcn, x, pad=pad, channels_last=channels_last, max_memory=max_memory,
                       progress=progress, held=held)
        return forward, fcn.geometry
    geometry = stitch.stitched_geometry(fcn.geometry, stride_factor)
    if method == "shift":
        def forward(x: torch.Tensor, held: int = 0) -> torch.Tensor:
            return stitch.shift_and_stitch(fcn, _padded(fcn, x, stride_factor) if pad else x,
                                           factor=stride_factor, max_memory=max_memory,
                                           channels_last=channels_last)
    elif method == "offset_pool":
        def forward(x: torch.Tensor, held: int = 0) -> torch.Tensor:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = _padded(fcn, x, stride_factor) if pad else x
            return stitch.offset_pooling(fcn, x.contiguous(memory_format=fmt), factor=stride_factor)
    else:
        raise ValueError(f"expected method 'shift' or 'offset_pool' but got {method!r}")
    return forward, geometry


def _padded(fcn: FullyConvNet, x: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """``x`` zero-padded (bottom, right) to the smallest input that gives every shift one cell."""
    low = fcn.geometry.min_input + (factor - 1) * (fcn.geometry.stride // factor)
    h, w = x.shape[-2:]
    if h >= low and w >= low:
        return x
    return F.pad(x, (0, max(0, low - w), 0, max(0, low - h)))


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` by ``scale`` to ``round(H * s) x round(W * s)``: the package's one
    resize rule (bilinear, antialiased when shrinking, as torchvision's ``Resize`` on tensors)."""
    if scale <= 0:
        raise ValueError(f"expected a positive scale but got {scale}")
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                         antialias=scale < 1.0)


def _nbytes(x: torch.Tensor) -> int:
    return x.untyped_storage().nbytes()


def _run_input(fcn: FullyConvNet, x: torch.Tensor, *, pad: bool, channels_last: bool,
               held: int) -> tuple[torch.Tensor, int]:
    """The network's input for ``x`` (padded, channels-last) and the bytes held besides it: a copy
    leaves the caller's tensor alive during the pass."""
    for change in (lambda t: _padded(fcn, t) if pad else t,
                   lambda t: t.contiguous(memory_format=torch.channels_last) if channels_last else t):
        y = change(x)
        held += 0 if y is x else _nbytes(x)
        x = y
    return x, held


def run(fcn: FullyConvNet, x: torch.Tensor, *, pad: bool = False,
        channels_last: bool = True, max_memory: int | None = None,
        progress: bool = False, held: int = 0) -> torch.Tensor:
    """Logits ``(N, classes, h, w)`` as float32 on the CPU for a prepared input batch; ``held``:
    bytes the caller keeps meanwhile, counted against ``max_memory``."""
    x, held = _run_input(fcn, x, pad=pad, channels_last=channels_last, held=held)
    from .tiling import needs_tiling, tiled_forward

    if max_memory is not None or needs_tiling(fcn, x):  # None: tiles only what does not fit
        return tiled_forward(fcn, x, max_memory=max_memory, progress=progress, held=held)
    return fcn(x).float().cpu().contiguous()
