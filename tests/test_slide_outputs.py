"""Slide outputs against references: the score store against the in-memory logits (float16-rounded,
numpy softmax and nanmean) and a fresh process's ``zarr.open``; the OME-TIFF pyramid read back with
tifffile against the array and numpy block means, its OME-XML parsed with ElementTree."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

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
        assert series.axes == "YXS" and [level.shape for level in series.levels] == [(*s, 3) for s in expected]
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
        np.testing.assert_allclose(series.levels[1].asarray(), _block_mean(heat, 2).transpose(2, 0, 1), atol=1)
        np.testing.assert_allclose(series.levels[3].asarray(), _block_mean(heat, 8).transpose(2, 0, 1), atol=1)
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
    with pytest.raises(ValueError, match=r"a\.ome\.tif: expected read\(0, 256, 0, 500\) to return uint8") as info:
        write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, lambda *a: image[:10], tile=256)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []
    write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, _recording(image, []), tile=256)
    with pytest.raises(FileExistsError):
        write_pyramid(tmp_path / "a.ome.tif", 600, 500, 3, _recording(image, []), tile=256)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramid(tmp_path / "b.ome.tif", 600, 500, 3, _recording(image, []), tile=100)
