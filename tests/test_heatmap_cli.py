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

from fcnclassify import cli, predict
from fcnclassify.commands import heatmap
from fcnclassify.io.images import write_image
from fcnclassify.outputs.files import MANIFEST, slug


@pytest.fixture(scope="module")
def lite():
    from fcnclassify.models.registry import load_model

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
    # classes ranked by their heatmaps: each one's 99th percentile at full resolution, by NumPy
    prediction = predict(lite_activation, data.chelsea(), scales=(1.0,), flip=False)
    held = {c: np.percentile(prediction.heatmap(c), 99) for c, _, _ in prediction.topk(10, by="window")}
    assert ids == sorted(held, key=held.get, reverse=True)[:2]
    np.testing.assert_allclose([c["heatmap_score"] for c in image["classes"]], [held[i] for i in ids],
                               rtol=0, atol=0.01)
    assert image["classes"][0]["id"] in range(281, 286)  # a domestic cat
    assert "99th percentile" in document["heatmap_score"]
    for entry in image["classes"]:
        assert set(entry) >= {"id", "label", "score", "heatmap_score", "peak"}
        peak = entry["peak"]
        x0, y0, x1, y1 = peak["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x0 <= peak["x"] < x1 and y0 <= peak["y"] < y1
        assert 0 < peak["score"] <= 1

    cat = image["classes"][0]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["keep.txt", MANIFEST, "chelsea-png_grid.jpg", *(
        f"chelsea-png_{rank}_{slug(c['label'])}.jpg" for rank, c in enumerate(image["classes"], 1))])
    assert [c["overlay"] for c in image["classes"]] == [
        str(out / f"chelsea-png_{rank}_{slug(c['label'])}.jpg") for rank, c in enumerate(image["classes"], 1)]
    overlay = cv2.imread(str(out / f"chelsea-png_1_{slug(cat['label'])}.jpg"), cv2.IMREAD_COLOR)
    assert overlay.shape == (height, width, 3)  # the image's own resolution


def test_alpha_zero_leaves_the_photo_in_rgb_order(cached, chelsea, out, capsys):
    code, _, _ = run(capsys, chelsea, "--topk", "1", "--alpha", "0", "--format", "png", "--out", out)
    assert code == 0
    (path,) = out.glob("chelsea-png_1_*.png")
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
        code, _, _ = run(capsys, path, "--topk", "1", "--alpha", "0.3", "--device", "cpu", "--format", "png",
                         "--out", out)
    finally:
        handle.remove()
    assert code == 0 and len(seen) == 1
    x = seen[0][0]  # (3, H, W): (255 - 127) / 128 = 1 in channel 0, (0 - 127) / 128 elsewhere
    torch.testing.assert_close(x[0], torch.full_like(x[0], 1.0))
    torch.testing.assert_close(x[1:], torch.full_like(x[1:], -127 / 128))
    (overlay,) = out.glob("red-png_1_*.png")
    bgr = cv2.imread(str(overlay), cv2.IMREAD_COLOR).astype(int)[60:]  # below the legend
    assert np.all(bgr[..., 2] >= 178) and np.all(bgr[..., 2] > bgr[..., 1] + 100)
    assert np.all(bgr[..., 2] > bgr[..., 0] + 100)


def test_classes_by_name_and_id_and_raw_maps(cached, lite_activation, chelsea, out, capsys):
    code, stdout, _ = run(capsys, chelsea, "--classes", "tabby", "285", "--save-npz", "--json",
                          "--out", out, "--scales", "1", "--cells", "activation")
    assert code == 0
    image = json.loads(stdout)["images"][0]
    assert [c["id"] for c in image["classes"]] == [281, 285]
    assert (out / "chelsea-png_1_tabby.jpg").is_file() and (out / "chelsea-png_2_egyptian-cat.jpg").is_file()

    maps = np.load(out / "chelsea-png_maps.npz")
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


@pytest.mark.parametrize("resume", [False, True])
def test_existing_output_is_refused_and_left_unchanged(cached, chelsea, out, capsys, resume):
    (out / "chelsea-png_grid.jpg").write_bytes(b"old")  # not in a manifest: --resume does not take it
    code, stdout, err = run(capsys, chelsea, "--out", out, *(["--resume"] if resume else []))
    assert code == 2 and stdout == ""
    assert err == [f"fcnclassify heatmap: error: {out / 'chelsea-png_grid.jpg'}: already exists "
                   f"(pass --force to overwrite it)"]
    assert (out / "chelsea-png_grid.jpg").read_bytes() == b"old"
    assert sorted(p.name for p in out.iterdir()) == ["chelsea-png_grid.jpg", "keep.txt"]


def test_force_replaces_the_earlier_overlay_of_another_class(cached, chelsea, out, capsys):
    (out / "chelsea-png_7_tabby.png").write_bytes(b"old")  # rank 7 was tabby in an earlier run
    code, _, err = run(capsys, chelsea, "--out", out)
    assert code == 2 and "chelsea-png_7_tabby.png" in err[0]  # any overlay of the image counts
    code, _, _ = run(capsys, chelsea, "--topk", "1", "--force", "--out", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["chelsea-png_1_egyptian-cat.jpg", "chelsea-png_grid.jpg",
                                                     MANIFEST, "keep.txt"]


@pytest.mark.parametrize("content, message", [(b"", "file is empty"), (None, "no such file or directory")])
def test_bad_image_among_good_ones_is_reported_and_skipped(cached, chelsea, out, capsys, content, message):
    bad = chelsea.parent / "bad.jpg"
    if content is not None:
        bad.write_bytes(content)
    code, _, err = run(capsys, bad, chelsea, "--topk", "1", "--out", out)
    assert code == 2  # as classify does: the others are processed, the exit code tells
    assert err == [f"fcnclassify heatmap: error: {bad}: {message}"]
    assert sorted(p.name for p in out.iterdir()) == ["chelsea-png_1_egyptian-cat.jpg", "chelsea-png_grid.jpg",
                                                     MANIFEST, "keep.txt"]


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

    predict_module = importlib.import_module("fcnclassify.evaluation.predict")  # the attribute is the function

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
    from fcnclassify.models.registry import build_original

    state = build_original("efficientnet_lite0").state_dict()
    state["_fc.weight"] = torch.zeros(1000, 640)  # a head for 640 features, the body gives 1280
    weights = tmp_path / "wrong.pth"
    torch.save(state, weights)
    code, _, err = run(capsys, chelsea, "--model", "efficientnet_lite0", "--weights", weights, "--out", out)
    assert code == 2 and len(err) == 1
    assert str(weights) in err[0] and "_fc.weight" in err[0] and "(1000, 640)" in err[0], err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("option, message", [
    (["--alpha", "1.5"], "expected --alpha in [0, 1] but got 1.5"),
    (["--colormap", "nosuchmap"], "but got 'nosuchmap'"),
])
def test_bad_options_exit_2(cached, chelsea, out, capsys, option, message):
    code, _, err = run(capsys, chelsea, *option, "--out", out)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("option", [["--quality", "0"], ["--quality", "101"], ["--grid-width", "8"],
                                    ["--format", "gif"]])
def test_bad_output_options_are_refused_by_the_parser(chelsea, out, capsys, option):
    with pytest.raises(SystemExit) as exit:
        cli.main(["heatmap", str(chelsea), "--out", str(out), *option])
    assert exit.value.code == 2 and option[1] in capsys.readouterr().err


@pytest.fixture
def folder(tmp_path):
    """Three small photos: a cat, a coffee cup, an astronaut."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, photo in [("a_cat.png", data.chelsea()), ("b_coffee.jpg", data.coffee()),
                        ("c_astronaut.png", data.astronaut())]:
        write_image(folder / name, cv2.resize(photo, (288, 240), interpolation=cv2.INTER_AREA))
    return folder


def listing(folder, *, manifest=False):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if manifest or p.name != MANIFEST}


def test_ctrl_c_leaves_whole_sets_and_resume_finishes_exactly_the_rest(cached, folder, tmp_path, out, capsys,
                                                                       monkeypatch):
    import importlib

    predict_module = importlib.import_module("fcnclassify.evaluation.predict")
    real_predict = predict_module.predict
    calls = []

    def interrupted(model, image, **kwargs):
        calls.append(image.shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict(model, image, **kwargs)

    options = ["--sizes", "224", "--topk", "2", "--quiet"]
    reference = tmp_path / "reference"
    code, stdout, _ = run(capsys, folder, *options, "--out", reference, "--json")
    assert code == 0
    reference_document = json.loads(stdout)

    monkeypatch.setattr(predict_module, "predict", interrupted)
    assert run(capsys, folder, *options, "--out", out)[0] == 130
    monkeypatch.setattr(predict_module, "predict", lambda model, image, **kw: (calls.append(image.shape),
                                                                               real_predict(model, image, **kw))[1])
    calls.clear()
    code, stdout, err = run(capsys, folder, *options, "--out", out, "--resume", "--json")
    assert code == 0 and len(calls) == 2  # the coffee and the astronaut, not the cat again
    assert err == [f"fcnclassify heatmap: note: 1 image(s) already done in {out} (--resume): skipped"]
    assert listing(out) == {"keep.txt": b"mine", **listing(reference)}  # byte for byte
    document = json.loads(stdout)  # all three images, the skipped one from the manifest
    for image, expected in zip(document["images"], reference_document["images"], strict=True):
        assert image["image"] == expected["image"]
        assert [c["id"] for c in image["classes"]] == [c["id"] for c in expected["classes"]]
        assert [c["score"] for c in image["classes"]] == [c["score"] for c in expected["classes"]]

    calls.clear()  # all done: a second --resume evaluates nothing
    code, _, err = run(capsys, folder, *options, "--out", out, "--resume")
    assert code == 0 and calls == [] and "3 image(s) already done" in err[0]
    # other options: that image's set is written again, said on stderr
    code, _, err = run(capsys, folder / "a_cat.png", "--sizes", "224", "--topk", "1", "--quiet", "--out", out,
                       "--resume")
    assert code == 0 and len(calls) == 1
    assert err == [f"fcnclassify heatmap: note: {folder / 'a_cat.png'}: its outputs were written with other "
                   f"options, written again"]
    assert sorted(n for n in listing(out) if n.startswith("a_cat")) == ["a_cat-png_1_egyptian-cat.jpg",
                                                                      "a_cat-png_grid.jpg"]


def test_same_stem_in_one_folder_and_same_name_in_two(cached, chelsea, tmp_path, out, capsys):
    jpg = chelsea.with_suffix(".jpg")
    write_image(jpg, data.chelsea())
    twin = tmp_path / "twin" / "chelsea.png"
    twin.parent.mkdir()
    write_image(twin, data.chelsea())
    code, _, err = run(capsys, chelsea.parent, twin, "--topk", "1", "--sizes", "224", "--quiet", "--out", out)
    assert code == 0
    assert err == [f"fcnclassify heatmap: note: 1 input(s) share a file name with another; their outputs are "
                   f"numbered: {twin} -> chelsea-png-2_*"]
    assert sorted(listing(out)) == sorted(["keep.txt", *(f"{key}_{name}" for key in
                                                         ("chelsea-jpg", "chelsea-png", "chelsea-png-2")
                                                         for name in ("1_egyptian-cat.jpg", "grid.jpg"))])


def test_duplicate_classes_are_drawn_once_in_first_order(cached, chelsea, out, capsys):
    code, stdout, err = run(capsys, chelsea, "--classes", "tabby", "285", "281", "TABBY", "--sizes", "224",
                            "--json", "--out", out)
    assert code == 0
    assert err == ["fcnclassify heatmap: note: --classes names tabby more than once: drawn once"]
    assert [c["id"] for c in json.loads(stdout)["images"][0]["classes"]] == [281, 285]
    assert sorted(listing(out)) == ["chelsea-png_1_tabby.jpg", "chelsea-png_2_egyptian-cat.jpg",
                                    "chelsea-png_grid.jpg", "keep.txt"]


@pytest.mark.parametrize("fmt, magic", [("jpg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_lossy_formats_decode_close_to_the_png_and_the_grid_is_capped(cached, tmp_path, out, capsys, fmt, magic):
    wide = tmp_path / "wide.png"  # 4 photos side by side: an uncapped grid would be ~7700 pixels wide
    write_image(wide, np.concatenate([cv2.resize(data.chelsea(), (300, 200))] * 4, axis=1))
    decoded = {}
    for kind, folder in [(fmt, out), ("png", tmp_path / "png")]:
        code, _, _ = run(capsys, wide, "--topk", "1", "--sizes", "224", "--format", kind, "--out", folder)
        assert code == 0
        (overlay_path,) = folder.glob(f"wide-png_1_*.{kind}")
        grid_path = folder / f"wide-png_grid.{kind}"
        assert grid_path.read_bytes().startswith(magic if kind == fmt else b"\x89PNG")
        assert overlay_path.read_bytes().startswith(magic if kind == fmt else b"\x89PNG")
        decoded[kind] = (cv2.imread(str(overlay_path), cv2.IMREAD_COLOR), cv2.imread(str(grid_path)),
                         overlay_path.stat().st_size)
    (lossy, lossy_grid, lossy_bytes), (lossless, lossless_grid, lossless_bytes) = decoded[fmt], decoded["png"]
    assert lossy.shape == lossless.shape == (200, 1200, 3)
    assert lossy_grid.shape == lossless_grid.shape and lossless_grid.shape[1] == 2400  # --grid-width default
    mse = np.mean((lossy.astype(float) - lossless.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30 and lossy_bytes < lossless_bytes / 2


def test_grid_width_option(cached, chelsea, out, capsys):
    code, _, _ = run(capsys, chelsea, "--topk", "1", "--sizes", "224", "--grid-width", "500", "--out", out)
    assert code == 0
    assert cv2.imread(str(out / "chelsea-png_grid.jpg")).shape[1] == 500


@pytest.mark.parametrize("command", ["heatmap", "demo"])
def test_command_modules_import_nothing_heavy_at_top_level(command):
    """``fcnclassify --help`` imports every command module: their top level stays light."""
    import ast
    import importlib.util

    path = importlib.util.find_spec(f"fcnclassify.commands.{command}").origin
    tree = ast.parse(open(path).read())
    allowed = {"__future__", "argparse", "sys", "._options", "._loop", ".heatmap"}
    for node in tree.body:  # the module's own statements, not those inside functions
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= allowed, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert "." * node.level + (node.module or "") in allowed, ast.unparse(node)
        elif isinstance(node, ast.If):  # only `if TYPE_CHECKING:` may import more
            assert ast.unparse(node.test) == "TYPE_CHECKING"
