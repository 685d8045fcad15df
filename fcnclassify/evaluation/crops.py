"""The baseline dense evaluation replaces: the original model run on crops.

Two uses:

* **Crops on the dense grid** (:func:`crop_map`): one crop per cell of the dense score map, laid on
  exactly its grid (same stride, same scale), evaluated by the *original* classifier in batches, so
  that crop ``(i, j)`` answers for cell ``(i, j)`` and the two maps compare cell by cell
  (:mod:`fcnclassify.evaluation.agreement`).

  - For a fully-connected head (kind ``"fc"``: VGG, AlexNet) crop ``(i, j)`` is the cell's window,
    ``geometry.box(i, j)``, of the canonical input size (224 for VGG16).
  - For a pooled head (ResNet, EfficientNet, MobileNet) a cell's own window is one stride (32x32
    pixels): a 32x32 tile through the original model means nothing. There, crop ``(i, j)`` is an
    ``input_size`` window (224) *centred on the cell's centre*: "what the classifier says about
    this place". The dense cell is a class-activation-map value instead, so the maps agree in
    ranking (top-1) far more than in value.

  Where a window reaches past the image border (pooled heads near the border, or any crop of an
  image smaller than the window), the missing pixels are zeros *in normalised space* (the mean
  colour), as the dense network's own zero padding would see them.

  Why dense and crop maps differ (VGG paper, Simonyan & Zisserman 2015, section 3.2): a crop is
  zero padded at its own border by every padded convolution, whereas a dense cell sees the real
  image around its window (up to its receptive field, 404 pixels for VGG16). They are equal only
  when no layer pads (checked in the tests) or when the image is exactly one window.

* **Multi-crop protocols** for one prediction per image: the centre crop (resize the shorter side to
  256, take the central 224, as torchvision's reference evaluation does), 10-crop (torchvision's
  ``TenCrop``: 4 corners and the centre, then the same of the flipped image), and the VGG paper's
  multi-crop (section 4.2): per scale Q, a 5x5 regular grid of crops and their flips, 50 crops per
  scale, 150 over Q in {256, 384, 512}. Posteriors are averaged over the crops.

All images here are normalised float tensors ``(3, H, W)``; resizing uses torchvision's
``resize`` (bilinear, antialiased), the operation of ``transforms.Resize`` on tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from tqdm.auto import tqdm

from ..network.convert import FullyConvNet
from ..network.device import prepare, resolve
from ..network.geometry import Geometry
from .scales import VGG_SIZES
from .scoremap import ScoreMap

__all__ = [
    "crop_window", "crop_geometry", "crop_boxes", "extract_crops", "crop_logits", "crop_map",
    "resize_shorter", "center_crop", "ten_crop", "grid_positions", "grid_crops",
    "multicrop_probabilities", "VGG_SCALES",
]

VGG_SCALES = VGG_SIZES  # the VGG paper's test scales Q (shorter side), Table 5


# ---------------------------------------------------------------------------------------------
# crops on the dense grid


def crop_window(fcn: FullyConvNet) -> int:
    """Side of the crop that answers for one cell: the cell's window for an ``"fc"`` head, the
    canonical input size for a pooled head (whose own window, one stride, is too small to classify).
    """
    return fcn.geometry.window if fcn.cells == "window" else fcn.input_size


def crop_geometry(geometry: Geometry, window: int) -> Geometry:
    """``geometry`` with ``window``-sized boxes centred on the cells' centres."""
    return dataclasses.replace(geometry, window=window,
                               offset=Geometry.snap_offset(geometry.center, window))


def crop_boxes(geometry: Geometry, size: tuple[int, int], *, window: int | None = None) -> np.ndarray:
    """Crop windows ``(h, w, 4)`` as ``(x0, y0, x1, y1)`` input pixels, one per cell of the map.

    Args:
        geometry: the dense network's grid.
        size: ``(height, width)`` of the network input.
        window: crop side; defaults to ``geometry.window``. Boxes are centred on the cell centres,
            so for the default window they are exactly ``geometry.box(i, j)``.
    """
    h, w = geometry.output_size(*size)
    if h < 1 or w < 1:
        raise ValueError(f"expected an input of at least {geometry.min_input} pixels a side "
                         f"but got {size[0]}x{size[1]}")
    g = crop_geometry(geometry, window or geometry.window)
    out = np.empty((h, w, 4), dtype=np.int64)
    for i in range(h):
        for j in range(w):
            out[i, j] = g.box(i, j)
    return out


def extract_crops(image: torch.Tensor, boxes: np.ndarray | Sequence[Sequence[int]]) -> torch.Tensor:
    """Crops ``(K, 3, s, s)`` of a ``(3, H, W)`` image, zeros outside the image.

    Args:
        image: normalised image; zero is the mean colour.
        boxes: ``(K, 4)`` half-open ``(x0, y0, x1, y1)`` boxes, all of the same size.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    sides = {(int(b[3] - b[1]), int(b[2] - b[0])) for b in boxes}
    if len(sides) != 1:
        raise ValueError(f"expected boxes of one size but got sizes {sorted(sides)}")
    (sh, sw), = sides
    _, height, width = image.shape
    # pad once by the largest overhang so that every crop is a plain slice
    left = max(0, -int(boxes[:, 0].min()))
    top = max(0, -int(boxes[:, 1].min()))
    right = max(0, int(boxes[:, 2].max()) - width)
    bottom = max(0, int(boxes[:, 3].max()) - height)
    padded = F.pad(image, (left, right, top, bottom)) if left + right + top + bottom else image
    return torch.stack([padded[:, y0 + top:y0 + top + sh, x0 + left:x0 + left + sw]
                        for x0, y0, _, _ in boxes.tolist()])


def crop_logits(
    model: nn.Module,
    image: torch.Tensor,
    boxes: np.ndarray | Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Logits ``(K, classes)`` of the original ``model`` on each crop, float32 on the CPU.

    Crops are cut batch by batch, so memory stays at one batch of crops.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    logits = [out for out in _batches(model, image, boxes, batch_size=batch_size, device=device,
                                      dtype=dtype, channels_last=channels_last, progress=progress)]
    return torch.cat(logits)


def crop_map(
    model: nn.Module,
    fcn: FullyConvNet,
    image: torch.Tensor,
    *,
    window: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool | None = None,
    progress: bool = False,
) -> ScoreMap:
    """The crop-by-crop score map of ``image``: the original ``model`` on one crop per dense cell.

    Args:
        model: the original classifier (``LoadedModel.original``).
        fcn: its converted network, which fixes the grid.
        image: normalised ``(3, H, W)`` image, at the scale to evaluate.
        window: crop side; defaults to :func:`crop_window` (224 for VGG16 and for ResNets).

    Returns:
        A :class:`ScoreMap` of the dense map's shape whose geometry's boxes are the crops.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W) but got {tuple(image.shape)}")
    window = window or crop_window(fcn)
    size = tuple(image.shape[-2:])
    boxes = crop_boxes(fcn.geometry, size, window=window)
    h, w = boxes.shape[:2]
    logits = crop_logits(model, image, boxes.reshape(-1, 4), batch_size=batch_size, device=device,
                         dtype=dtype, channels_last=channels_last, progress=progress)
    grid = logits.T.reshape(-1, h, w).contiguous()
    return ScoreMap(grid, crop_geometry(fcn.geometry, window), size, size)


def _batches(model: nn.Module, image: torch.Tensor, boxes: np.ndarray, *, batch_size: int,
             device, dtype, channels_last, progress: bool) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"expected a batch size of at least 1 but got {batch_size}")
    model, device, dtype, nhwc = _prepare(model, device=device, dtype=dtype,
                                          channels_last=channels_last)
    bar = tqdm(total=len(boxes), unit="crop", disable=not progress, leave=False)
    with torch.inference_mode(), bar:
        for start in range(0, len(boxes), batch_size):
            x = extract_crops(image, boxes[start:start + batch_size])
            yield _forward(model, x, device=device, dtype=dtype, nhwc=nhwc)
            bar.update(len(x))


def _prepare(model: nn.Module, *, device, dtype, channels_last) -> tuple[nn.Module, torch.device,
                                                                         torch.dtype, bool]:
    """The model on ``device`` in ``dtype`` (a copy when either differs), via network.device.prepare."""
    device, dtype = resolve(device, dtype)
    model, nhwc = prepare(model, device=device, dtype=dtype, channels_last=channels_last)
    return model, device, dtype, nhwc


def _forward(model: nn.Module, x: torch.Tensor, *, device, dtype, nhwc: bool) -> torch.Tensor:
    x = x.to(device=device, dtype=dtype)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).float().cpu()


# ---------------------------------------------------------------------------------------------
# multi-crop protocols


def resize_shorter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(..., H, W)`` so that its shorter side is ``size`` (``transforms.Resize(size)``)."""
    if size < 1:
        raise ValueError(f"expected a positive size but got {size}")
    if min(image.shape[-2:]) == size:
        return image
    return TF.resize(image, [size], antialias=True)


def center_crop(image: torch.Tensor, *, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """The central ``crop x crop`` of the image resized to shorter side ``resize``: ``(1, 3, crop, crop)``.

    Equal to ``transforms.Compose([Resize(resize), CenterCrop(crop)])``.
    """
    x = _resized(image, resize, crop)
    h, w = x.shape[-2:]
    # torchvision rounds the centre crop's start to the nearest pixel
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return x[None, :, top:top + crop, left:left + crop]


def ten_crop(image: torch.Tensor, *, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """``(10, 3, crop, crop)``: top-left, top-right, bottom-left, bottom-right and centre crops, then
    the same five of the horizontally flipped image (``transforms.TenCrop`` order)."""
    x = _resized(image, resize, crop)
    out = []
    for img in (x, x.flip(-1)):
        h, w = img.shape[-2:]
        corners = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop)]
        out += [img[:, t:t + crop, l:l + crop] for t, l in corners]
        out.append(center_crop(img, resize=min(h, w), crop=crop)[0])
    return torch.stack(out)


def grid_positions(length: int, crop: int, n: int) -> list[int]:
    """Starts of ``n`` evenly spaced crops along a side: the first at 0, the last at ``length - crop``."""
    if crop > length:
        raise ValueError(f"expected a crop no larger than the side ({length}) but got {crop}")
    if n < 1:
        raise ValueError(f"expected at least one crop position but got {n}")
    if n == 1:
        return [(length - crop) // 2]
    return [int(round(k * (length - crop) / (n - 1))) for k in range(n)]


def grid_crops(image: torch.Tensor, *, sizes: Sequence[int] = VGG_SCALES, crop: int = 224,
               grid: int = 5, flip: bool = True) -> torch.Tensor:
    """The VGG paper's multi-crop set: per shorter-side size Q, a ``grid x grid`` regular grid of
    ``crop``-sized crops, and their horizontal flips. ``(len(sizes) * grid**2 * (1 + flip), 3, crop,
    crop)``: 150 crops for the defaults, in the order size, row, column, then flip.
    """
    out = []
    for q in sizes:
        x = _resized(image, q, crop)
        h, w = x.shape[-2:]
        for top in grid_positions(h, crop, grid):
            for left in grid_positions(w, crop, grid):
                c = x[:, top:top + crop, left:left + crop]
                out.append(c)
                if flip:
                    out.append(c.flip(-1))
    return torch.stack(out)


def multicrop_probabilities(
    model: nn.Module,
    crops: torch.Tensor,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Class posteriors ``(classes,)`` averaged over the crops ``(K, 3, s, s)`` (softmax, then mean)."""
    if crops.dim() != 4 or crops.shape[1] != 3 or len(crops) == 0:
        raise ValueError(f"expected crops of shape (K, 3, s, s) but got {tuple(crops.shape)}")
    if batch_size < 1:
        raise ValueError(f"expected a batch size of at least 1 but got {batch_size}")
    model, device, dtype, nhwc = _prepare(model, device=device, dtype=dtype,
                                          channels_last=channels_last)
    with torch.inference_mode():
        probs = [_forward(model, crops[s:s + batch_size], device=device, dtype=dtype,
                          nhwc=nhwc).softmax(1) for s in range(0, len(crops), batch_size)]
    return torch.cat(probs).mean(0)


def _resized(image: torch.Tensor, size: int, crop: int) -> torch.Tensor:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W) but got {tuple(image.shape)}")
    if crop > size:
        raise ValueError(f"expected a resize size of at least the crop ({crop}) but got {size}")
    return resize_shorter(image, size)
