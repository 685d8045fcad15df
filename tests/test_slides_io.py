"""fcnclassify.io.slides against the arrays written to synthetic TIFFs (tests/slide_files.py)."""

from __future__ import annotations

import sys
import tracemalloc

import cv2
import numpy as np
import pytest

pytest.importorskip("tifffile")
pytest.importorskip("zarr")
import tifffile  # noqa: E402
import tifffile.zarr  # noqa: E402
from slide_files import write_test_slide  # noqa: E402

from fcnclassify.io.slides import SlideError, is_slide, open_slide, tissue_mask  # noqa: E402

SCALES = (1, 0.5, 0.37, 0.3, 0.2)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """1500 x 2300 RGB: astronaut and chelsea tiled on a white background (a margin of 100 pixels)."""
    data = pytest.importorskip("skimage.data")
    image = np.full((1500, 2300, 3), 255, dtype=np.uint8)
    astronaut, chelsea = data.astronaut(), data.chelsea()
    for y in range(100, 1400 - 300, 650):
        for x in range(100, 2200 - 300, 700):
            image[y:y + 512, x:x + 512] = astronaut
            image[y + 100:y + 400, x + 520:x + 520 + 151] = chelsea[:, 150:301]
    return image


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory, photo):
    path = tmp_path_factory.mktemp("slides") / "photo.ome.tif"
    return path, write_test_slide(path, photo)


def _random_regions(rng, height, width, count=6):
    for _ in range(count):
        y0, y1 = sorted(rng.choice(height + 1, 2, replace=False))
        x0, x1 = sorted(rng.choice(width + 1, 2, replace=False))
        yield int(y0), int(y1), int(x0), int(x1)


@pytest.mark.parametrize("options", [{}, {"bigtiff": True}, {"pyramid": False}, {"layout": "pages"},
                                     {"planar": True}],
                         ids=["ome-subifds", "bigtiff", "flat", "pages", "planar"])
def test_read_every_level_equals_the_array_written(tmp_path, photo, options):
    image = photo[:700, :1100]
    arrays = write_test_slide(tmp_path / "s.tif", image, **options)
    rng = np.random.default_rng(0)
    with open_slide(tmp_path / "s.tif") as slide:
        assert slide.backend == "tifffile"
        assert slide.levels == tuple(a.shape[:2] for a in arrays)
        assert slide.size == (700, 1100)
        expected = [(700 / a.shape[0] + 1100 / a.shape[1]) / 2 for a in arrays]
        assert slide.downsamples == pytest.approx(expected)
        for level, array in enumerate(arrays):
            for y0, y1, x0, x1 in _random_regions(rng, *array.shape[:2]):
                region = slide.read(y0, y1, x0, x1, level=level)
                assert region.dtype == np.uint8 and region.flags.c_contiguous
                np.testing.assert_array_equal(region, array[y0:y1, x0:x1])


def test_grey_rgba_and_16_bit_become_rgb8(tmp_path):
    rng = np.random.default_rng(1)
    grey16 = rng.integers(0, 65536, (300, 500), dtype=np.uint16)
    write_test_slide(tmp_path / "grey.tif", grey16, levels=1)
    with open_slide(tmp_path / "grey.tif") as slide:
        expected = np.repeat((grey16 // 256).astype(np.uint8)[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(slide.read(0, 300, 0, 500), expected)
    rgba = rng.integers(0, 256, (300, 500, 4), dtype=np.uint8)
    write_test_slide(tmp_path / "rgba.tif", rgba, levels=1)
    with open_slide(tmp_path / "rgba.tif") as slide:
        alpha = rgba[:, :, 3:] / 255.0
        over_white = np.floor(rgba[:, :, :3] * alpha + 255 * (1 - alpha) + 0.5)
        np.testing.assert_allclose(slide.read(0, 300, 0, 500), over_white, atol=0)


def test_read_decodes_only_the_tiles_it_touches(slide_path, monkeypatch):
    path, _ = slide_path
    keys = []
    get = tifffile.zarr.ZarrTiffStore.get

    async def counting_get(self, key, *args, **kwargs):
        value = await get(self, key, *args, **kwargs)
        if value is not None and key[-1].isdigit():  # a chunk, not metadata
            keys.append(key)
        return value

    monkeypatch.setattr(tifffile.zarr.ZarrTiffStore, "get", counting_get)
    with open_slide(path) as slide:
        keys.clear()
        slide.read(300, 700, 500, 1000)  # tiles of 256: rows 1-2 and columns 1-3
        assert len(keys) == 2 * 3, keys
        keys.clear()
        slide.read(10, 20, 600, 700, level=1)  # one tile
        assert len(keys) == 1, keys


def test_read_of_a_small_region_of_a_huge_tiff_stays_small(tmp_path):
    def tiles():  # 20000 x 20000 x 3 (1.2 GB decoded), zero-filled, written tile by tile
        zeros = np.zeros((1024, 1024, 3), dtype=np.uint8)
        for _ in range(20 * 20):
            yield zeros

    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, tiles(), shape=(20000, 20000, 3), dtype=np.uint8, tile=(1024, 1024),
                     compression="zstd", photometric="rgb", bigtiff=True)
    assert is_slide(path)
    with open_slide(path) as slide:
        tracemalloc.start()
        try:
            region = slide.read(10000, 10256, 5000, 5256)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert region.shape == (256, 256, 3) and not region.any()
    assert peak < 50e6, f"reading 256x256 pixels peaked at {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("scale", SCALES)
def test_read_scaled_is_tile_consistent_and_close_to_area_resize(slide_path, photo, scale):
    path, arrays = slide_path
    with open_slide(path) as slide:
        height, width = slide.scaled_size(scale)
        assert (height, width) == (max(1, round(1500 * scale)), max(1, round(2300 * scale)))
        whole = slide.read_scaled(scale, 0, height, 0, width)
        assert whole.shape == (height, width, 3) and whole.dtype == np.uint8
        rng = np.random.default_rng(int(scale * 100))
        for y0, y1, x0, x1 in _random_regions(rng, height, width, count=8):
            np.testing.assert_array_equal(slide.read_scaled(scale, y0, y1, x0, x1), whole[y0:y1, x0:x1])
        level = slide.level_for(scale)
        assert level == {1: 0, 0.5: 1, 0.37: 1, 0.3: 1, 0.2: 2}[scale]
        if slide.levels[level] == (height, width):  # a native level: read as written
            np.testing.assert_array_equal(whole, arrays[level])
    reference = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    difference = np.abs(whole.astype(np.int16) - reference).mean()
    assert difference < 3, f"mean |read_scaled - INTER_AREA| at scale {scale}: {difference:.2f}"


def test_read_scaled_follows_its_rule(tmp_path):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (301, 452, 3), dtype=np.uint8)
    write_test_slide(tmp_path / "flat.tif", image, pyramid=False, tile=64)
    with open_slide(tmp_path / "flat.tif") as slide:
        out = slide.read_scaled(1 / 3, 0, 100, 0, 151)
        assert slide.scaled_size(1 / 3) == (100, 151)
    # the rule, by hand: rows 301 -> 100, k = 3 (101 blocks, the last of 1 row); columns 452 -> 151,
    # k = 452 // 151 = 2 (226 blocks of 2); block means, then bilinear at u = (i + 0.5) L / (k N) - 0.5
    means = np.empty((101, 226, 3))
    for b in range(101):
        for c in range(226):
            means[b, c] = image[3 * b:3 * b + 3, 2 * c:2 * c + 2].reshape(-1, 3).mean(axis=0)
    u = (np.arange(100) + 0.5) * 301 / 300 - 0.5
    v = (np.arange(151) + 0.5) * 452 / 302 - 0.5
    grid = np.meshgrid(u, v, indexing="ij")
    reference = np.stack([ndimage.map_coordinates(means[:, :, c], grid, order=1, mode="nearest")
                          for c in range(3)], axis=2)
    reference = np.floor(reference + 0.5)
    difference = np.abs(out.astype(np.float64) - reference)
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999  # float rounding at .5 only


def test_read_scaled_integer_factor_is_the_exact_block_mean(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (300, 450, 3), dtype=np.uint8)
    write_test_slide(tmp_path / "flat.tif", image, pyramid=False, tile=64)
    with open_slide(tmp_path / "flat.tif") as slide:
        out = slide.read_scaled(1 / 3, 0, 100, 0, 150)
    blocks = image.reshape(100, 3, 150, 3, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.floor(blocks + 0.5).astype(np.uint8))


def test_thumbnail_in_strips_equals_one_read(slide_path, photo, monkeypatch):
    path, _ = slide_path
    with open_slide(path) as slide:
        whole = slide.thumbnail(500)
        assert whole.shape == (326, 500, 3)  # round(1500 * 500 / 2300)
        monkeypatch.setattr("fcnclassify.io.slides._STRIP_BYTES", 100_000)  # strips of a few rows
        np.testing.assert_array_equal(slide.thumbnail(500), whole)
        np.testing.assert_array_equal(slide.thumbnail(5000), photo)  # no enlarging: level 0 as is
    reference = cv2.resize(photo, (500, 326), interpolation=cv2.INTER_AREA)
    assert np.abs(whole.astype(np.int16) - reference).mean() < 3


def test_mpp_from_ome_resolution_tags_and_svs_description(tmp_path, photo):
    image = photo[:300, :400]
    write_test_slide(tmp_path / "ome.tif", image, mpp=0.5)
    write_test_slide(tmp_path / "tags.tif", image, mpp=0.25, layout="pages")
    write_test_slide(tmp_path / "none.tif", image, mpp=None, layout="pages")
    tifffile.imwrite(tmp_path / "inch.tif", image, tile=(256, 256), metadata=None, photometric="rgb",
                     resolution=(50800, 50800), resolutionunit="INCH")  # 25400 / 50800 = 0.5 µm
    description = "Aperio Image Library v12.0.15\n400x300 [0,0 400x300] (256x256) JPEG/RGB Q=70|MPP = 0.2527"
    tifffile.imwrite(tmp_path / "aperio.svs", image, tile=(256, 256), metadata=None, photometric="rgb",
                     description=description)
    expected = {"ome.tif": 0.5, "tags.tif": 0.25, "none.tif": None, "inch.tif": 0.5, "aperio.svs": 0.2527}
    for name, mpp in expected.items():
        with open_slide(tmp_path / name) as slide:
            assert slide.mpp == (None if mpp is None else pytest.approx(mpp, rel=1e-9)), name
            if mpp is not None:
                assert slide.scale_for_mpp(1.0) == pytest.approx(mpp)  # 1 µm per pixel
            else:
                with pytest.raises(SlideError, match="none.tif"):
                    slide.scale_for_mpp(1.0)


def test_openslide_backend_reads_what_tifffile_reads(tmp_path, photo):
    pytest.importorskip("openslide", reason="the openslide extra (openslide-python, openslide-bin) is needed")
    path = tmp_path / "generic.tif"
    arrays = write_test_slide(path, photo[:1000, :1400], layout="pages")
    rng = np.random.default_rng(3)
    with open_slide(path, backend="openslide") as slide, open_slide(path) as reference:
        assert slide.backend == "openslide" and reference.backend == "tifffile"
        assert slide.levels == reference.levels and slide.mpp == pytest.approx(0.25)
        for level, array in enumerate(arrays):
            for y0, y1, x0, x1 in _random_regions(rng, *array.shape[:2], count=3):
                np.testing.assert_array_equal(slide.read(y0, y1, x0, x1, level=level), array[y0:y1, x0:x1])
        np.testing.assert_array_equal(slide.read_scaled(0.3, 0, 300, 0, 420),
                                      reference.read_scaled(0.3, 0, 300, 0, 420))
    assert is_slide(tmp_path / "x.ndpi")  # OpenSlide's formats, by extension


def _he_slide(boxes, height=2000, width=3000):
    """White background (with scanner noise) and H&E-like blobs (pink stroma, purple nuclei)."""
    rng = np.random.default_rng(4)
    image = np.clip(rng.normal(245, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    for y0, y1, x0, x1 in boxes:
        pink = np.array([225, 150, 195]) + rng.normal(0, 12, (y1 - y0, x1 - x0, 3))
        nuclei = rng.random((y1 - y0, x1 - x0)) < 0.15
        pink[nuclei] = np.array([110, 60, 160]) + rng.normal(0, 10, (int(nuclei.sum()), 3))
        image[y0:y1, x0:x1] = np.clip(pink, 0, 255).astype(np.uint8)
    return image


def test_tissue_mask_finds_the_blobs_and_nothing_on_a_blank_slide(tmp_path):
    boxes = [(200, 900, 300, 1200), (1000, 1800, 1700, 2800)]
    write_test_slide(tmp_path / "he.tif", _he_slide(boxes), tile=512)
    with open_slide(tmp_path / "he.tif") as slide:
        mask, downsample = tissue_mask(slide, max_side=600)
    assert mask.shape == (400, 600) and mask.dtype == bool
    assert downsample == pytest.approx(5.0)
    truth = np.zeros_like(mask)
    for y0, y1, x0, x1 in boxes:
        truth[round(y0 / 5):round(y1 / 5), round(x0 / 5):round(x1 / 5)] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.9, f"IoU {iou:.3f}"

    write_test_slide(tmp_path / "blank.tif", _he_slide([]), tile=512)
    with open_slide(tmp_path / "blank.tif") as slide:
        assert not tissue_mask(slide, max_side=600)[0].any()
        everything, _ = tissue_mask(slide, max_side=600, method="none")
        assert everything.all() and everything.shape == (400, 600)


def _one_line_error(path, call):
    with pytest.raises(SlideError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_bad_files_are_one_line_slide_errors(tmp_path, photo):
    good = tmp_path / "good.tif"
    write_test_slide(good, photo[:600, :900])
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    assert "truncated" in _one_line_error(truncated, lambda: open_slide(truncated))
    text = tmp_path / "notes.tif"
    text.write_text("not a TIFF at all\n" * 20)
    assert "TIFF" in _one_line_error(text, lambda: open_slide(text))
    missing = tmp_path / "missing.tif"
    assert "no such file" in _one_line_error(missing, lambda: open_slide(missing))

    inconsistent = tmp_path / "inconsistent.tif"
    with tifffile.TiffWriter(inconsistent, ome=True) as tiff:
        tiff.write(photo[:600, :900], subifds=1, tile=(256, 256), photometric="rgb", metadata={"axes": "YXS"})
        tiff.write(photo[:300, :200], subfiletype=1, tile=(256, 256), photometric="rgb")  # 300x200 != 300x450
    assert "level 1" in _one_line_error(inconsistent, lambda: open_slide(inconsistent))

    with open_slide(good) as slide:
        assert "levels are 0: 600x900, 1: 300x450, 2: 150x225" in _one_line_error(
            good, lambda: slide.read(0, 10, 0, 10, level=3))
        outside = _one_line_error(good, lambda: slide.read(290, 310, 0, 10, level=1))
        assert "outside level 1 of 300x450" in outside
        assert "empty" in _one_line_error(good, lambda: slide.read(5, 5, 0, 10))
        _one_line_error(good, lambda: slide.read_scaled(0.5, 0, 301, 0, 10))


def test_a_missing_extra_names_it(tmp_path, photo, monkeypatch):
    path = tmp_path / "s.tif"
    write_test_slide(path, photo[:300, :300], levels=1)
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import tifffile now raises ImportError
    monkeypatch.setitem(sys.modules, "openslide", None)
    for backend in (None, "tifffile"):
        with pytest.raises(SlideError, match=r"pip install 'fcnclassify\[slide\]'"):
            open_slide(path, backend=backend)
    with pytest.raises(SlideError, match=r"pip install 'fcnclassify\[openslide\]'"):
        open_slide(path, backend="openslide")


def test_is_slide_reads_headers_only(tmp_path, photo):
    small = tmp_path / "small.jpg"
    cv2.imwrite(str(small), photo[:200, :300])
    assert not is_slide(small)
    striped = tmp_path / "striped.tif"
    tifffile.imwrite(striped, photo[:200, :300], photometric="rgb")  # a plain photo TIFF
    assert not is_slide(striped)
    tiled = tmp_path / "tiled.tif"
    write_test_slide(tiled, photo[:300, :300], levels=1)
    assert is_slide(tiled)
    assert not is_slide(tmp_path / "missing.tif")
