"""The demo scene, end to end on real weights (efficientnet_lite0) and real photos (scikit-image)."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from fcnclassify import cli
from fcnclassify.io.images import resize
from fcnclassify.outputs.files import MANIFEST
from fcnclassify.scene import SCENE_SIZE, compose_scene


@pytest.fixture(scope="module")
def lite():
    from fcnclassify.models.registry import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def scene():
    return compose_scene()


@pytest.fixture(scope="module")
def prediction(lite, scene):
    from fcnclassify.evaluation.predict import predict

    return predict(lite, scene[0], sizes="pyramid", flip=False)  # as the demo and heatmap


def test_scene_is_composed_where_it_says(scene):
    canvas, objects = scene
    assert canvas.shape == (*SCENE_SIZE, 3) and canvas.dtype == np.uint8
    covered = np.zeros(SCENE_SIZE, bool)
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= SCENE_SIZE[1] and 0 <= y0 < y1 <= SCENE_SIZE[0]
        assert not covered[y0:y1, x0:x1].any(), f"{obj.name} overlaps another object"
        covered[y0:y1, x0:x1] = True
    # the cat is pasted at its own size, pixel for pixel
    chelsea = next(o for o in objects if o.name == "chelsea")
    x0, y0, x1, y1 = chelsea.box
    np.testing.assert_array_equal(canvas[y0:y1, x0:x1], data.chelsea())
    background = canvas[~covered]
    assert np.all(background[:, 0] == background[:, 1]) and np.all(background[:, 1] == background[:, 2])


def test_each_object_alone_is_recognised_by_the_original_model(lite, scene):
    """The premise of the demo: each crop, resized to 224, has one of its classes in the top 5."""
    canvas, objects = scene
    crops = [resize(np.ascontiguousarray(canvas[y0:y1, x0:x1]), (224, 224)) for x0, y0, x1, y1 in
             (obj.box for obj in objects)]
    with torch.no_grad():
        logits = lite.original(torch.stack([lite.normalization(c) for c in crops]))
    for obj, top5 in zip(objects, logits.topk(5).indices.tolist()):
        assert set(top5) & set(obj.classes), (obj.name, [lite.categories[i] for i in top5])


def test_peak_of_each_object_class_lies_inside_it(prediction, scene):
    canvas, objects = scene
    assert prediction.image.shape == canvas.shape
    for obj in objects:
        # the image-grid heatmap (fused, interpolated) of the object's best class, maximum over pixels
        heat = np.stack([prediction.heatmap(c) for c in obj.classes])
        best = int(heat.reshape(len(obj.classes), -1).max(1).argmax())
        # the maximum is a plateau where the best window's value is held out to the image border
        # (beyond the outermost window centres): its centroid lies inside the object
        ys, xs = np.nonzero(heat[best] >= heat[best].max() - 1e-6)
        x, y = xs.mean() + 0.5, ys.mean() + 0.5
        assert obj.contains(x, y), (obj.name, prediction.categories[obj.classes[best]], x, y)
        # a confident peak, not noise (of 1000 classes; the rocket, whose launch tower also reads as
        # a drilling platform, peaks lowest: 0.44 for missile)
        assert heat[best].max() > 0.4
        # and the cell peak that the demo reports agrees
        peak = prediction.peak(obj.classes[best])
        assert obj.contains(peak["x"], peak["y"]), (obj.name, peak)


def test_demo_command_writes_overlays_and_reports_every_peak_inside(tmp_path, lite, monkeypatch, capsys):
    import fcnclassify.models.registry

    monkeypatch.setattr(fcnclassify.models.registry, "load_model", lambda name: lite)  # loaded once above
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    rows = [line for line in stdout.splitlines()
            if re.match(r"(chelsea|coffee|rocket|motorcycle|cameraman) ", line)]
    assert len(rows) == 5 and all(row.endswith("yes") for row in rows), stdout
    assert "5/5 peaks inside their objects" in stdout
    names = sorted(p.name for p in out.iterdir())
    written = ["scene.png", "scene_1_egyptian-cat.jpg", "scene_2_espresso.jpg", "scene_3_missile.jpg",
               "scene_4_moped.jpg", "scene_5_tripod.jpg", "scene_grid.jpg"]
    assert names == sorted([*written, MANIFEST])
    scene = cv2.imread(str(out / "scene.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(scene[:, :, ::-1], compose_scene()[0])  # written in RGB order
    assert cv2.imread(str(out / "scene_1_egyptian-cat.jpg")).shape == (*SCENE_SIZE, 3)
    entry = json.loads((out / MANIFEST).read_text())["images"]["scene"]
    assert entry["complete"] and entry["input"] is None and sorted(entry["files"]) == written

    # a second run refuses to overwrite, and leaves the files alone
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli.main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fcnclassify demo: error: {out / 'scene.png'}: already exists (and 6 more) "
                   f"(pass --force to overwrite it)"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # --force --format png replaces the whole set: no JPEG is left beside the PNGs
    assert cli.main(["demo", "--out", str(out), "--force", "--format", "png", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, "scene.png", *(n.replace(".jpg", ".png") for n in written[1:])])
