"""Where each cell of a score map sits in the input: window, stride, offset, receptive field.

Everything here is derived from the layers (kernel, stride, padding, dilation, ceil mode of every
convolution, pooling and padding op; see :mod:`fcnclassify.network._fx`), never typed in per model.

Coordinates are in input pixels. A box ``(x0, y0, x1, y1)`` is half-open: pixel columns
``x0 .. x1 - 1``. Centres are continuous coordinates, in which pixel ``k`` spans ``[k, k + 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Geometry", "SizeOp"]


@dataclass(frozen=True)
class SizeOp:
    """One layer's effect on a spatial size: ``pad`` before and after, then a sliding window."""

    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0
    pad_after: int = 0
    ceil_mode: bool = False

    def __call__(self, n: int) -> int:
        padded = n + self.pad_before + self.pad_after
        span = self.dilation * (self.kernel - 1) + 1
        if padded < span:
            return 0
        if not self.ceil_mode:
            return (padded - span) // self.stride + 1
        out = -(-(padded - span) // self.stride) + 1
        # PyTorch's rule: the last window must start inside the input or its left padding
        if (out - 1) * self.stride >= n + self.pad_before:
            out -= 1
        return out


@dataclass(frozen=True)
class Geometry:
    """The grid of a score map over its input image.

    Attributes:
        window: side, in input pixels, of the square window a cell stands for: the canonical input
            size for a fully-connected head (224 for VGG16: cell (i, j) is the original classifier
            on the crop ``box(i, j)``), the stride for a pooled head (the cell's own tile of a class
            activation map, placed as nearly as possible on the centre of its receptive field).
        stride: distance in input pixels between neighbouring cells (32 for VGG16).
        offset: input pixel where the window of cell (0, 0) starts (``box(0, 0)[0]``): 0 for a
            fully-connected head.
        receptive_field: side of the input region that can influence one cell (404 for VGG16).
        center: continuous coordinate of the centre of cell (0, 0)'s receptive field (within half a
            pixel of its window's centre).
        size_ops: the layers on the path from input to map, to compute map sizes exactly.
        global_context: True when a layer pools over the whole image (squeeze-and-excitation,
            group norm): then every cell also depends on pixels outside its receptive field.
    """

    window: int
    stride: int
    offset: int
    receptive_field: int
    center: float
    size_ops: tuple[SizeOp, ...] = ()
    global_context: bool = False

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Score-map size ``(h, w)`` for an input of ``height x width`` pixels (0 if too small)."""
        return self._out(height), self._out(width)

    def _out(self, n: int) -> int:
        for op in self.size_ops:
            n = op(n)
            if n <= 0:
                return 0
        return n

    @property
    def min_input(self) -> int:
        """The smallest input side that gives a map of at least one cell."""
        n = 1
        while self._out(n) < 1:
            n += 1
        return n

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Window ``(x0, y0, x1, y1)`` of cell (row ``i``, column ``j``) in input pixels."""
        x0 = self.offset + j * self.stride
        y0 = self.offset + i * self.stride
        return x0, y0, x0 + self.window, y0 + self.window

    def cell_center(self, k: int) -> float:
        """Continuous input coordinate of the centre of cell ``k``'s window along one axis."""
        return self.offset + self.window / 2 + k * self.stride

    def field_center(self, k: int) -> float:
        """Continuous input coordinate of the centre of cell ``k``'s receptive field."""
        return self.center + k * self.stride

    def input_size_for(self, h: int, w: int) -> tuple[int, int]:
        """Smallest input ``(height, width)`` that gives an ``h x w`` map."""
        return self._inverse(h), self._inverse(w)

    def _inverse(self, cells: int) -> int:
        n = self.min_input + max(cells - 1, 0) * self.stride
        while self._out(n) < cells:
            n += 1
        while n > 1 and self._out(n - 1) >= cells:
            n -= 1
        return n

    @staticmethod
    def snap_offset(center: float, window: int) -> int:
        """Integer start of a ``window`` centred as nearly as possible on ``center``."""
        return math.floor(center - window / 2 + 0.5)
