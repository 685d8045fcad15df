"""The score map of one image at one scale: logits per cell, and where each cell lies in the image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..network.geometry import Geometry

__all__ = ["ScoreMap"]


@dataclass
class ScoreMap:
    """Class scores of every cell of one image evaluated at one scale, flipped or not.

    Attributes:
        logits: ``(classes, h, w)`` float32 on the CPU, columns left to right in the original image
            (a flipped evaluation is flipped back).
        geometry: the grid of the network, in pixels of the network's input.
        image_size: ``(height, width)`` of the original image.
        input_size: ``(height, width)`` of the network's input (the rescaled image, before any
            padding).
        flipped: whether the image was flipped horizontally before evaluation.
    """

    logits: torch.Tensor
    geometry: Geometry
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    flipped: bool = False
    _probabilities: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: input pixels per original pixel along each axis."""
        return self.input_size[0] / self.image_size[0], self.input_size[1] / self.image_size[1]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.logits.shape[-2:])

    def probabilities(self) -> torch.Tensor:
        """Per-cell softmax over classes, ``(classes, h, w)``; computed once (heatmaps and peaks of
        several classes all need it)."""
        if self._probabilities is None:
            self._probabilities = self.logits.float().softmax(0)
        return self._probabilities

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Continuous coordinates of the cell centres in the original image: ``(ys (h,), xs (w,))``."""
        h, w = self.shape
        g = self.geometry
        ys = np.array([g.cell_center(i) for i in range(h)])
        xs = np.array([g.cell_center(j) for j in range(w)])
        if self.flipped:  # cell k of the flipped-back map is cell w-1-k of the flipped input
            xs = self.input_size[1] - xs[::-1]
        sy, sx = self.scale
        return ys / sy, xs / sx

    def boxes(self) -> np.ndarray:
        """``(h, w, 4)`` windows ``(x0, y0, x1, y1)`` of the cells in original-image pixels (floats)."""
        h, w = self.shape
        g = self.geometry
        x0 = g.offset + g.stride * np.arange(w, dtype=np.float64)
        y0 = g.offset + g.stride * np.arange(h, dtype=np.float64)
        x1 = x0 + g.window
        if self.flipped:
            x0, x1 = self.input_size[1] - x1[::-1], self.input_size[1] - x0[::-1]
        sy, sx = self.scale
        out = np.empty((h, w, 4))
        out[..., 0] = (x0 / sx)[None, :]
        out[..., 1] = (y0 / sy)[:, None]
        out[..., 2] = (x1 / sx)[None, :]
        out[..., 3] = ((y0 + g.window) / sy)[:, None]
        return out

    def box(self, i: int, j: int) -> tuple[float, float, float, float]:
        """Window of cell (row ``i``, column ``j``) in original-image pixels."""
        return tuple(float(v) for v in self.boxes()[i, j])

    def to_image_grid(self, classes: list[int] | None = None, *, size: tuple[int, int] | None = None,
                      probabilities: bool = True) -> torch.Tensor:
        """Resample the map onto the original image's pixel grid, ``(len(classes), H, W)``.

        Each cell's value sits at the centre of its window and is interpolated bilinearly in
        between (held constant beyond the outermost centres), so nothing is shifted by half a cell.

        Args:
            classes: class indices to resample (all classes if None: mind the memory).
            size: ``(H, W)`` of the output grid; defaults to the original image size. A smaller
                grid samples the same image extent.
            probabilities: resample softmax probabilities (True) or logits (False).
        """
        values = self.probabilities() if probabilities else self.logits.float()
        if classes is not None:
            values = values[list(classes)]
        height, width = size or self.image_size
        ys, xs = self.centers()
        # output pixel centres, in original-image coordinates
        py = (np.arange(height) + 0.5) * self.image_size[0] / height
        px = (np.arange(width) + 0.5) * self.image_size[1] / width
        ay = torch.from_numpy(_interpolation_matrix(ys, py)).float()
        ax = torch.from_numpy(_interpolation_matrix(xs, px)).float()
        return torch.einsum("yi,cij,xj->cyx", ay, values, ax)

    def peak(self, cls: int, *, probabilities: bool = True) -> tuple[int, int, float]:
        """``(i, j, value)`` of the cell with the highest score for class ``cls``."""
        values = (self.probabilities() if probabilities else self.logits.float())[cls]
        flat = int(values.argmax())
        i, j = divmod(flat, values.shape[1])
        return i, j, float(values[i, j])


def _interpolation_matrix(centers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``(len(positions), len(centers))`` weights of 1-d linear interpolation, clamped at the ends."""
    n = len(centers)
    out = np.zeros((len(positions), n))
    if n == 1:
        out[:, 0] = 1.0
        return out
    pos = np.clip(positions, centers[0], centers[-1])
    right = np.clip(np.searchsorted(centers, pos, side="right"), 1, n - 1)
    left = right - 1
    t = (pos - centers[left]) / (centers[right] - centers[left])
    rows = np.arange(len(positions))
    out[rows, left] = 1.0 - t
    out[rows, right] += t
    return out
