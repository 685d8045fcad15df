"""A pyramidal OME-TIFF (BigTIFF, tiled, levels as SubIFDs) written from regions, never held whole.

What QuPath, Bio-Formats and tifffile read: level 0 in the main IFD(s) with the OME-XML (axes ``YXS``
and photometric RGB for an RGB image; ``CYX``, one minisblack IFD per channel, with the channels'
names for heat channels), each coarser level halved (2 x 2 means, sizes rounded up) in a SubIFD,
down to the first level whose longer side is at most ``min_side``. ``PhysicalSizeX/Y`` are ``mpp``
(micrometres per level-0 pixel); each level's TIFF resolution is scaled with it.

Streaming, and its cost. tifffile writes level 0 (all channels, channel by channel for ``CYX``),
then each level in turn, from generators of tiles. Level ``k`` is computed from level 0 itself: its
tile rows are block means (``2**k`` x ``2**k`` pixels, fewer at the right and bottom edges) of strips
of at most ``tile`` level-0 rows read through ``read``, in chunks of at most about
:data:`READ_PIXELS` pixels. Memory stays at a tile row's chunk per level (about
``tile x READ_PIXELS / tile`` values), whatever the image's size; the price is reading level 0 once per
level and, for ``CYX``, once per channel and level (``levels x channels`` passes; an RGB image of
20000 x 20000 pixels has 8 levels: 8 passes). Levels small enough (:data:`HOLD_BYTES`) are computed in
one pass for all channels and held. A cascade (level ``k + 1`` from level ``k``'s rows as they come)
would read once, but tifffile takes the levels one after the other, so it would have to keep a whole
level (a quarter of level 0) until its turn.

Atomic: the file is written under a hidden temporary name beside ``path`` and renamed into place; an
exception (in ``read`` or anywhere) leaves nothing behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from fcnclassify.outputs.scorestore import import_slide

__all__ = ["HOLD_BYTES", "READ_PIXELS", "pyramid_sizes", "write_pyramid"]

READ_PIXELS = 1 << 22  # pixels per call of ``read``, about (one tile row of ``tile`` rows at least)
HOLD_BYTES = 1 << 26  # a level of at most this many bytes is computed in one pass and held

Reader = Callable[[int, int, int, int], np.ndarray]


def pyramid_sizes(height: int, width: int, *, min_side: int = 256) -> list[tuple[int, int]]:
    """``(height, width)`` of each level, level 0 first, halved (rounded up) while the longer side of the
    last one is above ``min_side``."""
    sizes = [(height, width)]
    while max(sizes[-1]) > min_side:
        h, w = sizes[-1]
        sizes.append((-(-h // 2), -(-w // 2)))
    return sizes


def write_pyramid(path: str | os.PathLike, height: int, width: int, channels: int, read: Reader, *,
                  tile: int = 512, dtype: str = "uint8", mpp: float | None = None,
                  channel_names: list[str] | None = None, compression: str = "zlib",
                  min_side: int = 256, overwrite: bool = False) -> list[tuple[int, int]]:
    """Writes a pyramidal OME-TIFF of an image read by regions.

    Args:
        path: the file to write (``.ome.tif`` is the custom).
        height, width: level 0's size in pixels.
        channels: values per pixel; 3 without ``channel_names`` is RGB (``YXS``), anything else is
            ``CYX`` (one grey plane per channel).
        read: ``read(y0, y1, x0, x1)`` returns level-0 pixels ``[y0:y1, x0:x1]`` as an array of shape
            ``(y1 - y0, x1 - x0, channels)`` and type ``dtype``; never asked for more than ``tile`` rows.
        tile: tile side in pixels (a multiple of 16, as TIFF requires).
        dtype: of the pixels (``uint8``, ``uint16``, ``float32``); integer means are rounded half up.
        mpp: micrometres per level-0 pixel, recorded as OME ``PhysicalSizeX/Y``.
        channel_names: OME channel names, one per channel (makes 3 channels ``CYX``).
        compression: a tifffile compression (``"zlib"``, ``"zstd"``, ``"jpeg"`` for RGB uint8, ``None``).
        min_side: the last level is the first whose longer side is at most this.
        overwrite: replace an existing file (otherwise FileExistsError).

    Returns:
        ``(height, width)`` of each level written, level 0 first.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    _check(path, height, width, channels, tile, dtype, mpp, channel_names, min_side)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    tifffile = import_slide("tifffile")
    sizes = pyramid_sizes(height, width, min_side=min_side)
    rgb = channels == 3 and channel_names is None
    metadata: dict = {"axes": "YXS" if rgb else "CYX"}
    if mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    if channel_names is not None:
        metadata["Channel"] = {"Name": list(channel_names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tifffile.TiffWriter(temporary, bigtiff=True, ome=True) as tif:
            for k, (h, w) in enumerate(sizes):
                source = _Level(path, read, height, width, channels, 2 ** k, h, w, tile, dtype)
                options = dict(shape=(h, w, channels) if rgb else (channels, h, w), dtype=dtype,
                               tile=(tile, tile), photometric="rgb" if rgb else "minisblack",
                               compression=compression)
                if mpp is not None:  # pixels per centimetre, this level's
                    options.update(resolution=(1e4 / (mpp * 2 ** k),) * 2, resolutionunit="CENTIMETER")
                if k == 0:
                    options.update(subifds=len(sizes) - 1, metadata=metadata)
                else:
                    options.update(subfiletype=1, metadata=None)
                tif.write(source.tiles(None if rgb else range(channels)), **options)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return sizes


def _check(path: Path, height: int, width: int, channels: int, tile: int, dtype: np.dtype,
           mpp: float | None, channel_names: list[str] | None, min_side: int) -> None:
    for name, value, least in (("height", height, 1), ("width", width, 1), ("channels", channels, 1),
                               ("tile", tile, 16), ("min_side", min_side, 1)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{path}: expected {name} to be a whole number >= {least} but got {value!r}")
    if tile % 16:
        raise ValueError(f"{path}: expected tile to be a multiple of 16 (TIFF tiles) but got {tile}")
    if dtype.kind not in "uif":
        raise ValueError(f"{path}: expected a numeric dtype but got {dtype}")
    if mpp is not None and not (isinstance(mpp, (int, float)) and mpp > 0):
        raise ValueError(f"{path}: expected mpp (micrometres per pixel) > 0 but got {mpp!r}")
    if channel_names is not None and len(channel_names) != channels:
        raise ValueError(f"{path}: expected {channels} channel names but got {len(channel_names)}")


class _Level:
    """One level's pixels: block means of level 0 (``factor`` x ``factor``), a tile row at a time."""

    def __init__(self, path: Path, read: Reader, height: int, width: int, channels: int, factor: int,
                 level_height: int, level_width: int, tile: int, dtype: np.dtype) -> None:
        self.path, self.read, self.height, self.width, self.channels = path, read, height, width, channels
        self.factor, self.level_height, self.level_width = factor, level_height, level_width
        self.tile, self.dtype = tile, dtype
        # a chunk of a tile row: whole tiles of this level, about READ_PIXELS level-0 pixels
        self.chunk = tile * max(1, READ_PIXELS // (tile * tile * factor))
        self.read_width = factor * max(1, READ_PIXELS // (tile * factor))  # level-0 columns per read

    def tiles(self, planes: range | None) -> Iterator[np.ndarray]:
        """Tiles in tifffile's order: ``(tile, tile, channels)`` row-major, or for ``planes`` one plane's
        tiles ``(tile, tile)`` after another (edge tiles smaller: tifffile pads them)."""
        if planes is None:
            for block in self._blocks():
                yield from self._cut(block)
            return
        held = None
        if self.level_height * self.level_width * self.channels * self.dtype.itemsize <= HOLD_BYTES:
            held = list(self._blocks())  # one pass for all planes
        for c in planes:
            for block in held if held is not None else self._blocks():
                yield from self._cut(block[..., c])

    def _cut(self, block: np.ndarray) -> Iterator[np.ndarray]:
        for x in range(0, block.shape[1], self.tile):
            yield block[:, x:x + self.tile]

    def _blocks(self) -> Iterator[np.ndarray]:
        """This level's tile rows, in chunks of whole tiles, row-major."""
        f, t = self.factor, self.tile
        for oy0 in range(0, self.level_height, t):
            oy1 = min(oy0 + t, self.level_height)
            for ox0 in range(0, self.level_width, self.chunk):
                ox1 = min(ox0 + self.chunk, self.level_width)
                if f == 1:
                    yield self._read(oy0, oy1, ox0, ox1)
                    continue
                sums = np.zeros((oy1 - oy0, ox1 - ox0, self.channels), np.float64)
                y1, x1 = min(oy1 * f, self.height), min(ox1 * f, self.width)
                for y in range(oy0 * f, y1, t):
                    for x in range(ox0 * f, x1, self.read_width):
                        pixels = self._read(y, min(y + t, y1), x, min(x + self.read_width, x1))
                        rows = np.unique(np.r_[0, np.arange(-y % f, pixels.shape[0], f)])
                        part = np.add.reduceat(pixels, rows, axis=0, dtype=np.float64)
                        part = np.add.reduceat(part, np.arange(0, pixels.shape[1], f), axis=1)
                        r, c = y // f - oy0, x // f - ox0
                        sums[r:r + part.shape[0], c:c + part.shape[1]] += part
                yield self._mean(sums, oy0, ox0)

    def _mean(self, sums: np.ndarray, oy0: int, ox0: int) -> np.ndarray:
        f = self.factor
        rows = np.minimum(f, self.height - f * np.arange(oy0, oy0 + sums.shape[0]))
        cols = np.minimum(f, self.width - f * np.arange(ox0, ox0 + sums.shape[1]))
        mean = sums / (rows[:, None] * cols[None, :])[..., None]
        if self.dtype.kind == "f":
            return mean.astype(self.dtype)
        info = np.iinfo(self.dtype)
        return np.clip(np.floor(mean + 0.5), info.min, info.max).astype(self.dtype)

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        pixels = np.asarray(self.read(y0, y1, x0, x1))
        expected = (y1 - y0, x1 - x0, self.channels)
        if pixels.shape != expected or pixels.dtype != self.dtype:
            raise ValueError(f"{self.path}: expected read({y0}, {y1}, {x0}, {x1}) to return {self.dtype} "
                             f"pixels of shape {expected} but got {pixels.dtype} {pixels.shape}")
        return pixels
