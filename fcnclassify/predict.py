"""One call from an image (a path or an array) to class probabilities, score maps and heatmaps."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .aggregate import fuse, fuse_heatmaps
from .dense import dense_evaluate, resolve_device, resolve_dtype
from .images import DEFAULT_MAX_PIXELS, read_image, resize, scaled_size
from .models import LoadedModel
from .scoremap import ScoreMap
from .stitch import stitched_evaluate

__all__ = ["Prediction", "predict"]


@dataclass
class Prediction:
    """What the network sees in one image.

    Attributes:
        path: the image file, or None for an array.
        image: the RGB image, ``(H, W, 3)`` uint8, as evaluated (before any rescaling).
        maps: the score maps, for each scale the map and then (with flips) the flipped one; their
            boxes and centres are in pixels of ``image``.
        probabilities: ``(classes,)`` fused over the maps (:func:`fcnclassify.aggregate.fuse`).
        categories: the class names.
    """

    path: str | None
    image: np.ndarray
    maps: list[ScoreMap]
    probabilities: torch.Tensor
    categories: list[str]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return tuple(self.image.shape[:2])

    def topk(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` most probable classes as ``(id, name, probability)``, best first."""
        k = min(k, len(self.categories))
        values, ids = self.probabilities.topk(k)
        return [(int(i), self.categories[int(i)], float(v)) for v, i in zip(values, ids)]

    def heatmap(self, cls: int) -> np.ndarray:
        """``(H, W)`` float32 probability of class ``cls`` on the image's pixel grid, averaged over
        the maps (each cell's value at its window's centre, bilinear in between)."""
        self._check_class(cls)
        return fuse_heatmaps(self.maps, [cls])[0].numpy().astype(np.float32, copy=False)

    def peak(self, cls: int) -> dict:
        """Where class ``cls`` scores highest: the cell of the finest unflipped map with the highest
        probability.

        Returns:
            ``{"x", "y", "box": [x0, y0, x1, y1], "score"}``: the centre of the cell's window and the
            window (half-open, clipped to the image) in image pixels, and the cell's probability.
        """
        self._check_class(cls)
        plain = [m for m in self.maps if not m.flipped] or self.maps
        finest = max(plain, key=lambda m: m.scale[0] * m.scale[1])
        i, j, score = finest.peak(cls)
        ys, xs = finest.centers()
        height, width = self.image_size
        x0, y0, x1, y1 = finest.box(i, j)
        box = [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)]
        return {"x": float(xs[j]), "y": float(ys[i]), "box": [round(v, 2) for v in box],
                "score": score}

    def _check_class(self, cls: int) -> None:
        if not 0 <= int(cls) < len(self.categories):
            raise ValueError(f"expected a class id in 0..{len(self.categories) - 1} but got {cls}")


def predict(
    model: LoadedModel,
    image: str | os.PathLike | np.ndarray,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
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

    Each scale resizes the image (area averaging when shrinking) to ``round(H * s) x round(W * s)``;
    an input smaller than one window is zero-padded. The score maps keep the original image size,
    so their boxes are in pixels of the original image.

    Args:
        model: from :func:`fcnclassify.models.load_model`.
        image: a file path, or an ``(H, W, 3)`` uint8 RGB array.
        scales: resize factors.
        flip: also evaluate the mirrored image.
        pool: ``"avg"`` or ``"max"`` global pooling of each map.
        over: pool ``"logits"`` (then softmax) or per-cell ``"probs"``.
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``/None.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` (CUDA).
        max_pixels: refuse larger images (decompression bombs); None for no limit.
        max_memory: activation-memory budget in bytes; larger inputs run in exact tiles.
        stride_factor: ``k > 1`` gives maps at stride ``stride / k`` by shift-and-stitch
            (:func:`fcnclassify.stitch.stitched_evaluate`), for ``k * k`` times the work.
        progress: progress bars over the scales and the tiles (None: only on a terminal).

    Raises:
        ValueError: an unreadable image (:class:`fcnclassify.images.ImageError`), a bad option.
    """
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"expected one or more positive scales but got {scales}")
    if stride_factor < 1:
        raise ValueError(f"expected a stride factor >= 1 but got {stride_factor}")
    path = None
    if isinstance(image, (str, os.PathLike)):
        path = str(image)
        rgb = read_image(Path(image), max_pixels=max_pixels)
    else:
        rgb = _check_array(image, max_pixels)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    fcn = model.prepared(device, dtype)
    size = tuple(rgb.shape[:2])
    maps: list[ScoreMap] = []
    quiet = None if progress is None else not progress  # tqdm: None = only on a terminal
    tiles_bar = sys.stderr.isatty() if progress is None else progress
    for scale in tqdm(scales, desc="scales", unit="scale", disable=quiet, leave=False):
        target = scaled_size(size, scale)
        resized = rgb if target == size else resize(rgb, target)
        x = model.normalization(resized)
        if stride_factor > 1:
            evaluated = stitched_evaluate(fcn, x, factor=stride_factor, flip=flip, device=device,
                                          dtype=dtype, max_memory=max_memory)[0]  # no tile bar
        else:
            evaluated = dense_evaluate(fcn, x, flip=flip, device=device, dtype=dtype, pad=True,
                                       max_memory=max_memory, progress=tiles_bar)[0]
        for m in evaluated:
            maps.append(ScoreMap(m.logits, m.geometry, size, m.input_size, m.flipped))
    probabilities = fuse(maps, pool=pool, over=over)
    return Prediction(path=path, image=rgb, maps=maps, probabilities=probabilities,
                      categories=model.categories)


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
