"""Windowed reading of gigapixel slides and huge TIFFs, and a tissue mask on a low level.

A :class:`Slide` reads a region of one pyramid level, decoding only the tiles it touches, never a
whole level: tifffile's zarr view of a TIFF (OME-TIFF, SVS, generic tiled or striped TIFF, BigTIFF,
GeoTIFF) from the ``slide`` extra, or OpenSlide (NDPI, MRXS, VMS, SCN, BIF, ...) from the
``openslide`` extra. :meth:`Slide.read_scaled` gives a region of the image resized to any scale,
read from the nearest finer level, and is tile-consistent: a region read alone equals, bit for bit,
that region of the whole image read at once (the streamed evaluation depends on it).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._constants import DEFAULT_MAX_PIXELS
from .images import ImageError, scaled_size

__all__ = ["OPENSLIDE_EXTENSIONS", "TIFF_EXTENSIONS", "Slide", "SlideError", "is_slide", "open_slide",
           "tissue_mask"]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".tf2", ".svs")  # .ome.tif(f) ends in .tif(f)
OPENSLIDE_EXTENSIONS = (".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide")
BACKENDS = ("tifffile", "openslide")

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, both byte orders
_EXTRA = "reading slides needs the {0} extra: pip install 'fcnclassify[{0}]'"
_MICRONS = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
_STRIP_BYTES = 64 << 20  # level bytes a thumbnail reads at a time
_BAND_PIXELS = 1 << 16  # output pixels read_scaled resamples at a time
_MIN_SATURATION = 0.05 * 255  # a blank slide's saturation stays below it, whatever Otsu says
_DARK = 64  # grey below it is foreground too (dark, unsaturated: pigment, ink, dense tissue)


class SlideError(ImageError):
    """A slide that cannot be opened or read; the message is one line, starting with the file."""


class Slide:
    """A large image read by regions; open one with :func:`open_slide`.

    Attributes:
        path: The file.
        backend: ``"tifffile"`` or ``"openslide"``.
        size: ``(height, width)`` of level 0, in pixels.
        levels: ``(height, width)`` of each level, level 0 (the finest) first.
        downsamples: level-0 pixels per level pixel, per level (``1.0`` first; the mean of both axes).
        mpp: microns per level-0 pixel where the file says it, else None.
    """

    def __init__(self, path: Path, reader: Any) -> None:
        self.path = path
        self._reader = reader
        self.backend: str = reader.name
        self.levels: tuple[tuple[int, int], ...] = tuple(reader.levels)
        self.size = self.levels[0]
        self.downsamples = tuple((self.size[0] / h + self.size[1] / w) / 2 for h, w in self.levels)
        self.mpp: float | None = reader.mpp

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, backend={self.backend!r}, levels={self.levels}, mpp={self.mpp})"

    def read(self, y0: int, y1: int, x0: int, x1: int, *, level: int = 0) -> np.ndarray:
        """Reads rows ``y0:y1`` and columns ``x0:x1`` of a level, decoding only the tiles they touch.

        Grey and grey+alpha become RGB, alpha is composited over white, 16-bit samples keep their
        high byte (``>> 8``).

        Returns:
            A contiguous ``(y1 - y0, x1 - x0, 3)`` uint8 RGB array.

        Raises:
            SlideError: No such level, a region empty or outside the level, or tiles that fail to decode.
        """
        if not (isinstance(level, (int, np.integer)) and 0 <= level < len(self.levels)):
            sizes = ", ".join(f"{k}: {h}x{w}" for k, (h, w) in enumerate(self.levels))
            raise SlideError(f"{self.path}: no level {level}; the levels are {sizes} (height x width)")
        _check_region(self.path, (y0, y1, x0, x1), self.levels[level], f"level {level}")
        try:
            rgb = self._reader.read(int(level), int(y0), int(y1), int(x0), int(x1))
        except SlideError:
            raise
        except Exception as err:  # a damaged tile: the library's words, on the file's one line
            raise SlideError(f"{self.path}: cannot read level {level} rows {y0}:{y1} columns {x0}:{x1} "
                             f"({_one_line(err)})") from err
        return np.ascontiguousarray(rgb)

    def scaled_size(self, scale: float) -> tuple[int, int]:
        """``(round(H0 * scale), round(W0 * scale))``, each at least 1: the image's size at ``scale``."""
        if not math.isfinite(scale):
            raise ValueError(f"expected a finite scale > 0, but got {scale}")
        return scaled_size(self.size, float(scale))

    def level_for(self, scale: float) -> int:
        """The level :meth:`read_scaled` reads: the coarsest one at least as large as the image at
        ``scale`` on both axes (level 0 when enlarging)."""
        height, width = self.scaled_size(scale)
        return max(k for k, (h, w) in enumerate(self.levels) if k == 0 or (h >= height and w >= width))

    def read_scaled(self, scale: float, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Reads rows ``y0:y1`` and columns ``x0:x1`` of the image resized to ``scaled_size(scale)``.

        The rule, per axis, with ``L`` the length of the level read (:meth:`level_for`) and ``N`` the
        output length: when ``L == N`` the level is read as is. Otherwise (a) the level is averaged in
        blocks of ``k = max(1, L // N)`` pixels on the grid ``[j k, (j + 1) k)`` that starts at the
        level's origin (the last block holds what is left), exactly, in integers and float64; then
        (b) unless ``L == k N``, output pixel ``i`` samples the block means bilinearly at
        ``u = (i + 0.5) L / (k N) - 0.5`` (a factor in [1, 2); the edge block repeats beyond the
        image). Each output value depends only on its global index and the level's pixels, so a
        region read alone equals that region of the whole image read at once, bit for bit.

        Returns:
            A contiguous ``(y1 - y0, x1 - x0, 3)`` uint8 RGB array.

        Raises:
            SlideError: The region is empty or outside the image at that scale, or the file fails.
        """
        height, width = self.scaled_size(scale)
        _check_region(self.path, (y0, y1, x0, x1), (height, width), f"the image at scale {scale}")
        level = self.level_for(scale)
        rows, cols = _Axis(self.levels[level][0], height), _Axis(self.levels[level][1], width)
        if rows.identity and cols.identity:
            return self.read(y0, y1, x0, x1, level=level)
        (b0, b1), (c0, c1) = rows.blocks(y0, y1), cols.blocks(x0, x1)
        crop = self.read(*rows.span(b0, b1), *cols.span(c0, c1), level=level)
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        band = max(1, _BAND_PIXELS // (x1 - x0))  # output rows at a time: float64 work stays small
        for i0 in range(y0, y1, band):
            i1 = min(i0 + band, y1)
            a0, a1 = rows.blocks(i0, i1)
            s0, s1 = (s - b0 * rows.k for s in rows.span(a0, a1))
            means = _block_means(crop[s0:s1], rows.k, cols.k)
            means = cols.sample(rows.sample(means, i0, i1, a0, axis=0), x0, x1, c0, axis=1)
            out[i0 - y0:i1 - y0] = np.clip(np.floor(means + 0.5), 0, 255)
        return out

    def scale_for_mpp(self, mpp: float) -> float:
        """The scale that gives ``mpp`` microns per pixel (``self.mpp / mpp``).

        Raises:
            SlideError: The file does not say its pixel size.
        """
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"expected microns per pixel > 0, but got {mpp}")
        if self.mpp is None:
            raise SlideError(f"{self.path}: the file does not give its pixel size (microns per pixel); "
                             f"give a scale instead")
        return self.mpp / mpp

    def thumbnail(self, max_side: int = 2048) -> np.ndarray:
        """The whole image with its larger side ``max_side`` (or level 0 as is, if smaller).

        Read with :meth:`read_scaled` from the coarsest level at least that large, in strips of rows,
        so a single-level file never decodes whole.
        """
        if max_side < 1:
            raise ValueError(f"expected max_side >= 1, but got {max_side}")
        scale = min(1.0, max_side / max(self.size))
        height, width = self.scaled_size(scale)
        level_height, level_width = self.levels[self.level_for(scale)]
        step = max(1, int(_STRIP_BYTES / (3 * level_width * level_height / height)))
        strips = [self.read_scaled(scale, y, min(y + step, height), 0, width) for y in range(0, height, step)]
        return np.concatenate(strips, axis=0)

    def close(self) -> None:
        """Closes the file."""
        self._reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_slide(path: str | os.PathLike, *, backend: str | None = None) -> Slide:
    """Opens a slide or a large TIFF for reading by regions; reads headers only.

    Args:
        path: The file.
        backend: ``"tifffile"`` or ``"openslide"``; None: OpenSlide for its own formats
            (``OPENSLIDE_EXTENSIONS``), tifffile for everything else (TIFF, SVS, OME-TIFF, BigTIFF)
            when the ``slide`` extra is installed, else OpenSlide.

    Raises:
        SlideError: The file is missing, not readable by the backend, truncated, its pyramid is
            inconsistent, or the backend's extra is not installed.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"expected a backend in {BACKENDS} or None, but got {backend!r}")
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    if not path.is_file():
        raise SlideError(f"{path}: not a file")
    if backend is None:
        backend = "openslide" if _suffix(path) in OPENSLIDE_EXTENSIONS else _default_backend()
    reader = _TiffReader(path) if backend == "tifffile" else _OpenSlideReader(path)
    try:
        _check_levels(path, reader.levels)
    except SlideError:
        reader.close()
        raise
    return Slide(path, reader)


def is_slide(path: str | os.PathLike) -> bool:
    """Whether a file should be read by regions (:func:`open_slide`) rather than as a photo.

    True for OpenSlide's extensions and ``.svs``, and for TIFFs that are tiled, pyramidal, or larger
    than ``DEFAULT_MAX_PIXELS``, judged from the header with tifffile (without tifffile: a TIFF
    extension and more than 1 GB). Never decodes pixels; a missing or unreadable file is False.
    """
    path = Path(path)
    if _suffix(path) in (*OPENSLIDE_EXTENSIONS, ".svs"):
        return True
    try:
        with open(path, "rb") as file:
            if file.read(4) not in _TIFF_MAGIC:
                return False
        tifffile = importlib.import_module("tifffile")
    except OSError:
        return False
    except ImportError:
        return _suffix(path) in TIFF_EXTENSIONS and path.stat().st_size > 1 << 30
    try:
        with _tifffile_log(), tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            height, width = page.imagelength, page.imagewidth
            pyramid = bool(page.subifds) or (bool(tiff.series) and len(tiff.series[0].levels) > 1)
            return bool(page.is_tiled or pyramid or height * width > DEFAULT_MAX_PIXELS)
    except Exception:  # a damaged TIFF goes the photo way, which names the damage
        return False


def tissue_mask(slide: Slide, *, max_side: int = 2048, method: str = "otsu") -> tuple[np.ndarray, float]:
    """A foreground mask on a thumbnail of the slide.

    ``method="otsu"``: a pixel is foreground when its saturation (HSV S, 0-255) is above Otsu's
    threshold on the thumbnail's saturations and above 0.05 * 255 (so that a blank white slide is
    empty), or when its grey value is below 64 (dark and unsaturated: ink, pigment, dense tissue);
    then a morphological close and open with an ellipse about 1/256 of the larger side. For
    stained tissue on a bright background; a scene with no background (a satellite image) should use
    ``method="none"``: all foreground.

    Returns:
        ``(mask, downsample)``: the ``(h, w)`` bool mask, and the level-0 pixels per mask pixel (the
        mean of both axes), so ``mask[i, j]`` covers level-0 pixels ``[i d, (i + 1) d)``.
    """
    if method not in ("otsu", "none"):
        raise ValueError(f"expected method 'otsu' or 'none', but got {method!r}")
    thumb = slide.thumbnail(max_side)
    height, width = thumb.shape[:2]
    downsample = (slide.size[0] / height + slide.size[1] / width) / 2
    if method == "none":
        return np.ones((height, width), dtype=bool), downsample
    saturation = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[:, :, 1]
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (saturation > max(otsu, _MIN_SATURATION)) | (cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY) < _DARK)
    side = max(3, round(max(height, width) / 256) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask.astype(bool), downsample


class _Axis:
    """One axis of :meth:`Slide.read_scaled`: level length ``L``, output length ``N``, block ``k``."""

    def __init__(self, length: int, out: int) -> None:
        self.length, self.out = length, out
        self.k = max(1, length // out)
        self.count = -(-length // self.k)  # blocks, the last one possibly partial
        self.exact = length == self.k * out  # the block means are the output
        self.identity = length == out

    def positions(self, i0: int, i1: int) -> np.ndarray:
        """Block coordinates sampled by output pixels ``i0:i1``, from their global index only."""
        return (np.arange(i0, i1, dtype=np.float64) + 0.5) * self.length / (self.k * self.out) - 0.5

    def blocks(self, i0: int, i1: int) -> tuple[int, int]:
        """The blocks ``b0:b1`` that output pixels ``i0:i1`` need."""
        if self.exact:
            return i0, i1
        u = self.positions(i0, i1)
        return max(0, min(int(np.floor(u[0])), self.count - 1)), min(int(np.floor(u[-1])) + 2, self.count)

    def span(self, b0: int, b1: int) -> tuple[int, int]:
        """The level pixels of blocks ``b0:b1``."""
        return b0 * self.k, min(b1 * self.k, self.length)

    def sample(self, means: np.ndarray, i0: int, i1: int, b0: int, *, axis: int) -> np.ndarray:
        """Output pixels ``i0:i1`` along ``axis`` from the block means of blocks ``b0:``."""
        if self.exact:
            return means
        u = self.positions(i0, i1)
        low = np.floor(u)
        other_axes = tuple(a for a in range(means.ndim) if a != axis)
        weight = np.expand_dims((u - low).astype(np.float32), other_axes)
        first = np.take(means, np.clip(low.astype(np.int64), 0, self.count - 1) - b0, axis=axis)
        second = np.take(means, np.clip(low.astype(np.int64) + 1, 0, self.count - 1) - b0, axis=axis)
        second -= first
        second *= weight
        second += first
        return second


def _block_means(crop: np.ndarray, k_rows: int, k_cols: int) -> np.ndarray:
    """Means of ``k_rows x k_cols`` blocks from the crop's origin (partial blocks at the far edges)."""
    sums, counts = crop, []
    for axis, k in ((0, k_rows), (1, k_cols)):
        starts = np.arange(0, crop.shape[axis], k)
        if k > 1:  # integer sums, exact; float64 only at the blocks' size
            sums = np.add.reduceat(sums, starts, axis=axis, dtype=np.uint64)
        counts.append(np.diff(np.append(starts, crop.shape[axis])).astype(np.float64))
    return (sums / (counts[0][:, None, None] * counts[1][None, :, None])).astype(np.float32)


def _check_region(path: Path, region: tuple[int, int, int, int], size: tuple[int, int], where: str) -> None:
    y0, y1, x0, x1 = region
    height, width = size
    if not all(isinstance(v, (int, np.integer)) for v in region):
        raise SlideError(f"{path}: expected integer bounds, but got rows {y0}:{y1} columns {x0}:{x1}")
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise SlideError(f"{path}: rows {y0}:{y1} columns {x0}:{x1} are empty or outside {where} of "
                         f"{height}x{width} (height x width)")


def _check_levels(path: Path, levels: list[tuple[int, int]]) -> None:
    """Each level no larger than the one before, with level 0's aspect (1 % + 1 pixel)."""
    height, width = levels[0]
    for k in range(1, len(levels)):
        (h, w), (before_h, before_w) = levels[k], levels[k - 1]
        if h > before_h or w > before_w:
            raise SlideError(f"{path}: inconsistent pyramid: level {k} ({h}x{w}) is larger than level "
                             f"{k - 1} ({before_h}x{before_w})")
        if abs(h - height * w / width) > 0.01 * h + 1:
            raise SlideError(f"{path}: inconsistent pyramid: level {k} ({h}x{w}) does not have level 0's "
                             f"aspect ({height}x{width})")


def _default_backend() -> str:
    for backend, module in (("tifffile", "tifffile"), ("openslide", "openslide")):
        try:
            importlib.import_module(module)
            return backend
        except ImportError:
            pass
    raise SlideError(_EXTRA.format("slide"))


def _import(extra: str, *modules: str) -> list[Any]:
    try:
        return [importlib.import_module(module) for module in modules]
    except ImportError as err:
        raise SlideError(_EXTRA.format(extra)) from err


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collects what tifffile logs about a damaged file (one line each) instead of printing it."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(" ".join(record.getMessage().split()))  # type: ignore
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _to_rgb(samples: np.ndarray, colormap: np.ndarray | None = None, invert: bool = False) -> np.ndarray:
    """``(h, w, c)`` uint8/uint16 samples (c: grey, grey+alpha, RGB, RGBA) to RGB uint8 over white."""
    if colormap is not None:
        samples = np.moveaxis(colormap[:, samples[:, :, 0]], 0, -1)  # palette: indices to RGB
    if samples.dtype == np.uint16:
        samples = (samples >> 8).astype(np.uint8)
    elif samples.dtype == np.bool_:
        samples = samples.astype(np.uint8) * 255
    channels = samples.shape[2]
    color = samples[:, :, :3] if channels >= 3 else np.repeat(samples[:, :, :1], 3, axis=2)
    if invert:
        color = 255 - color
    if channels in (2, 4):
        alpha = samples[:, :, -1:].astype(np.uint32)
        color = ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return color


class _TiffReader:
    """tifffile's zarr view of each level of the file's first series."""

    name = "tifffile"

    def __init__(self, path: Path) -> None:
        tifffile, zarr = _import("slide", "tifffile", "zarr")
        self._path = path
        with _tifffile_log() as messages:
            try:
                self._tiff = tifffile.TiffFile(path)
            except Exception as err:  # tifffile's TiffFileError, or struct/IO errors on garbage
                raise SlideError(f"{path}: not a readable TIFF ({_one_line(err)})") from err
            try:
                self._open(zarr)
            except Exception as err:
                self._tiff.close()
                if isinstance(err, SlideError):
                    raise
                logged = f"; {messages[0]}" if messages else ""
                raise SlideError(f"{path}: cannot read the TIFF's structure "
                                 f"({_one_line(err)}{logged})") from err

    def _open(self, zarr: Any) -> None:
        path, tiff = self._path, self._tiff
        if not tiff.series:
            raise SlideError(f"{path}: the TIFF holds no image")
        series = tiff.series[0]
        size = tiff.filehandle.size
        self.levels, self._arrays, self._layouts = [], [], []
        for k, level in enumerate(series.levels):
            end = max((o + n for page in level.pages if page is not None
                       for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n), default=0)
            if end > size:
                raise SlideError(f"{path}: truncated: level {k}'s tiles end at byte {end}, "
                                 f"the file has {size}")
            array = zarr.open(series.aszarr(level=k), mode="r")
            layout = _layout(path, k, level.axes, array.shape)
            self._arrays.append(array)
            self._layouts.append(layout)
            self.levels.append((array.shape[layout[0]], array.shape[layout[1]]))
        first = self._samples(0)
        for k in range(1, len(self.levels)):
            if self._samples(k) != first:
                (count, dtype), (count0, dtype0) = self._samples(k), first
                raise SlideError(f"{path}: inconsistent pyramid: level {k} has {count} {dtype} samples per "
                                 f"pixel, level 0 has {count0} {dtype0}")
        if first[1] not in ("uint8", "uint16", "bool"):
            raise SlideError(f"{path}: {first[1]} samples; expected 8- or 16-bit unsigned integers")
        page = series.keyframe
        photometric = int(page.photometric)
        if photometric not in (0, 1, 2, 3, 6):  # min-is-white, min-is-black, RGB, palette, YCbCr
            raise SlideError(f"{path}: photometric interpretation {page.photometric.name} is not supported")
        if first[0] > 4 and photometric != 2:
            raise SlideError(f"{path}: {first[0]} samples per pixel; expected 1 to 4 (grey, RGB, alpha)")
        self._invert = photometric == 0
        self._colormap = None
        if photometric == 3 and page.colormap is not None:
            self._colormap = (np.asarray(page.colormap) >> 8).astype(np.uint8)
        self.mpp = _tiff_mpp(tiff, page)

    def _samples(self, k: int) -> tuple[int, str]:
        channel = self._layouts[k][2]
        return (1 if channel is None else self._arrays[k].shape[channel]), str(self._arrays[k].dtype)

    def read(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        rows, cols, channel = self._layouts[level]
        array = self._arrays[level]
        index: list[Any] = [0] * array.ndim
        index[rows], index[cols] = slice(y0, y1), slice(x0, x1)
        kept = sorted((rows, cols) if channel is None else (rows, cols, channel))
        if channel is not None:
            index[channel] = slice(None)
        samples = np.asarray(array[tuple(index)])
        order = [kept.index(rows), kept.index(cols)] + ([] if channel is None else [kept.index(channel)])
        samples = samples.transpose(order)
        if channel is None:
            samples = samples[:, :, None]
        return _to_rgb(samples[:, :, :4], self._colormap, self._invert)

    def close(self) -> None:
        self._tiff.close()


def _layout(path: Path, k: int, axes: str, shape: tuple[int, ...]) -> tuple[int, int, int | None]:
    """The positions of the rows, columns and samples axes in tifffile's ``axes``; others must be 1."""
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        raise SlideError(f"{path}: level {k} has axes {axes!r} and shape {shape}; expected rows and columns")
    channel = next((axes.index(a) for a in "SC" if a in axes and shape[axes.index(a)] > 1), None)
    for i, axis in enumerate(axes):
        if axis not in "YX" and i != channel and shape[i] > 1:
            raise SlideError(f"{path}: level {k} has {shape[i]} planes along axis {axis!r} "
                             f"(axes {axes!r}); expected one image")
    return axes.index("Y"), axes.index("X"), channel


def _tiff_mpp(tiff: Any, page: Any) -> float | None:
    """Microns per pixel: OME PhysicalSizeX, an SVS description's MPP, or the resolution tags."""
    if tiff.is_ome and tiff.ome_metadata:
        try:
            for element in ElementTree.fromstring(tiff.ome_metadata).iter():
                if element.tag.endswith("Pixels") and element.get("PhysicalSizeX"):
                    unit = element.get("PhysicalSizeXUnit", "µm")
                    return float(element.get("PhysicalSizeX")) * _MICRONS[unit] if unit in _MICRONS else None
        except (ElementTree.ParseError, ValueError):
            pass
    match = re.search(r"\bMPP\s*=\s*([0-9.]+(?:[eE][-+]?\d+)?)", page.description or "")
    if match and float(match.group(1)) > 0:
        return float(match.group(1))
    resolution, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if resolution is None or unit is None or int(unit.value) not in (2, 3):
        return None
    numerator, denominator = resolution.value
    if numerator <= 0 or denominator <= 0:
        return None
    per_unit = numerator / denominator  # pixels per inch (2) or centimetre (3)
    return (25400.0 if int(unit.value) == 2 else 10000.0) / per_unit


class _OpenSlideReader:
    """OpenSlide's ``read_region``, in level-0 coordinates, RGBA composited over white."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        (openslide,) = _import("openslide", "openslide")
        try:
            self._slide = openslide.OpenSlide(os.fspath(path))
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise SlideError(f"{path}: not a format OpenSlide reads") from err
        except Exception as err:
            raise SlideError(f"{path}: OpenSlide cannot open it ({_one_line(err)})") from err
        self.levels = [(h, w) for w, h in self._slide.level_dimensions]
        mpp = self._slide.properties.get("openslide.mpp-x")
        try:
            self.mpp = float(mpp) if mpp is not None and float(mpp) > 0 else None
        except ValueError:
            self.mpp = None

    def read(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        downsample = self._slide.level_downsamples[level]
        region = self._slide.read_region((round(x0 * downsample), round(y0 * downsample)), level,
                                         (x1 - x0, y1 - y0))
        return _to_rgb(np.asarray(region))

    def close(self) -> None:
        self._slide.close()
