"""From score maps to one prediction per image: global average or max pooling, and fusion.

The VGG paper (Simonyan & Zisserman 2015, section 3.2) sum-pools (averages) the class score map,
i.e. the logits, then takes the softmax, and averages those posteriors over flips and scales
(section 4.2). OverFeat (Sermanet et al. 2014) takes the spatial maximum instead. Note the order:

* ``pool="avg", over="logits"``: softmax of the mean logits. For a pooled-Linear head (ResNet, ...)
  this *is* the original classifier at that input size, exactly.
* ``pool="avg", over="probs"``: the mean of per-cell posteriors, a vote of the windows; it is not
  the same number, because the softmax is not linear.
* ``pool="max", over="logits"``: each class takes its best window, so different classes are scored
  on different windows before the softmax compares them; a class present in a small part of a large
  image is not diluted, but noise in one window can win.
* ``pool="max", over="probs"``: the highest per-window posterior of each class; the result does not
  sum to one (it is renormalised).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from .scoremap import ScoreMap

__all__ = ["global_pool", "fuse", "fuse_heatmaps"]

Pool = Literal["avg", "max"]
Over = Literal["logits", "probs"]


def global_pool(score_map: ScoreMap | torch.Tensor, *, pool: Pool = "avg",
                over: Over = "logits") -> torch.Tensor:
    """Class probabilities ``(classes,)`` of one map by global average or max pooling.

    Args:
        score_map: a :class:`ScoreMap` or logits ``(classes, h, w)``.
        pool: ``"avg"`` or ``"max"`` over the cells.
        over: pool the ``"logits"`` then softmax (the VGG paper), or pool the per-cell ``"probs"``.
    """
    logits = score_map.logits if isinstance(score_map, ScoreMap) else score_map
    if pool not in ("avg", "max"):
        raise ValueError(f"expected pool 'avg' or 'max' but got {pool!r}")
    if over not in ("logits", "probs"):
        raise ValueError(f"expected over 'logits' or 'probs' but got {over!r}")
    values = logits.float().flatten(1)
    if over == "probs":
        values = values.softmax(0)
    pooled = values.mean(1) if pool == "avg" else values.amax(1)
    if over == "logits":
        return pooled.softmax(0)
    return pooled / pooled.sum() if pool == "max" else pooled


def fuse(maps: Sequence[ScoreMap], *, pool: Pool = "avg", over: Over = "logits") -> torch.Tensor:
    """One image's class probabilities from its maps at several scales and flips.

    Each map is pooled (:func:`global_pool`) and the posteriors are averaged, as the VGG paper does
    across flips and scales.
    """
    if not maps:
        raise ValueError("expected at least one score map")
    return torch.stack([global_pool(m, pool=pool, over=over) for m in maps]).mean(0)


def fuse_heatmaps(maps: Sequence[ScoreMap], classes: Sequence[int], *,
                  size: tuple[int, int] | None = None, reduce: Pool = "max") -> torch.Tensor:
    """Per-window class probabilities ``(len(classes), H, W)`` of several maps on one image grid.

    Each map puts every window's probability at the window's centre and interpolates bilinearly
    in between (:meth:`ScoreMap.to_image_grid`); the maps are then fused per pixel by their
    maximum (default) or their mean. The maximum keeps a value the probability of one window:
    across a pyramid each object lights up at the scales where it fills a window, and the finer
    and coarser levels, which see parts of it or much around it, do not dilute it.
    """
    if not maps:
        raise ValueError("expected at least one score map")
    if reduce not in ("avg", "max"):
        raise ValueError(f"expected reduce 'avg' or 'max' but got {reduce!r}")
    out = None
    for m in maps:  # one grid at a time: a pyramid of full-resolution grids would not fit
        g = m.to_image_grid(list(classes), size=size)
        out = g if out is None else (torch.maximum(out, g) if reduce == "max" else out.add_(g))
    return out if reduce == "max" else out / len(maps)
