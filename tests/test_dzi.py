"""The Deep Zoom writer against references: slices of the image (top level, with the overlap computed
by hand), cv2.resize INTER_AREA of the whole image (lower levels), the standard level sizes; its
memory (pixels per read, Python allocations) on a tall image; nothing left behind on failure."""

from __future__ import annotations

import os
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcnclassify.outputs import dzi
from fcnclassify.outputs.dzi import dzi_levels, write_dzi


def _reader(image: np.ndarray, calls: list | None = None):
    def read(x, y, w, h):
        if calls is not None:
            calls.append((x, y, w, h))
        return image[y:y + h, x:x + w]
    return read


def _tile(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)


def _span(index: int, tile_size: int, overlap: int, size: int) -> tuple[int, int]:
    """Pixels of tile ``index`` along one axis: its own ``tile_size`` plus ``overlap`` of each neighbour."""
    return max(index * tile_size - overlap, 0), min((index + 1) * tile_size + overlap, size)


def _level(folder: Path, k: int, width: int, height: int, tile_size: int, overlap: int,
           ext: str) -> np.ndarray:
    """Level ``k`` put together from the cores of its tiles; checks each tile's overlap against it
    (PNG: exactly; JPEG encodes each tile on its own)."""
    cols, rows = -(-width // tile_size), -(-height // tile_size)
    names = sorted(os.listdir(folder / str(k)))
    assert names == sorted(f"{c}_{r}.{ext}" for c in range(cols) for r in range(rows))
    tiles = {(c, r): _tile(folder / str(k) / f"{c}_{r}.{ext}") for c in range(cols) for r in range(rows)}
    level = np.zeros((height, width, tiles[0, 0].shape[2]), np.uint8)
    for (c, r), tile in tiles.items():
        (x0, x1), (y0, y1) = _span(c, tile_size, overlap, width), _span(r, tile_size, overlap, height)
        assert tile.shape[:2] == (y1 - y0, x1 - x0), (k, c, r)
        core_x, core_y = c * tile_size, r * tile_size
        level[core_y:min(core_y + tile_size, height), core_x:min(core_x + tile_size, width)] = \
            tile[core_y - y0:core_y - y0 + tile_size, core_x - x0:core_x - x0 + tile_size]
    for (c, r), tile in tiles.items():  # the overlaps repeat the neighbours' pixels
        (x0, x1), (y0, y1) = _span(c, tile_size, overlap, width), _span(r, tile_size, overlap, height)
        np.testing.assert_allclose(tile, level[y0:y1, x0:x1], atol=0 if ext == "png" else 8, rtol=0)
    return level


def _smooth(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Low-frequency colours: resampling shifts of a pixel change them by about 1 level."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 6, channels)).astype(np.float32)
    return np.rint(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255)
                   .reshape(height, width, channels)).astype(np.uint8)


def test_level_sizes_are_the_standard_deep_zoom_ones():
    # by hand: 517 = 2^9.01 -> 10 halvings to 1 pixel, each rounded up
    assert dzi_levels(517, 300) == [(1, 1), (2, 1), (3, 2), (5, 3), (9, 5), (17, 10), (33, 19),
                                    (65, 38), (130, 75), (259, 150), (517, 300)]
    assert dzi_levels(1, 1) == [(1, 1)]
    assert dzi_levels(256, 64) == [(2 ** k, max(2 ** k // 4, 1)) for k in range(9)]
    assert dzi_levels(257, 3) == [(1, 1), *[(-(-257 // 2 ** (9 - k)), -(-3 // 2 ** (9 - k)))
                                             for k in range(1, 10)]]


def test_top_level_tiles_are_slices_of_the_image_with_their_overlap(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 517, 4), dtype=np.uint8)  # RGBA: the alpha kept too
    descriptor = write_dzi(tmp_path / "noise", 517, 300, _reader(image), tile_size=100, overlap=2,
                           format="png")
    assert descriptor == {"Url": "noise_files/", "Format": "png", "Overlap": 2, "TileSize": 100,
                          "Size": {"Width": 517, "Height": 300}}
    top = tmp_path / "noise_files" / "10"
    assert len(os.listdir(top)) == 6 * 3
    for c in range(6):
        for r in range(3):
            (x0, x1), (y0, y1) = _span(c, 100, 2, 517), _span(r, 100, 2, 300)
            np.testing.assert_array_equal(_tile(top / f"{c}_{r}.png"), image[y0:y1, x0:x1])
    assert sorted(os.listdir(tmp_path / "noise_files"), key=int) == [str(k) for k in range(11)]
    root = ET.parse(tmp_path / "noise.dzi").getroot()
    assert root.tag == "{http://schemas.microsoft.com/deepzoom/2008}Image"
    assert (root.get("Format"), root.get("Overlap"), root.get("TileSize")) == ("png", "2", "100")
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert (size.get("Width"), size.get("Height")) == ("517", "300")


@pytest.mark.parametrize("width, height", [(512, 384), (517, 301)])
def test_lower_levels_are_area_means_of_the_whole_image(tmp_path, width, height):
    """A level ``h`` halvings down: each pixel the mean of a ``2^h`` square of the image, as
    cv2.resize INTER_AREA of the whole image gives it; pixels cut by the image's edge (odd sizes
    rounded up) lie within their pixels' range."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    write_dzi(tmp_path / "noise", width, height, _reader(image), tile_size=60, overlap=1, format="png")
    levels = dzi_levels(width, height)
    for k, (w, h) in enumerate(levels):
        halvings = len(levels) - 1 - k
        f = 2 ** halvings
        level = _level(tmp_path / "noise_files", k, w, h, 60, 1, "png").astype(np.float64)
        rounding = 0.5 * halvings + 1e-3  # each halving rounds once, by at most half a level
        whole_w, whole_h = width // f, height // f  # the level's pixels that cover f x f pixels
        if whole_w and whole_h:
            reference = cv2.resize(image[:whole_h * f, :whole_w * f].astype(np.float32),
                                   (whole_w, whole_h), interpolation=cv2.INTER_AREA)
            np.testing.assert_allclose(level[:whole_h, :whole_w], reference.reshape(whole_h, whole_w, 3),
                                       atol=rounding, rtol=0)
        for y in range(h):
            for x in range(w):
                if x < whole_w and y < whole_h:
                    continue
                block = image[y * f:(y + 1) * f, x * f:(x + 1) * f].reshape(-1, 3)
                assert (block.min(0) - rounding <= level[y, x]).all(), (k, x, y)
                assert (level[y, x] <= block.max(0) + rounding).all(), (k, x, y)


def test_jpeg_tiles_keep_the_colours_in_rgb_order(tmp_path):
    image = _smooth(200, 300, 3, seed=3)
    image[:, :100] = (230, 20, 20)  # a red band: swapped channels would make it blue
    write_dzi(tmp_path / "photo", 300, 200, _reader(image), format="jpeg", quality=95)
    level = _level(tmp_path / "photo_files", 9, 300, 200, 254, 1, "jpeg")
    difference = np.abs(level.astype(np.int16) - image)
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 8
    assert (np.abs(level[50:150, 20:80].astype(np.int16) - (230, 20, 20)) < 10).all()


def test_memory_stays_at_a_few_tile_rows_of_a_tall_image(tmp_path, monkeypatch):
    """Reads are bounded and each row is read once; Python's allocations peak at a few tile rows,
    not at the level (48 MB here)."""
    width, height, tile = 1000, 16000, 254
    monkeypatch.setattr(dzi, "READ_PIXELS", tile * 400)  # three chunks per band
    band = np.zeros((tile + 1, width, 3), np.uint8)
    band[:] = np.arange(width, dtype=np.uint8)[None, :, None]
    calls = []

    def read(x, y, w, h):
        calls.append((x, y, w, h))
        return band[:h, x:x + w]

    tracemalloc.start()
    try:
        write_dzi(tmp_path / "tall", width, height, read, tile_size=tile, quality=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(w * h for _, _, w, h in calls) <= tile * 400
    assert sum(w * h for _, _, w, h in calls) == width * height  # every pixel read once
    covered = np.zeros((height, width), bool)
    for x, y, w, h in calls:
        covered[y:y + h, x:x + w] = True
    assert covered.all()
    level_bytes = width * height * 3
    band_bytes = tile * width * 3
    assert peak < 5 * band_bytes < level_bytes / 12, (peak, band_bytes, level_bytes)
    top = dzi_levels(width, height)[-1]
    assert top == (width, height)
    assert len(os.listdir(tmp_path / "tall_files" / str(len(dzi_levels(width, height)) - 1))) == 4 * 63


def test_a_failing_read_leaves_nothing_behind(tmp_path):
    image = _smooth(600, 700, 3)
    calls = []

    def read(x, y, w, h):
        calls.append(y)
        if len(calls) == 2:
            raise OSError("the slide went away")
        return image[y:y + h, x:x + w]

    with pytest.raises(OSError, match="went away"):
        write_dzi(tmp_path / "broken", 700, 600, read)
    assert os.listdir(tmp_path) == []


def test_bad_pixels_from_read_are_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(ValueError, match=r"expected read\(0, 0, 40, 30\) to return uint8 pixels of "
                                         r"shape \(30, 40, 3\) but got uint8 \(30, 40, 4\)"):
        write_dzi(tmp_path / "rgba", 40, 30, lambda x, y, w, h: np.zeros((h, w, 4), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(30, 40, 3\) but got float32 \(30, 40, 3\)"):
        write_dzi(tmp_path / "float", 40, 30, lambda x, y, w, h: np.zeros((h, w, 3), np.float32),
                  format="png")
    assert os.listdir(tmp_path) == []


def test_existing_outputs_are_refused_unless_overwrite(tmp_path):
    red = np.full((50, 60, 3), (200, 0, 0), np.uint8)
    blue = np.full((50, 60, 3), (0, 0, 200), np.uint8)
    write_dzi(tmp_path / "x", 60, 50, _reader(red), format="png")
    before = (tmp_path / "x_files" / "6" / "0_0.png").read_bytes()
    with pytest.raises(FileExistsError, match="x.dzi: already exists"):
        write_dzi(tmp_path / "x", 60, 50, _reader(blue), format="png")
    assert (tmp_path / "x_files" / "6" / "0_0.png").read_bytes() == before
    write_dzi(tmp_path / "x.dzi", 60, 50, _reader(blue), format="png", overwrite=True)
    np.testing.assert_array_equal(_tile(tmp_path / "x_files" / "6" / "0_0.png"), blue)
    assert sorted(os.listdir(tmp_path)) == ["x.dzi", "x_files"]


@pytest.mark.parametrize("options, message", [
    (dict(format="tiff"), "expected a tile format in"),
    (dict(tile_size=0), "expected tile_size to be a whole number >= 1"),
    (dict(overlap=254), "overlap < tile_size"),
    (dict(quality=101), "quality <= 100"),
])
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        write_dzi(tmp_path / "x", 10, 10, lambda x, y, w, h: np.zeros((h, w, 3), np.uint8), **options)
    assert os.listdir(tmp_path) == []
