"""Pictures of score maps: colour-mapped heatmaps blended over the photo, legends, and grids.

Everything here takes and returns RGB ``uint8`` arrays ``(H, W, 3)``; OpenCV's colour maps and text
drawing work in BGR, and the conversion happens inside, once. Heat values are class probabilities
on the image's own pixel grid (:meth:`fcnclassify.evaluation.scoremap.ScoreMap.to_image_grid`), so an overlay
has the photo's resolution and every cell's value sits at the centre of its window.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["COLORMAPS", "colorize", "draw_legend", "grid", "overlay"]

# OpenCV's colour maps by lower-case name: "jet", "turbo", "viridis", "inferno", "magma", "hot", ...
COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")
}

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT = (255, 255, 255)
_BOX = (0, 0, 0)


def colorize(heat: np.ndarray, *, colormap: str = "jet", vmin: float = 0.0,
             vmax: float | None = 1.0) -> np.ndarray:
    """Colours ``(H, W)`` values: ``vmin`` gets the colour map's first colour, ``vmax`` its last.

    Args:
        heat: values, e.g. class probabilities.
        colormap: a name in :data:`COLORMAPS`.
        vmin: value of the first colour.
        vmax: value of the last colour; None: the largest value of ``heat`` (each map stretched).

    Returns:
        ``(H, W, 3)`` RGB uint8.
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"expected a colour map in {sorted(COLORMAPS)} but got {colormap!r}")
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"expected a heat map of shape (H, W) but got {heat.shape}")
    top = float(heat.max()) if vmax is None else vmax
    span = max(top - vmin, 1e-12)
    levels = np.rint(np.clip((heat - vmin) / span, 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet",
            vmin: float = 0.0, vmax: float | None = 1.0,
            legend: str | Sequence[str] | None = None) -> np.ndarray:
    """Blends the colour-mapped ``heat`` over ``image``: ``(1 - alpha) * image + alpha * colour``.

    Args:
        image: the photo, ``(H, W, 3)`` RGB uint8.
        heat: ``(H, W)`` values on the photo's pixel grid.
        alpha: opacity of the colours, in [0, 1].
        colormap, vmin, vmax: as in :func:`colorize`.
        legend: text line(s) drawn in the top-left corner (:func:`draw_legend`).

    Returns:
        A new ``(H, W, 3)`` RGB uint8 image.
    """
    _check_rgb(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"expected alpha in [0, 1] but got {alpha}")
    if np.shape(heat) != image.shape[:2]:
        raise ValueError(f"expected a heat map of the image's size {image.shape[:2]} "
                         f"but got {np.shape(heat)}")
    colours = colorize(heat, colormap=colormap, vmin=vmin, vmax=vmax)
    out = cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)
    return out if legend is None else draw_legend(out, legend)


def draw_legend(image: np.ndarray, lines: str | Sequence[str], *, opacity: float = 0.6) -> np.ndarray:
    """Writes ``lines`` in the top-left corner on a semi-transparent dark box; returns a new image.

    The text size follows the image size, so the legend stays small and readable from thumbnails
    to posters. OpenCV's fonts are ASCII: other characters are drawn as ``?``.
    """
    _check_rgb(image)
    lines = [lines] if isinstance(lines, str) else list(lines)
    lines = [line.encode("ascii", "replace").decode() for line in lines]
    height, width = image.shape[:2]
    scale = float(np.clip(min(height, width) / 1100, 0.35, 1.2))
    thickness = max(1, round(scale * 1.6))
    sizes = [cv2.getTextSize(line, _FONT, scale, thickness) for line in lines]
    line_height = max(h + base for (_, h), base in sizes) + max(2, round(4 * scale))
    margin = max(3, round(6 * scale))
    box_w = min(width, max(w for (w, _), _ in sizes) + 2 * margin)
    box_h = min(height, line_height * len(lines) + margin)
    out = image.copy()
    region = out[:box_h, :box_w]
    region[:] = cv2.addWeighted(region, 1.0 - opacity, np.full_like(region, _BOX), opacity, 0.0)
    for k, ((_, h), base) in enumerate(sizes):
        y = margin + k * line_height + h
        cv2.putText(out, lines[k], (margin, y), _FONT, scale, _TEXT, thickness, cv2.LINE_AA)
    return out


def grid(panels: Sequence[np.ndarray], titles: Sequence[str], *, height: int = 320,
         columns: int | None = None, gap: int = 4, max_width: int | None = None) -> np.ndarray:
    """Panels side by side, each resized to ``height`` pixels (aspect kept) under its title.

    Args:
        panels: RGB uint8 images, any sizes.
        titles: one line per panel, drawn on a bar above it.
        height: panel height in pixels (panels are never enlarged beyond twice their size).
        columns: panels per row; None: all in one row.
        gap: white pixels between panels.
        max_width: a wider grid is shrunk as a whole (aspect kept) to this many pixels; None: no cap.

    Returns:
        One RGB uint8 image.
    """
    if not panels or len(panels) != len(titles):
        raise ValueError(f"expected as many titles as panels (at least one) but got "
                         f"{len(titles)} titles for {len(panels)} panels")
    if height < 16:
        raise ValueError(f"expected a panel height of at least 16 pixels but got {height}")
    columns = len(panels) if columns is None else columns
    if columns < 1:
        raise ValueError(f"expected at least one column but got {columns}")
    if max_width is not None and max_width < 16:
        raise ValueError(f"expected a maximum width of at least 16 pixels but got {max_width}")
    from ..io.images import resize

    scale = min(height / 700 * 1.6, 1.0)
    thickness = max(1, round(scale * 1.6))
    bar = cv2.getTextSize("Ag", _FONT, scale, thickness)[0][1] * 2 + 8
    cells = []
    for panel, title in zip(panels, titles):
        _check_rgb(panel)
        h = min(height, 2 * panel.shape[0])
        w = max(1, round(panel.shape[1] * h / panel.shape[0]))
        cell = np.full((bar + height, w, 3), 255, np.uint8)
        cell[bar:bar + h] = resize(panel, (h, w))
        text = title.encode("ascii", "replace").decode()
        # shorten a title wider than its panel
        while len(text) > 4 and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > w - 8:
            text = text[:-4] + "..."
        y = (bar + cv2.getTextSize(text, _FONT, scale, thickness)[0][1]) // 2
        cv2.putText(cell, text, (4, y), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        cells.append(cell)
    rows = [cells[k:k + columns] for k in range(0, len(cells), columns)]
    row_images = [_hstack(row, gap) for row in rows]
    total_w = max(r.shape[1] for r in row_images)
    padded = [np.pad(r, ((0, 0), (0, total_w - r.shape[1]), (0, 0)), constant_values=255) for r in row_images]
    picture = _vstack(padded, gap)
    if max_width is not None and picture.shape[1] > max_width:
        picture = resize(picture, (max(1, round(picture.shape[0] * max_width / picture.shape[1])), max_width))
    return picture


def _hstack(images: list[np.ndarray], gap: int) -> np.ndarray:
    spacer = np.full((images[0].shape[0], gap, 3), 255, np.uint8)
    parts = [p for image in images for p in (image, spacer)][:-1]
    return np.concatenate(parts, axis=1)


def _vstack(images: list[np.ndarray], gap: int) -> np.ndarray:
    spacer = np.full((gap, images[0].shape[1], 3), 255, np.uint8)
    parts = [p for image in images for p in (image, spacer)][:-1]
    return np.concatenate(parts, axis=0)


def _check_rgb(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image but got shape {shape} and dtype {dtype}")
