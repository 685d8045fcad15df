"""One call from an image (a path or an array) to class probabilities, score maps and heatmaps."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .aggregate import fuse, fuse_heatmaps
from ..network.device import resolve
from .dense import dense_evaluate
from ..io.images import DEFAULT_MAX_PIXELS, read_image
from ..models.registry import LoadedModel
from .scales import pyramid_sizes, scale_factors, vgg_sizes
from .scoremap import ScoreMap

__all__ = ["Prediction", "predict", "HEATMAP_FRACTION"]

HEATMAP_FRACTION = 0.01  # a class's heatmap score is what its heatmap holds over 1% of the image
HEATMAP_GRID = 128  # heatmap samples along the shorter side when ranking classes


@dataclass
class Prediction:
    """What the network sees in one image.

    Attributes:
        path: the image file, or None for an array.
        image: the RGB image, ``(H, W, 3)`` uint8, as evaluated (before any rescaling).
        maps: the score maps, for each scale the map and then (with flips) the flipped one; their
            boxes and centres are in pixels of ``image``. Every cell is one window of the image.
        probabilities: ``(classes,)`` image-level probabilities fused over the maps
            (:func:`fcnclassify.evaluation.aggregate.fuse`; by default the VGG protocol: each map's logits
            averaged over its positions, softmax, then the mean over scales and flips).
        categories: the class names.
    """

    path: str | None
    image: np.ndarray
    maps: list[ScoreMap]
    probabilities: torch.Tensor
    categories: list[str]
    _heat: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return tuple(self.image.shape[:2])

    def topk(self, k: int = 5, *, by: str = "image") -> list[tuple[int, str, float]]:
        """The ``k`` best classes as ``(id, name, score)``, best first.

        Args:
            by: ``"image"``: ranked by the image-level probability (:attr:`probabilities`);
                ``"heatmap"``: by what each class's heatmap shows over a part of the image
                (:meth:`heatmap_scores`: the classes the heatmaps have an object to show for; the
                ``heatmap`` command's default); ``"window"``: by each class's best single window
                at any scale (:meth:`window_scores`).
        """
        if by not in ("image", "heatmap", "window"):
            raise ValueError(f"expected by 'image', 'heatmap' or 'window' but got {by!r}")
        k = min(k, len(self.categories))
        if by == "heatmap":
            ranked = self._heatmap_topk(k)
        else:
            scores = self.probabilities if by == "image" else self.window_scores()
            values, ids = scores.topk(k)
            ranked = [(int(i), float(v)) for v, i in zip(values, ids)]
        return [(i, self.categories[i], v) for i, v in ranked]

    def window_scores(self) -> torch.Tensor:
        """``(classes,)``: each class's highest per-window probability over all maps."""
        return torch.stack([m.probabilities().flatten(1).amax(1) for m in self.maps]).amax(0)

    def heatmap_scores(self, classes: Sequence[int], *,
                       fraction: float = HEATMAP_FRACTION) -> torch.Tensor:
        """``(len(classes),)``: for each class, the value its heatmap (:meth:`heatmap`) reaches
        over ``fraction`` of the image (its ``1 - fraction`` quantile).

        A class that an object shows in many neighbouring windows scores about the windows'
        probability; one window that mistakes a patch of texture (fur for a tick, an eye for a
        gecko) covers less than 1% of a photo and does not lift it. The heatmap is sampled
        on a grid of :data:`HEATMAP_GRID` points along the shorter side (the image's pixels if it
        is smaller): it interpolates between windows' centres, so a finer grid adds nothing.
        """
        classes = [int(c) for c in classes]
        for cls in classes:
            self._check_class(cls)
        if not 0 < fraction <= 1:
            raise ValueError(f"expected a fraction in (0, 1] but got {fraction}")
        known = self._heat if fraction == HEATMAP_FRACTION else {}  # ranking, legend and JSON ask alike
        todo = [c for c in dict.fromkeys(classes) if c not in known]
        height, width = self.image_size
        step = max(1.0, min(height, width) / HEATMAP_GRID, max(height, width) / (4 * HEATMAP_GRID))
        size = (max(1, round(height / step)), max(1, round(width / step)))
        for i in range(0, len(todo), 64):
            chunk = todo[i:i + 64]
            held = fuse_heatmaps(self.maps, chunk, size=size).flatten(1).quantile(1 - fraction, dim=1)
            known.update(zip(chunk, held.tolist()))
        return torch.tensor([known[c] for c in classes], dtype=torch.float32)

    def _heatmap_topk(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` best classes by :meth:`heatmap_scores`, exactly, without all classes' heatmaps:
        a heatmap never exceeds the class's best window, so classes are taken in the order of
        their best windows until the next best window cannot beat the k-th heatmap score."""
        window = self.window_scores()
        order = window.argsort(descending=True).tolist()
        found: list[tuple[int, float]] = []
        for start in range(0, len(order), 32):
            if len(found) >= k and float(window[order[start]]) < found[k - 1][1]:
                break
            chunk = order[start:start + 32]
            found += zip(chunk, self.heatmap_scores(chunk).tolist())
            found.sort(key=lambda pair: -pair[1])
        return found[:k]

    def heatmap(self, cls: int) -> np.ndarray:
        """``(H, W)`` float32 heatmap of class ``cls`` on the image's pixel grid.

        In each map every window's probability sits at the window's centre, bilinear in between
        (:meth:`ScoreMap.to_image_grid`); the maps are fused by the per-pixel maximum over scales
        and flips (:func:`fcnclassify.evaluation.aggregate.fuse_heatmaps`). A value is therefore the
        probability of one window, the most confident one centred thereabouts at any scale.
        """
        self._check_class(cls)
        return fuse_heatmaps(self.maps, [cls])[0].numpy().astype(np.float32, copy=False)

    def peak(self, cls: int) -> dict:
        """The window, over all maps, in which class ``cls`` is most probable.

        Returns:
            ``{"x", "y", "box": [x0, y0, x1, y1], "score", "size", "scale", "flipped"}``: the
            centre of the window and the window itself (half-open, clipped to the image) in image
            pixels, the window's probability, the shorter side ``size`` (the VGG paper's Q) and the
            resize factor ``scale`` of the map that holds it, and whether that map was flipped.
            The centre is the clipped window's, so it lies inside the image.
        """
        self._check_class(cls)
        best = max(self.maps, key=lambda m: m.peak(cls)[2])
        i, j, score = best.peak(cls)
        height, width = self.image_size
        x0, y0, x1, y1 = best.box(i, j)
        box = [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)]
        return {"x": (box[0] + box[2]) / 2, "y": (box[1] + box[3]) / 2,
                "box": [round(v, 2) for v in box], "score": score,
                "size": min(best.input_size), "scale": round(min(best.scale), 6),
                "flipped": best.flipped}

    def describe_maps(self) -> list[dict]:
        """The maps as plain data (for JSON): size Q, resize factor, flip and cells of each."""
        return [{"size": min(m.input_size), "scale": round(min(m.scale), 6), "flipped": m.flipped,
                 "cells": list(m.shape)} for m in self.maps]

    def _check_class(self, cls: int) -> None:
        if not 0 <= int(cls) < len(self.categories):
            raise ValueError(f"expected a class id in 0..{len(self.categories) - 1} but got {cls}")


def predict(
    model: LoadedModel,
    image: str | os.PathLike | np.ndarray,
    *,
    sizes: Sequence[int] | str | None = None,
    scales: Sequence[float] | None = None,
    flip: bool = True,
    pool: str = "avg",
    over: str = "logits",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_memory: int | None = None,
    stride_factor: int = 1,
    progress: bool | None = False,
) -> Prediction:
    """Evaluate ``model`` densely on one image at several scales and fuse the maps.

    The defaults are the VGG paper's dense protocol: the image resized to shorter sides Q = 256,
    384 and 512 (for a 224 network; :func:`fcnclassify.evaluation.scales.vgg_sizes`), each evaluated as it is
    and mirrored, each map's logits averaged over its positions, softmax, and the posteriors
    averaged. The image is normalised once and goes through :func:`fcnclassify.evaluation.dense.dense_evaluate`,
    so a map here is the map ``dense_evaluate`` gives at the same scale, to the bit. Its boxes are in
    pixels of the original image.

    Args:
        model: from :func:`fcnclassify.models.registry.load_model`.
        image: a file path, or an ``(H, W, 3)`` uint8 RGB array.
        sizes: shorter sides Q in pixels, or ``"pyramid"``: the heatmap pyramid from one window to
            the image's shorter side (:func:`fcnclassify.evaluation.scales.pyramid_sizes`). Each Q must be at
            least the network's window. Default (with ``scales`` None): the VGG sizes.
        scales: instead of ``sizes``, resize factors (1: the image's own pixels). A scale that
            shrinks the image below one window is refused; an image already smaller than one
            window is zero-padded.
        flip: also evaluate the mirrored image (default: on, as the VGG protocol).
        pool: ``"avg"`` or ``"max"`` global pooling of each map.
        over: pool ``"logits"`` (then softmax) or per-cell ``"probs"``.
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``/None.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` (CUDA).
        max_pixels: refuse larger images (decompression bombs); None for no limit.
        max_memory: activation-memory budget in bytes; larger inputs run in exact tiles.
        stride_factor: ``k > 1`` gives maps at stride ``stride / k`` by shift-and-stitch, for
            ``k * k`` times the work.
        progress: progress bars over the passes and the tiles (None: only on a terminal).

    Raises:
        ValueError: an unreadable image (:class:`fcnclassify.io.images.ImageError`), a bad option.
    """
    if stride_factor < 1:
        raise ValueError(f"expected a stride factor >= 1 but got {stride_factor}")
    path = None
    if isinstance(image, (str, os.PathLike)):
        path = str(image)
        rgb = read_image(Path(image), max_pixels=max_pixels)
    else:
        rgb = _check_array(image, max_pixels)
    size = tuple(rgb.shape[:2])
    sizes, scales = _plan(model, size, sizes=sizes, scales=scales)
    device, dtype = resolve(device, dtype)
    fcn = model.prepared(device, dtype)
    maps = dense_evaluate(fcn, model.normalization(rgb), sizes=sizes, scales=scales, flip=flip,
                          device=device, dtype=dtype, pad=True, max_memory=max_memory,
                          stride_factor=stride_factor,
                          progress=sys.stderr.isatty() if progress is None else progress)[0]
    probabilities = fuse(maps, pool=pool, over=over)
    return Prediction(path=path, image=rgb, maps=maps, probabilities=probabilities,
                      categories=model.categories)


def _plan(model: LoadedModel, size: tuple[int, int], *, sizes, scales
          ) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
    """``(sizes, scales)`` for :func:`dense_evaluate`: defaults filled in, too-small inputs refused."""
    window = model.input_size
    if isinstance(sizes, str):
        if sizes != "pyramid":
            raise ValueError(f"expected sizes as numbers or 'pyramid' but got {sizes!r}")
        sizes = pyramid_sizes(size, window)
    if sizes is None and scales is None:
        sizes = vgg_sizes(window)
    factors = scale_factors(size, scales=scales, sizes=sizes)  # checks the values
    if sizes is not None:
        check_sizes(model, sizes)
        return tuple(sizes), None
    shorter = min(size)
    for s in factors:
        scaled = round(shorter * s)
        if scaled < window and scaled < shorter:
            raise ValueError(f"scale {s:g} makes the image's shorter side {scaled} pixels, smaller "
                             f"than one window ({window}): expected a scale of at least "
                             f"{window / shorter:.3g}, or sizes in pixels")
    return None, factors


def check_sizes(model: LoadedModel, sizes: Sequence[int] | str | None) -> None:
    """Refuses sizes Q below the network's window (a ValueError naming the first), whatever the
    image: the command line asks once, before the first image, not once per image."""
    if sizes is None or isinstance(sizes, str):
        return
    small = [q for q in sizes if q < model.input_size]
    if small:
        raise ValueError(f"expected sizes of at least the network's window ({model.input_size} "
                         f"pixels) but got {small[0]}")


def _check_array(image: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected a path or an (H, W, 3) uint8 RGB array but got "
                         f"{type(image).__name__} of shape {shape} and dtype "
                         f"{getattr(image, 'dtype', None)}")
    pixels = image.shape[0] * image.shape[1]
    if max_pixels is not None and pixels > max_pixels:
        raise ValueError(f"expected at most {max_pixels} pixels (max_pixels) but the image has "
                         f"{pixels}")
    return image
