"""Deep Zoom (DZI) tiles of an image of any size, written in one pass without holding a level.

The layout is the standard one that OpenSeadragon, QuPath and vips read: ``<stem>.dzi`` (the XML
descriptor) beside ``<stem>_files/<level>/<col>_<row>.<format>``. Level ``ceil(log2(max(W, H)))``
has the image's own size; each level below halves the one above (sizes rounded up), down to level 0
of one pixel. A tile covers ``tile_size`` pixels and ``overlap`` more pixels of each neighbour.

Streaming. The top level is read in bands of one tile row (in chunks of at most
:data:`READ_PIXELS` pixels), each row of the image once; every level keeps only the rows its next
tile row needs, and passes pairs of rows, averaged 2 x 2, to the level below. Memory is a few tile
rows of the top level (about 4 x 256 x width x channels bytes), whatever the image's height.

Atomic. Everything is written into a hidden temporary folder beside ``dest`` and renamed into place
at the end; an exception (in ``read`` or anywhere else) leaves no partial output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

__all__ = ["FORMATS", "READ_PIXELS", "dzi_levels", "write_dzi"]

FORMATS = {"jpeg": (3,), "png": (3, 4)}  # tile format -> channels ``read`` may return (RGB, RGBA)
READ_PIXELS = 1 << 22  # at most this many pixels per call of ``read`` (one tile row at least)
XMLNS = "http://schemas.microsoft.com/deepzoom/2008"

Reader = Callable[[int, int, int, int], np.ndarray]


def dzi_levels(width: int, height: int) -> list[tuple[int, int]]:
    """``(width, height)`` of each Deep Zoom level, level 0 (1 x 1) first, the image's size last."""
    top = (max(width, height) - 1).bit_length()  # ceil(log2(max(W, H))), exactly
    return [(-(-width // 2 ** (top - k)), -(-height // 2 ** (top - k))) for k in range(top + 1)]


def write_dzi(dest: str | os.PathLike, width: int, height: int, read: Reader, *, tile_size: int = 254,
              overlap: int = 1, format: str = "jpeg", quality: int = 90,
              overwrite: bool = False) -> dict:
    """Writes ``dest.with_suffix(".dzi")`` and its ``<stem>_files/`` tiles, reading the image by regions.

    Args:
        dest: where the descriptor goes; its stem names the tiles' folder.
        width, height: the image's size in pixels (level 0 of the slide, or the photo).
        read: ``read(x, y, w, h)`` returns those pixels as uint8, ``(h, w, 3)`` RGB, or for ``"png"``
            also ``(h, w, 4)`` RGBA (transparency kept; every call the same).
        tile_size: tile side in pixels, without the overlap (254 + 2 x 1 = 256 pixels on the wire).
        overlap: pixels of each neighbouring tile repeated at a tile's inner edges.
        format: ``"jpeg"`` (at ``quality``) or ``"png"``; also the tiles' file extension.
        overwrite: replace an existing descriptor and tiles (otherwise FileExistsError).

    Returns:
        The descriptor as a dict: ``{"Url": "<stem>_files/", "Format", "Overlap", "TileSize",
        "Size": {"Width", "Height"}}`` (numbers as ints), what :func:`~fcnclassify.outputs.viewer.write_viewer`
        inlines in its page.
    """
    if format not in FORMATS:
        raise ValueError(f"expected a tile format in {sorted(FORMATS)} but got {format!r}")
    for name, value, least in (("width", width, 1), ("height", height, 1), ("tile_size", tile_size, 1),
                               ("overlap", overlap, 0), ("quality", quality, 1)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"expected {name} to be a whole number >= {least} but got {value!r}")
    if quality > 100 or overlap >= tile_size:
        raise ValueError(f"expected quality <= 100 and overlap < tile_size but got quality {quality}, "
                         f"overlap {overlap}, tile_size {tile_size}")
    descriptor_path = Path(dest).with_suffix(".dzi")
    stem = descriptor_path.stem
    tiles_path = descriptor_path.with_name(f"{stem}_files")
    existing = [p for p in (descriptor_path, tiles_path) if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists (Deep Zoom output; pass overwrite=True "
                              f"to replace it)")
    descriptor = {"Url": f"{stem}_files/", "Format": format, "Overlap": int(overlap),
                  "TileSize": int(tile_size), "Size": {"Width": int(width), "Height": int(height)}}

    descriptor_path.parent.mkdir(parents=True, exist_ok=True)
    work = descriptor_path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.dzi-tmp")
    work.mkdir()
    try:
        params = ([cv2.IMWRITE_JPEG_QUALITY, int(quality)] if format == "jpeg"
                  else [cv2.IMWRITE_PNG_COMPRESSION, 1])  # 1.5x faster than 3, a few % larger
        # OpenCV encodes without the GIL: a tile row's tiles are encoded and written in threads
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            levels = [_Level(k, w, h, tile_size, overlap, work / f"{stem}_files" / str(k), format,
                             params, pool) for k, (w, h) in enumerate(dzi_levels(width, height))]
            for below, level in zip(levels, levels[1:]):
                level.below = below
            for rows in _bands(read, width, height, tile_size, overlap, FORMATS[format]):
                levels[-1].push(rows)
        if any(level.next_row < level.tile_rows for level in levels):  # a bug, never bad input
            raise RuntimeError("Deep Zoom writer: some tile rows were not written")
        (work / f"{stem}.dzi").write_text(_xml(descriptor))
        if existing:  # overwrite: the old output moves into the work folder, deleted with it
            for path in existing:
                os.replace(path, work / f"old-{path.name}")
        os.replace(work / f"{stem}_files", tiles_path)
        os.replace(work / f"{stem}.dzi", descriptor_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return descriptor


def _bands(read: Reader, width: int, height: int, tile_size: int, overlap: int,
           allowed: tuple[int, ...]):
    """The image's rows, a band at a time, each read in chunks of whole columns.

    A band ends where a tile row of the top level ends, its overlap included (``ts + ov``,
    ``2 ts + ov``, ...), so that each band completes one tile row.
    """
    chunk = max(1, min(width, READ_PIXELS // (tile_size + overlap)))
    channels = None  # the first read's, among ``allowed``
    y = 0
    while y < height:
        h = min(height, (y // tile_size + 1) * tile_size + overlap) - y
        rows = None
        for x in range(0, width, chunk):
            w = min(chunk, width - x)
            pixels = np.asarray(read(x, y, w, h))
            if channels is None and pixels.ndim == 3 and pixels.shape[2] in allowed:
                channels = pixels.shape[2]
            if pixels.shape != (h, w, channels) or pixels.dtype != np.uint8:
                expected = " or ".join(str((h, w, c)) for c in ([channels] if channels else allowed))
                raise ValueError(f"expected read({x}, {y}, {w}, {h}) to return uint8 pixels of shape "
                                 f"{expected} but got {pixels.dtype} {pixels.shape}")
            if rows is None:  # our own copy: a reader may reuse its buffer
                rows = np.empty((h, width, channels), dtype=np.uint8)
            rows[:, x:x + w] = pixels
        yield rows
        y += h


class _Level:
    """One level being written: the rows received and not yet needed, the next tile row to write."""

    def __init__(self, index: int, width: int, height: int, tile_size: int, overlap: int,
                 folder: Path, format: str, params: list[int], pool: ThreadPoolExecutor) -> None:
        self.index, self.width, self.height = index, width, height
        self.tile_size, self.overlap = tile_size, overlap
        self.folder, self.format, self.params, self.pool = folder, format, params, pool
        self.tile_rows = -(-height // tile_size)
        self.tile_cols = -(-width // tile_size)
        self.chunks: list[np.ndarray] = []  # rows received and still needed, from row `top` on
        self.top = 0
        self.received = 0
        self.next_row = 0
        self.odd: np.ndarray | None = None  # a row waiting for its pair, for the level below
        self.below: _Level | None = None
        folder.mkdir(parents=True)

    def push(self, rows: np.ndarray) -> None:
        """Takes the next rows of this level, writes the tile rows they complete, feeds the level below."""
        if rows.shape[0]:
            self.chunks.append(rows)
            self.received += rows.shape[0]
        ts, ov = self.tile_size, self.overlap
        while self.next_row < self.tile_rows:
            r = self.next_row
            y0, y1 = max(r * ts - ov, 0), min((r + 1) * ts + ov, self.height)
            if self.received < y1:
                break
            self._write_row(r, self._rows(y0, y1))
            self.next_row += 1
            self._drop(max((r + 1) * ts - ov, 0))  # keep from the first row the next tile row needs
        if self.below is not None:
            self.below.push(self._halve(rows, last=self.received == self.height))

    def _rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of the level (a view when one chunk holds them)."""
        parts, start = [], self.top
        for chunk in self.chunks:
            end = start + chunk.shape[0]
            if end > y0 and start < y1:
                parts.append(chunk[max(y0 - start, 0):min(y1, end) - start])
            start = end
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _drop(self, keep: int) -> None:
        """Forgets the rows above ``keep``; a chunk cut in two is copied, so the rest is freed."""
        while self.chunks and self.top + self.chunks[0].shape[0] <= keep:
            self.top += self.chunks.pop(0).shape[0]
        if self.chunks and self.top < keep:
            self.chunks[0] = self.chunks[0][keep - self.top:].copy()
            self.top = keep

    def _write_row(self, r: int, rows: np.ndarray) -> None:
        ts, ov = self.tile_size, self.overlap

        def write(c: int) -> None:
            x0, x1 = max(c * ts - ov, 0), min((c + 1) * ts + ov, self.width)
            tile = rows[:, x0:x1]
            bgr = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR if tile.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
            ok, data = cv2.imencode(f".{self.format}", bgr, self.params)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode a {self.format} tile of shape {tile.shape}")
            (self.folder / f"{c}_{r}.{self.format}").write_bytes(data.tobytes())

        for _ in self.pool.map(write, range(self.tile_cols)):  # all done, or the first error raised
            pass

    def _halve(self, rows: np.ndarray, *, last: bool) -> np.ndarray:
        """The level below's rows from these: 2 x 2 means; an odd last row or column is averaged
        with itself (the level's size rounded up). A row left without its pair waits for the next."""
        out = []
        if self.odd is not None and rows.shape[0]:
            out.append(_halve_pairs(np.concatenate([self.odd, rows[:1]])))
            rows, self.odd = rows[1:], None
        even = rows.shape[0] // 2 * 2
        if even:
            out.append(_halve_pairs(rows[:even]))
        if rows.shape[0] > even:
            self.odd = rows[even:].copy()
        if last and self.odd is not None:
            out.append(_halve_pairs(np.concatenate([self.odd, self.odd])))
            self.odd = None
        if not out:
            return np.empty((0, (self.width + 1) // 2, rows.shape[2]), np.uint8)
        return out[0] if len(out) == 1 else np.concatenate(out)


def _halve_pairs(rows: np.ndarray) -> np.ndarray:
    """2 x 2 means (rounded half up) of an even number of rows; an odd last column alone, with itself."""
    height, width, channels = rows.shape
    even = width // 2 * 2
    out = np.empty((height // 2, (width + 1) // 2, channels), np.uint8)
    if even:
        out[:, :even // 2] = cv2.resize(rows[:, :even], (even // 2, height // 2),
                                        interpolation=cv2.INTER_AREA).reshape(height // 2, even // 2, channels)
    if width > even:  # (a + a + b + b + 2) // 4 == (a + b + 1) // 2, as cv2 rounds the others
        column = rows[:, -1].astype(np.uint16)
        out[:, -1] = (column[0::2] + column[1::2] + 1) >> 1
    return out


def _xml(descriptor: dict) -> str:
    size = descriptor["Size"]
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="{XMLNS}" Format="{descriptor["Format"]}" Overlap="{descriptor["Overlap"]}" '
            f'TileSize="{descriptor["TileSize"]}">\n'
            f'  <Size Width="{size["Width"]}" Height="{size["Height"]}"/>\n'
            f'</Image>\n')
