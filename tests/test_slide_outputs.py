"""Slide outputs against references: the score store against the in-memory logits (float16-rounded,
numpy softmax and nanmean) and a fresh process's ``zarr.open``; the OME-TIFF pyramid read back with
tifffile against the array and numpy block means, its OME-XML parsed with ElementTree; GeoJSON
regions rasterised back with cv2.fillPoly against the thresholded mask."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

from fcnclassify.outputs.geojson import regions, write_geojson  # noqa: E402
from fcnclassify.outputs.ometiff import write_pyramid  # noqa: E402
from fcnclassify.outputs.scorestore import ScoreStore  # noqa: E402

ATTRS = {"model": {"name": "vgg16", "scale": 1.0}, "stride": 32, "image": [1000, 1300],
         "labels": ["a", "b", "c", "d", "e"]}


def _origins(shape, chunk):
    return [(r, c) for r in range(0, shape[0], chunk[0]) for c in range(0, shape[1], chunk[1])]


def _tile(logits, r, c, chunk):
    return logits[:, r:r + chunk[0], c:c + chunk[1]]


@pytest.fixture
def logits():
    return (np.random.default_rng(0).normal(size=(5, 23, 30)) * 4).astype(np.float32)


def test_store_shuffled_tiles_resume_and_finish(tmp_path, logits):
    shape, chunk = logits.shape[1:], (8, 7)  # 3 x 5 chunks, partial last row and column
    path = tmp_path / "map.zarr"
    store = ScoreStore.create(path, classes=5, shape=shape, chunk=chunk, attrs=ATTRS)
    assert store.path == tmp_path / ".map.zarr.partial" and not path.exists()
    order = _origins(shape, chunk)
    np.random.default_rng(1).shuffle(order)
    for r, c in order[:9]:
        store.write(r, c, _tile(logits, r, c, chunk))
    del store  # an interrupted run
    store = ScoreStore.open(path, expect_attrs=ATTRS)
    assert store.pending() == sorted(order[9:])
    with pytest.raises(ValueError, match="6 chunk"):
        store.finish()
    for r, c in order[9:]:
        store.write(r, c, _tile(logits, r, c, chunk))
    assert store.pending() == [] and store.finish() == path
    assert path.is_dir() and not (tmp_path / ".map.zarr.partial").exists()

    import zarr
    stored = zarr.open_group(str(path), mode="r")["logits"][...]
    np.testing.assert_array_equal(stored, logits.astype(np.float16))
    assert ScoreStore.open(path).attrs == ATTRS


def test_store_skip_maps_and_means(tmp_path, logits):
    shape, chunk = logits.shape[1:], (8, 16)
    store = ScoreStore.create(tmp_path / "m.zarr", classes=5, shape=shape, chunk=chunk, attrs={})
    rounded = logits.astype(np.float16).astype(np.float64)
    store.skip(8, 16)
    rounded[:, 8:16, 16:30] = np.nan
    assert store.pending() == _origins(shape, chunk)[:3] + _origins(shape, chunk)[4:]
    for r, c in store.pending():
        store.write(r, c, _tile(logits, r, c, chunk))
    assert store.pending() == []
    assert int(store._done[1, 1]) == 2  # a resumed run knows the skip from a write

    e = np.exp(rounded - rounded.max(axis=0))
    softmax = e / e.sum(axis=0)
    maps = store.class_maps([3, 0])
    assert maps.dtype == np.float32 and maps.shape == (2, *shape)
    np.testing.assert_allclose(maps, softmax[[3, 0]], rtol=1e-3, equal_nan=True)
    np.testing.assert_allclose(store.class_map(2), softmax[2], rtol=1e-3, equal_nan=True)
    np.testing.assert_allclose(store.class_map(1, probabilities=False), rounded[1], rtol=0, equal_nan=True)
    assert np.isnan(maps[:, 8:16, 16:]).all() and not np.isnan(maps[:, :8]).any()
    np.testing.assert_allclose(store.mean_logits(), np.nanmean(rounded.reshape(5, -1), axis=1), rtol=1e-12)


def test_store_refusals(tmp_path, logits):
    path = tmp_path / "m.zarr"
    store = ScoreStore.create(path, classes=5, shape=(23, 30), chunk=(8, 8), attrs=ATTRS)
    with pytest.raises(ValueError, match=r"expected logits of shape \(5, 8, 8\)"):
        store.write(0, 0, logits[:, :8, :7])
    with pytest.raises(ValueError, match="chunk origin"):
        store.write(4, 0, logits[:, 4:12, :8])
    changed = {**ATTRS, "model": {"name": "vgg16", "scale": 2.0}}
    with pytest.raises(ValueError, match=r"'model\.scale' is 1\.0 there but 2\.0 now") as info:
        ScoreStore.open(path, expect_attrs=changed)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="'extra'"):
        ScoreStore.open(path, expect_attrs={**ATTRS, "extra": 1})
    with pytest.raises(FileExistsError):  # a partial one: resume it or overwrite
        ScoreStore.create(path, classes=5, shape=(23, 30), chunk=(8, 8), attrs=ATTRS)
    with pytest.raises(ValueError, match="JSON"):
        ScoreStore.create(tmp_path / "n.zarr", classes=5, shape=(2, 2), chunk=(1, 1), attrs={"x": object()})
    with pytest.raises(FileNotFoundError):
        ScoreStore.open(tmp_path / "missing.zarr")

    for r, c in store.pending():
        store.skip(r, c)
    path.mkdir()  # the final path taken meanwhile
    with pytest.raises(FileExistsError, match="overwrite"):
        store.finish()
    with pytest.raises(FileExistsError):
        ScoreStore.create(path, classes=5, shape=(23, 30), chunk=(8, 8), attrs=ATTRS)
    (path / "old.txt").write_text("old")
    again = ScoreStore.create(path, classes=5, shape=(23, 30), chunk=(8, 8), attrs=ATTRS, overwrite=True)
    assert (path / "old.txt").exists()  # replaced only by finish
    for r, c in again.pending():
        again.write(r, c, _tile(logits, r, c, (8, 8)))
    assert again.finish() == path and not (path / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]


def test_store_attrs_from_a_fresh_process(tmp_path, logits):
    path = tmp_path / "m.zarr"
    store = ScoreStore.create(path, classes=5, shape=(23, 30), chunk=(23, 30), attrs=ATTRS)
    store.write(0, 0, logits)
    store.finish()
    code = ("import json, sys, zarr; g = zarr.open(sys.argv[1], mode='r'); "
            "print(json.dumps({'attrs': dict(g.attrs), 'shape': list(g['logits'].shape)}))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen == {"attrs": {**ATTRS, "fcnclassify": {"version": 1}}, "shape": [5, 23, 30]}


def _block_mean(image: np.ndarray, f: int) -> np.ndarray:
    """Means of f x f blocks over the pixels present (edge blocks smaller), float64, by padding."""
    h, w = image.shape[:2]
    H, W = -(-h // f) * f, -(-w // f) * f
    pad = ((0, H - h), (0, W - w)) + ((0, 0),) * (image.ndim - 2)
    sums = np.pad(image.astype(np.float64), pad).reshape(H // f, f, W // f, f, *image.shape[2:]).sum((1, 3))
    counts = np.pad(np.ones((h, w)), pad[:2]).reshape(H // f, f, W // f, f).sum((1, 3))
    return sums / counts.reshape(counts.shape + (1,) * (image.ndim - 2))


def _ome(tif) -> ET.Element:
    return ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")


def _recording(image, calls):
    def read(y0, y1, x0, x1):
        calls.append((y0, y1, x0, x1))
        return image[y0:y1, x0:x1]
    return read


def test_pyramid_rgb(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (3000, 2000, 3), dtype=np.uint8)
    image[:1000] //= 4  # some structure, so that means are not all near 127
    calls = []
    sizes = write_pyramid(tmp_path / "rgb.ome.tif", 3000, 2000, 3, _recording(image, calls), mpp=0.25)
    expected = [(3000, 2000), (1500, 1000), (750, 500), (375, 250), (188, 125)]  # longer side to <= 256
    assert sizes == expected
    assert max(y1 - y0 for y0, y1, _, _ in calls) <= 512
    with tifffile.TiffFile(tmp_path / "rgb.ome.tif") as tif:
        assert tif.is_ome and tif.is_bigtiff and len(tif.series) == 1
        series = tif.series[0]
        assert series.axes == "YXS"
        assert [level.shape for level in series.levels] == [(*s, 3) for s in expected]
        assert tif.pages[0].photometric == 2 and tif.pages[0].is_tiled  # RGB, tiled
        np.testing.assert_array_equal(series.levels[0].asarray(), image)
        for k in (1, 4):  # 2 x 2 means; 16 x 16 with partial blocks at the edges
            np.testing.assert_allclose(series.levels[k].asarray(), _block_mean(image, 2 ** k), atol=1)
        pixels = _ome(tif)
        assert float(pixels.get("PhysicalSizeX")) == 0.25 and float(pixels.get("PhysicalSizeY")) == 0.25
        assert pixels.get("PhysicalSizeXUnit") == "µm"


def test_pyramid_named_channels(tmp_path):
    heat = np.random.default_rng(3).integers(0, 256, (701, 333, 2), dtype=np.uint8)
    calls = []
    sizes = write_pyramid(tmp_path / "heat.ome.tif", 701, 333, 2, _recording(heat, calls), tile=128,
                          channel_names=["tumour", "stroma"], mpp=8.0, min_side=100)
    assert sizes == [(701, 333), (351, 167), (176, 84), (88, 42)]
    assert max(y1 - y0 for y0, y1, _, _ in calls) <= 128
    with tifffile.TiffFile(tmp_path / "heat.ome.tif") as tif:
        series = tif.series[0]
        assert series.axes == "CYX" and [level.shape[1:] for level in series.levels] == sizes
        np.testing.assert_array_equal(series.levels[0].asarray(), heat.transpose(2, 0, 1))
        for k in (1, 3):
            reference = _block_mean(heat, 2 ** k).transpose(2, 0, 1)
            np.testing.assert_allclose(series.levels[k].asarray(), reference, atol=1)
        names = [c.get("Name") for c in _ome(tif).findall("{*}Channel")]
        assert names == ["tumour", "stroma"] and float(_ome(tif).get("PhysicalSizeX")) == 8.0


def test_pyramid_atomic_and_refusals(tmp_path):
    image = np.zeros((600, 500, 3), np.uint8)

    def failing(y0, y1, x0, x1):
        if y0 >= 256:
            raise RuntimeError("slide unreadable")
        return image[y0:y1, x0:x1]

    with pytest.raises(RuntimeError, match="unreadable"):
        write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, failing, tile=256)
    assert list(tmp_path.iterdir()) == []
    message = r"a\.ome\.tif: expected read\(0, 256, 0, 500\) to return uint8"
    with pytest.raises(ValueError, match=message) as info:
        write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, lambda *a: image[:10], tile=256)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []
    write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, _recording(image, []), tile=256)
    with pytest.raises(FileExistsError):
        write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, _recording(image, []), tile=256)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramid(tmp_path / "b.ome.tif", 600, 500, 3, _recording(image, []), tile=100)


def _rasterise(features, shape, to_image) -> np.ndarray:
    """The polygons back in the mask's grid (to_image inverted), at 4x so that a cell is in when its
    centre is: fillPoly of exteriors, then holes with 0, sampled at the cells' centres."""
    sx, sy, ox, oy = to_image
    grid = np.zeros((shape[0] * 4, shape[1] * 4), np.uint8)
    for feature in features:
        rings = feature["geometry"]["coordinates"]
        for k, ring in enumerate(rings):
            corners = (np.asarray(ring) - (ox, oy)) / (sx, sy)
            np.testing.assert_allclose(corners, np.round(corners), atol=1e-9)  # on cell corners
            cv2.fillPoly(grid, [np.round(corners * 4).astype(np.int32)], 0 if k else 1)
    return grid[2::4, 2::4]


def _iou(a, b) -> float:
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def _heat() -> np.ndarray:
    """A ring (blob with a hole), a disk touching the border, a single cell, on a smooth background."""
    yy, xx = np.mgrid[0:60, 0:80]
    heat = 0.2 + 0.1 * np.sin(xx / 7.0)
    r = np.hypot(yy - 25, xx - 25)
    heat[(r < 15) & (r >= 6)] = 0.9
    heat[np.hypot(yy - 45, xx - 79) < 12] = 0.7
    heat[5, 60] = 0.6
    return heat


def test_regions_round_trip(tmp_path):
    heat = _heat()
    mask = heat >= 0.5
    to_image = (32.0, 32.0, 16.0, 16.0)
    features = regions(heat, threshold=0.5, to_image=to_image)
    assert len(features) == 3
    assert [len(f["geometry"]["coordinates"]) for f in features] == [2, 1, 1]  # the ring's hole
    assert _iou(_rasterise(features, heat.shape, to_image), mask) >= 0.98
    np.testing.assert_array_equal(_rasterise(features, heat.shape, to_image), mask)  # edges: exact
    ring = features[0]
    assert ring["properties"]["max"] == pytest.approx(0.9)
    assert ring["properties"]["mean"] == pytest.approx(0.9)
    sizes = sorted(f["properties"]["area"] for f in features)
    assert sizes[0] == 32 * 32  # one cell is one 32 x 32 square of the image
    assert sum(sizes) == pytest.approx(mask.sum() * 32 * 32)
    cell = next(f for f in features if f["properties"]["area"] == 32 * 32)["geometry"]["coordinates"][0]
    # cell (row 5, col 60): corners x 60..61, y 5..6 -> x * 32 + 16, y * 32 + 16
    assert sorted(map(tuple, cell[:-1])) == [(1936, 176), (1936, 208), (1968, 176), (1968, 208)]
    border = features[1]["geometry"]["coordinates"][0]
    assert max(x for x, _ in border) == 80 * 32 + 16  # the map's right edge
    for feature in features:
        for k, ring_ in enumerate(feature["geometry"]["coordinates"]):
            assert ring_[0] == ring_[-1] and len(ring_) >= 5
            xy = np.asarray(ring_)
            area = 0.5 * np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1])
            assert (area > 0) == (k == 0)  # exterior counter-clockwise, holes clockwise (y up)
    assert len(regions(heat, threshold=0.5, to_image=to_image, min_area=2 * 32 * 32)) == 2


def test_write_geojson(tmp_path):
    heat = _heat()
    path = tmp_path / "regions.geojson"
    count = write_geojson(path, [("tumour", heat), ("empty", np.full((60, 80), np.nan))], threshold=0.5,
                          to_image=(2.0, 2.0, 0.0, 0.0), colors=[(255, 0, 0), (0, 0, 255)],
                          properties={"model": "vgg16"})
    assert count == 3
    with open(path) as f:
        document = json.load(f)
    assert document["type"] == "FeatureCollection" and len(document["features"]) == 3
    feature = document["features"][0]
    assert feature["properties"]["objectType"] == "annotation" and feature["properties"]["model"] == "vgg16"
    assert feature["properties"]["classification"] == {"name": "tumour", "color": [255, 0, 0]}
    assert feature["properties"]["probability"] == pytest.approx(0.9)
    assert _iou(_rasterise(document["features"], heat.shape, (2.0, 2.0, 0.0, 0.0)), heat >= 0.5) >= 0.98
    with pytest.raises(FileExistsError):
        write_geojson(path, [("tumour", heat)])
    empty = tmp_path / "empty.geojson"
    assert write_geojson(empty, [("tumour", np.zeros((5, 5)))]) == 0
    assert json.loads(empty.read_text()) == {"type": "FeatureCollection", "features": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.geojson", "regions.geojson"]


def test_missing_slide_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'fcnclassify\[slide\]'"):
        ScoreStore.create(tmp_path / "m.zarr", classes=2, shape=(2, 2), chunk=(1, 1), attrs={})


def test_regions_clamped_to_the_image(tmp_path):
    """A heat grid of 32-pixel cells over a 100 x 70 image reaches 128 x 96: a region in its last
    column and row is clamped to the image's edge, its area the clipped one."""
    heat = np.zeros((3, 4))
    heat[1:, 2:] = 1.0  # grid pixels x 64..128, y 32..96 -> image x 64..100, y 32..70
    (feature,) = regions(heat, threshold=0.5, to_image=(32, 32, 0, 0), bounds=(100, 70))
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == 64 and ring[:, 0].max() == 100
    assert ring[:, 1].min() == 32 and ring[:, 1].max() == 70
    assert feature["properties"]["area"] == (100 - 64) * (70 - 32)


def test_max_probabilities(tmp_path, logits):
    """Each class's best cell probability over the written cells: numpy's softmax, NaN cells left out."""
    store = ScoreStore.create(tmp_path / "m.zarr", classes=logits.shape[0], shape=logits.shape[1:],
                              chunk=(4, 5), attrs={})
    for r in range(0, logits.shape[1], 4):
        for c in range(0, logits.shape[2], 5):
            if (r, c) == (0, 0):
                store.skip(r, c)
            else:
                store.write(r, c, logits[:, r:r + 4, c:c + 5])
    stored = logits.astype(np.float16).astype(np.float64)
    stored[:, :4, :5] = np.nan
    e = np.exp(stored - stored.max(axis=0))  # NaN cells stay NaN
    expected = np.nanmax((e / e.sum(axis=0)).reshape(logits.shape[0], -1), axis=1)
    np.testing.assert_allclose(store.max_probabilities(), expected, rtol=1e-3)
