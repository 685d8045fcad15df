"""Many images: parallel decoding in input order, batches of equal size, maps equal to one by one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import skimage.data
import torch
from torch import nn

from conftest import randomize, vgg_features
from fcnclassify import convert, dense_evaluate
from fcnclassify.evaluation import pipeline
from fcnclassify.io.images import ImageError, read_image, resize, write_image
from fcnclassify.evaluation.pipeline import dense_maps, iter_batches, iter_images


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Real photos at small sizes: three of 120x160, one 100x90, a broken file, one more 120x160."""
    root = tmp_path_factory.mktemp("photos")
    photos = [("a.png", skimage.data.chelsea(), (120, 160)), ("b.jpg", skimage.data.coffee(), (120, 160)),
              ("c.png", skimage.data.astronaut(), (120, 160)), ("d.png", skimage.data.rocket(), (100, 90)),
              ("f.png", skimage.data.chelsea()[::-1], (120, 160))]
    paths = []
    for name, image, size in photos:
        write_image(root / name, resize(image, size))
        paths.append(root / name)
    broken = root / "e.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths.insert(4, broken)
    return paths


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_iter_images_in_input_order(folder, workers):
    got = list(iter_images(folder, workers=workers))
    assert [p for p, _ in got] == folder
    for path, image in got:
        if path.name == "e.jpg":
            assert isinstance(image, ImageError) and "e.jpg" in str(image)
        else:
            np.testing.assert_array_equal(image, read_image(path))


def test_decoding_runs_in_worker_threads(folder, monkeypatch):
    names = []
    real = pipeline.read_image
    monkeypatch.setattr(pipeline, "read_image",
                        lambda *a, **k: names.append(threading.current_thread().name) or real(*a, **k))
    list(iter_images(folder, workers=2))
    assert len(names) == len(folder) and all(n.startswith("fcnclassify-decode") for n in names)
    names.clear()
    list(iter_images(folder, workers=0))
    assert names == [threading.current_thread().name] * len(folder)


def test_stopping_early_stops_decoding(folder, monkeypatch):
    count = []
    real = pipeline.read_image
    monkeypatch.setattr(pipeline, "read_image", lambda *a, **k: count.append(1) or real(*a, **k))
    many = folder * 20
    for _ in zip(range(2), iter_images(many, workers=1, prefetch=2)):
        pass
    assert len(count) < 10  # the read-ahead is bounded; the rest was never decoded


def test_iter_batches_groups_equal_sizes_in_order(folder):
    groups = [[p.name for p, _ in batch] for batch in iter_batches(folder, batch_size=2, workers=2)]
    assert groups == [["a.png", "b.jpg"], ["c.png"], ["d.png"], ["e.jpg"], ["f.png"]]
    with pytest.raises(ValueError, match="batch_size >= 1"):
        next(iter_batches(folder, batch_size=0))


def test_dense_maps_equal_one_by_one(folder):
    torch.manual_seed(0)
    model = nn.Sequential(vgg_features([4, "M", 8, "M", 8, "M"]), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    fcn = convert(randomize(model), input_size=32)

    def normalize(rgb):
        return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - 0.5

    got = list(dense_maps(fcn, folder, normalize=normalize, batch_size=3, workers=2, scales=(1.0, 0.5),
                          flip=True))
    assert [p for p, _, _ in got] == folder
    for path, image, maps in got:
        if path.name == "e.jpg":
            assert isinstance(image, ImageError) and maps is None
            continue
        want = dense_evaluate(fcn, normalize(read_image(path)), scales=(1.0, 0.5), flip=True)[0]
        assert len(maps) == len(want) == 4
        for m, w in zip(maps, want):
            assert m.logits.abs().max() > 0.1
            torch.testing.assert_close(m.logits, w.logits, rtol=0, atol=1e-5)
            assert (m.image_size, m.input_size, m.flipped) == (w.image_size, w.input_size, w.flipped)
