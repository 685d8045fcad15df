"""Which sizes an image is evaluated at: resize factors, the VGG paper's Q, and the heatmap pyramid.

Two ways to say a scale:

* a resize factor ``s``: the image becomes ``round(H * s) x round(W * s)`` (``s = 1``: raw pixels);
* a size ``Q``, the VGG paper's test scale: the image is resized so that its shorter side is ``Q``
  pixels (Simonyan & Zisserman 2015, section 3.2; Table 5 uses Q = 256, 384, 512 for a 224 network).

Q speaks in the model's terms: at Q = 256 a 224 window covers 7/8 of the shorter side whatever the
photo's resolution, where a factor of 1 on a 4000x3000 phone photo gives windows over 5% of it.

Defaults:

* image-level prediction (:func:`vgg_sizes`): the VGG dense protocol, Q = 256, 384, 512 with flips,
  scaled by ``input_size / 224`` for networks trained at another size;
* heatmaps (:func:`pyramid_sizes`): a pyramid from one window on the shorter side (Q = the window)
  up to the image's shorter side, in geometric steps of at most sqrt(2), capped at
  :data:`PYRAMID_MAX_WINDOWS` windows on the shorter side (finer windows see textures, not objects,
  and cost the most).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["VGG_SIZES", "PYRAMID_MAX_WINDOWS", "PYRAMID_STEP", "vgg_sizes", "pyramid_sizes",
           "scale_factors"]

VGG_SIZES = (256, 384, 512)  # Q for a 224 network (VGG paper, Table 5)
PYRAMID_MAX_WINDOWS = 4  # the finest pyramid level holds this many windows on the shorter side
PYRAMID_STEP = math.sqrt(2)  # at most this ratio between neighbouring pyramid levels


def vgg_sizes(input_size: int = 224, sizes: Sequence[int] = VGG_SIZES) -> tuple[int, ...]:
    """The VGG test scales Q for a network trained at ``input_size``: ``round(Q * input_size / 224)``."""
    return tuple(round(q * input_size / 224) for q in sizes)


def pyramid_sizes(image_size: tuple[int, int], window: int, *,
                  max_windows: float = PYRAMID_MAX_WINDOWS,
                  step: float = PYRAMID_STEP) -> tuple[int, ...]:
    """Shorter-side sizes Q of the heatmap pyramid of an image, coarse to fine.

    From ``window`` (one window spans the shorter side) to ``min(shorter side, max_windows *
    window)``, both included, in equal geometric steps no larger than ``step``. An image whose
    shorter side is below one window gets the single size ``window`` (it is enlarged).

    Args:
        image_size: ``(height, width)`` of the image.
        window: the network's window (its canonical input size), in pixels.
        max_windows: cap on the finest level, in windows per shorter side.
        step: the largest ratio between neighbouring sizes (> 1).
    """
    if step <= 1:
        raise ValueError(f"expected a step above 1 but got {step}")
    if max_windows < 1:
        raise ValueError(f"expected max_windows of at least 1 but got {max_windows}")
    top = min(min(image_size), max_windows * window)
    if top <= window:
        return (window,)
    levels = math.ceil(math.log(top / window) / math.log(step) - 1e-9)
    ratio = (top / window) ** (1 / levels)
    return tuple(round(window * ratio ** k) for k in range(levels + 1))


def scale_factors(image_size: tuple[int, int], *, scales: Sequence[float] | None = None,
                  sizes: Sequence[int] | None = None) -> tuple[float, ...]:
    """Resize factors from either ``scales`` (returned as they are) or ``sizes`` (Q: the shorter
    side in pixels; factor ``Q / min(H, W)``). Neither: ``(1.0,)``, the image as it is.

    Raises:
        ValueError: both given, an empty list, or a value that is not positive.
    """
    if scales is not None and sizes is not None:
        raise ValueError("expected scales or sizes, not both")
    if sizes is not None:
        if not len(sizes) or any(not q >= 1 for q in sizes):
            raise ValueError(f"expected one or more sizes of at least 1 pixel but got {tuple(sizes)}")
        shorter = min(image_size)
        return tuple(q / shorter for q in sizes)
    if scales is None:
        return (1.0,)
    if not len(scales) or any(not s > 0 for s in scales):
        raise ValueError(f"expected one or more positive scales but got {tuple(scales)}")
    return tuple(float(s) for s in scales)
