"""``fcnclassify heatmap`` in-process: outputs against the original model, JSON, and every bad input.

The model is efficientnet_lite0 with its real weights, loaded once; a pooled-Linear head means the
average of the score map's logits at scale 1 is exactly the original classifier's output, the
reference for the scores.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from fcnclassify import cli
from fcnclassify.commands import heatmap
from fcnclassify.images import write_image


@pytest.fixture(scope="module")
def lite():
    from fcnclassify.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite_activation(lite):
    import dataclasses

    from fcnclassify import convert

    return dataclasses.replace(lite, fcn=convert(lite.original, cells="activation"), _prepared={})


@pytest.fixture
def cached(lite, lite_activation, monkeypatch):
    """The command gets the already loaded model (the tests of loading itself do not use this)."""
    monkeypatch.setattr(heatmap, "load_from_args",
                        lambda args: lite if args.cells == "window" else lite_activation)
    return lite


@pytest.fixture
def chelsea(tmp_path):
    path = tmp_path / "in" / "chelsea.png"
    path.parent.mkdir()
    write_image(path, data.chelsea())
    return path


@pytest.fixture
def out(tmp_path):
    """An output folder holding one file of the user's: a refused run must leave exactly that."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    return folder


def run(capsys, *args):
    code = cli.main(["heatmap", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def original_probabilities(lite, rgb: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return lite.original(lite.normalization(rgb)[None])[0].softmax(0)


def test_json_scores_match_the_original_model_and_peaks_lie_in_the_image(cached, lite_activation, chelsea, out, capsys):
    # the class activation map at scale 1: its mean is the original classifier on the whole image
    code, stdout, err = run(capsys, chelsea, "--model", "efficientnet_lite0", "--topk", "2", "--json",
                            "--out", out, "--scales", "1", "--cells", "activation")
    assert code == 0 and err == []
    document = json.loads(stdout)  # one JSON document, nothing else on stdout
    assert document["model"] == "efficientnet_lite0" and document["scales"] == [1.0]
    assert (document["flip"], document["pool"], document["over"]) == (False, "avg", "logits")
    assert document["cells"] == "activation"
    (image,) = document["images"]
    height, width = data.chelsea().shape[:2]
    assert (image["image"], image["width"], image["height"]) == (str(chelsea), width, height)
    assert image["maps"][0]["cells"] == list(lite_activation.fcn.geometry.output_size(height, width))

    reference = original_probabilities(lite_activation, data.chelsea())
    ids = [c["id"] for c in image["classes"]]
    assert [c["label"] for c in image["classes"]] == [lite_activation.categories[i] for i in ids]
    torch.testing.assert_close(torch.tensor([c["score"] for c in image["classes"]]), reference[ids],
                               rtol=1e-3, atol=1e-5)
    # classes ranked by their best cell: the map's per-cell softmax, maximum over cells, by hand
    with torch.no_grad():
        cam = lite_activation.fcn(lite_activation.normalization(data.chelsea())[None])[0]
    assert ids == cam.softmax(0).flatten(1).amax(1).topk(2).indices.tolist()
    assert image["classes"][0]["id"] in range(281, 286)  # a domestic cat
    for entry in image["classes"]:
        assert set(entry) >= {"id", "label", "score", "peak"}
        peak = entry["peak"]
        x0, y0, x1, y1 = peak["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x0 <= peak["x"] < x1 and y0 <= peak["y"] < y1
        assert 0 < peak["score"] <= 1

    cat = image["classes"][0]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["keep.txt", "chelsea_grid.png", *(
        f"chelsea_{rank}_{heatmap.slug(c['label'])}.png" for rank, c in enumerate(image["classes"], 1))])
    overlay = cv2.imread(str(out / f"chelsea_1_{heatmap.slug(cat['label'])}.png"), cv2.IMREAD_COLOR)
    assert overlay.shape == (height, width, 3)  # the image's own resolution


def test_alpha_zero_leaves_the_photo_in_rgb_order(cached, chelsea, out, capsys):
    code, _, _ = run(capsys, chelsea, "--topk", "1", "--alpha", "0", "--out", out)
    assert code == 0
    (path,) = out.glob("chelsea_1_*.png")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    photo = data.chelsea()
    np.testing.assert_array_equal(bgr[100:, :, ::-1], photo[100:])  # below the legend: the photo


def test_red_stays_red_and_reaches_the_model_as_red(cached, tmp_path, out, capsys):
    red = np.zeros((160, 224, 3), np.uint8)
    red[..., 0] = 255
    path = tmp_path / "red.png"
    write_image(path, red)
    seen = []
    handle = cached.fcn.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        code, _, _ = run(capsys, path, "--topk", "1", "--alpha", "0.3", "--device", "cpu", "--out", out)
    finally:
        handle.remove()
    assert code == 0 and len(seen) == 1
    x = seen[0][0]  # (3, H, W): (255 - 127) / 128 = 1 in channel 0, (0 - 127) / 128 elsewhere
    torch.testing.assert_close(x[0], torch.full_like(x[0], 1.0))
    torch.testing.assert_close(x[1:], torch.full_like(x[1:], -127 / 128))
    (overlay,) = out.glob("red_1_*.png")
    bgr = cv2.imread(str(overlay), cv2.IMREAD_COLOR).astype(int)[60:]  # below the legend
    assert np.all(bgr[..., 2] >= 178) and np.all(bgr[..., 2] > bgr[..., 1] + 100)
    assert np.all(bgr[..., 2] > bgr[..., 0] + 100)


def test_classes_by_name_and_id_and_raw_maps(cached, lite_activation, chelsea, out, capsys):
    code, stdout, _ = run(capsys, chelsea, "--classes", "tabby", "285", "--save-npz", "--json",
                          "--out", out, "--scales", "1", "--cells", "activation")
    assert code == 0
    image = json.loads(stdout)["images"][0]
    assert [c["id"] for c in image["classes"]] == [281, 285]
    assert (out / "chelsea_1_tabby.png").is_file() and (out / "chelsea_2_egyptian-cat.png").is_file()

    maps = np.load(out / "chelsea_maps.npz")
    geometry = lite_activation.fcn.geometry
    assert (maps["window"], maps["stride"], maps["offset"], maps["receptive_field"]) == (
        geometry.window, geometry.stride, geometry.offset, geometry.receptive_field)
    np.testing.assert_array_equal(maps["scale"], [[1.0, 1.0]])
    np.testing.assert_array_equal(maps["flipped"], [False])
    assert maps["categories"][285] == "Egyptian cat" and len(maps["categories"]) == 1000
    with torch.no_grad():
        reference = lite_activation.fcn(lite_activation.normalization(data.chelsea())[None])[0]
    torch.testing.assert_close(torch.from_numpy(maps["logits_0"]), reference, rtol=1e-4, atol=1e-4)
    # the mean of the class activation map is the original classifier
    torch.testing.assert_close(torch.from_numpy(maps["logits_0"]).mean((1, 2)).softmax(0),
                               original_probabilities(lite_activation, data.chelsea()), rtol=1e-3, atol=1e-5)


def test_existing_output_is_refused_and_left_unchanged(cached, chelsea, out, capsys):
    (out / "chelsea_grid.png").write_bytes(b"old")
    code, stdout, err = run(capsys, chelsea, "--out", out)
    assert code == 2 and stdout == ""
    assert len(err) == 1 and "chelsea_grid.png" in err[0] and "--force" in err[0]
    assert (out / "chelsea_grid.png").read_bytes() == b"old"
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_grid.png", "keep.txt"]


def test_force_replaces_the_earlier_overlay_of_another_class(cached, chelsea, out, capsys):
    (out / "chelsea_1_tabby.png").write_bytes(b"old")  # rank 1 was tabby in an earlier run
    code, _, err = run(capsys, chelsea, "--out", out)
    assert code == 2 and "chelsea_1_tabby.png" in err[0]  # any overlay at that rank counts
    code, _, _ = run(capsys, chelsea, "--topk", "1", "--force", "--out", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_1_egyptian-cat.png", "chelsea_grid.png",
                                                     "keep.txt"]


@pytest.mark.parametrize("content, message", [(b"", "file is empty"), (None, "no such file or directory")])
def test_bad_image_among_good_ones_is_reported_and_skipped(cached, chelsea, out, capsys, content, message):
    bad = chelsea.parent / "bad.jpg"
    if content is not None:
        bad.write_bytes(content)
    code, _, err = run(capsys, bad, chelsea, "--topk", "1", "--out", out)
    assert code == 2  # as classify does: the others are processed, the exit code tells
    assert err == [f"fcnclassify heatmap: error: {bad}: {message}"]
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_1_egyptian-cat.png", "chelsea_grid.png",
                                                     "keep.txt"]


def _truncated_jpeg(path):
    ok, encoded = cv2.imencode(".jpg", data.chelsea()[:, :, ::-1])
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])


@pytest.mark.parametrize("case, setup, extra, expected", [
    ("missing", lambda p: None, [], "no such file"),
    ("empty", lambda p: p.write_bytes(b""), [], "empty"),
    ("text", lambda p: p.write_text("not a picture\n"), [], "not an image"),
    ("truncated", _truncated_jpeg, [], "truncated"),
    ("huge", lambda p: write_image(p, data.chelsea()), ["--max-pixels", "1000"], "exceeds the limit of 1000"),
])
def test_bad_image_exits_2_with_one_line_and_writes_nothing(cached, tmp_path, out, capsys,
                                                            case, setup, extra, expected):
    path = tmp_path / f"{case}.jpg"
    setup(path)
    code, stdout, err = run(capsys, path, "--out", out, *extra)
    assert code == 2 and stdout == ""
    assert len(err) == 1 and str(path) in err[0] and expected in err[0], err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_class_exits_2_before_any_work(cached, chelsea, out, capsys, monkeypatch):
    import importlib

    predict_module = importlib.import_module("fcnclassify.predict")  # the attribute is the function

    def no_prediction(*args, **kwargs):
        raise AssertionError("the classes must be checked before any image is evaluated")

    monkeypatch.setattr(predict_module, "predict", no_prediction)
    code, stdout, err = run(capsys, chelsea, "--classes", "tabby", "flying saucer", "--out", out)
    assert code == 2 and stdout == ""
    assert len(err) == 1 and "'flying saucer'" in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_model_exits_2(chelsea, out, capsys):
    code, _, err = run(capsys, chelsea, "--model", "vgg17", "--out", out)
    assert code == 2 and len(err) == 1 and "'vgg17'" in err[0] and "vgg16" in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_weights_of_the_wrong_shape_exit_2(chelsea, tmp_path, out, capsys):
    from fcnclassify.models import build_original

    state = build_original("efficientnet_lite0").state_dict()
    state["_fc.weight"] = torch.zeros(1000, 640)  # a head for 640 features, the body gives 1280
    weights = tmp_path / "wrong.pth"
    torch.save(state, weights)
    code, _, err = run(capsys, chelsea, "--model", "efficientnet_lite0", "--weights", weights, "--out", out)
    assert code == 2 and len(err) == 1
    assert str(weights) in err[0] and "_fc.weight" in err[0] and "(1000, 640)" in err[0], err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_options_exit_2(cached, chelsea, tmp_path, out, capsys):
    code, _, err = run(capsys, chelsea, "--alpha", "1.5", "--out", out)
    assert code == 2 and len(err) == 1 and "1.5" in err[0]
    twin = tmp_path / "twin" / "chelsea.jpg"
    twin.parent.mkdir()
    write_image(twin, data.chelsea())
    code, _, err = run(capsys, chelsea, twin, "--out", out)
    assert code == 2 and len(err) == 1 and "same outputs" in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_another_images_grid_is_not_taken_for_an_overlay(tmp_path):
    """``a_1_grid.png`` is the grid of image ``a_1``, not rank 1 of image ``a``: never refused or deleted."""
    from fcnclassify.commands.heatmap import existing_outputs, slug

    (tmp_path / "a_1_grid.png").write_bytes(b"grid of a_1")
    (tmp_path / "a_2_tabby.png").write_bytes(b"overlay of a")
    assert existing_outputs(tmp_path, "a", 3) == [tmp_path / "a_2_tabby.png"]
    assert slug("Grid") == "grid-class" and slug("Egyptian cat") == "egyptian-cat"
