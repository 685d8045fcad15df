"""``fcnclassify heatmap SLIDE``: a synthetic pyramidal TIFF streamed in and out, against the in-memory
dense map of the same pixels; resume after an interruption; refusals and bad slides as one line.

The network is the seeded VGG-style one of conftest (6 classes, 224 window, stride 32), given to the
command in place of a registry model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import data

from fcnclassify import cli, dense_evaluate
from fcnclassify.commands import heatmap
from fcnclassify.evaluation import streamed
from fcnclassify.models.loaded import IMAGENET, LoadedModel
from fcnclassify.outputs.files import MANIFEST
from slide_files import write_test_slide

pytest.importorskip("tifffile")
pytest.importorskip("zarr")

LABELS = ["tabby", "tiger cat", "space shuttle", "coffee mug", "lab coat", "rock"]
BUDGET = "40MB"  # small enough for several tiles on a 1000 x 1400 slide


@pytest.fixture(scope="module")
def model(vgg_fcn):
    return LoadedModel(name="seeded-vgg", fcn=vgg_fcn, original=vgg_fcn, categories=LABELS,
                       normalization=IMAGENET, input_size=224, weights="random")


@pytest.fixture
def given(model, monkeypatch):
    monkeypatch.setattr(heatmap, "load_from_args", lambda args: model)
    return model


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """1000 x 1400: a light background and two photos at known places (the tissue mask's foreground)."""
    image = np.full((1000, 1400, 3), (238, 236, 240), np.uint8)
    image[80:380, 100:551] = data.chelsea()[:300, :451]
    image[520:920, 700:1100] = data.coffee()[:400, :400]
    path = tmp_path_factory.mktemp("slide") / "scan.ome.tif"
    write_test_slide(path, image, levels=3, tile=256, mpp=0.5)
    return path, image


def run(capsys, *args):
    code = cli.main(["heatmap", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def _reference(model, image) -> np.ndarray:
    """The in-memory map of the whole level-0 image."""
    return dense_evaluate(model.fcn, IMAGENET(image))[0][0].logits.numpy()


def test_slide_outputs_equal_the_in_memory_map(given, slide, tmp_path, capsys):
    import tifffile
    import zarr

    path, image = slide
    out = tmp_path / "out"
    code, stdout, err = run(capsys, path, "--out", out, "--tissue", "none", "--max-memory", BUDGET,
                            "--json", "--topk", "2")
    assert code == 0, err
    document = json.loads(stdout)
    document = document["images"][0] if "images" in document else document
    folder = out / "scan.ome-tif_slide"
    assert folder.is_dir() and not list(out.glob(".*partial"))
    assert {"scores.zarr", "heatmap.ome.tif", "regions.geojson", "image.dzi", "viewer.html",
            "summary.json"} <= {p.name for p in folder.iterdir()}
    assert document["evaluated"] > 2 and document["skipped"] == 0

    # the stored logits are the in-memory map, cell for cell (float16 storage)
    reference = _reference(given, image)
    logits = zarr.open_group(str(folder / "scores.zarr"), mode="r")["logits"][...].astype(np.float32)
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, rtol=2e-3, atol=2e-3)

    # the classes drawn are those of the most confident windows (as for photos); each one's image
    # score is the VGG protocol over the map: mean logits, softmax
    probabilities = torch.from_numpy(reference).softmax(0).numpy()
    best = probabilities.reshape(len(LABELS), -1).max(1)
    assert [c["index"] for c in document["classes"]] == list(np.argsort(-best)[:2])
    image_level = torch.from_numpy(reference.reshape(len(LABELS), -1).mean(1)).softmax(0).numpy()
    np.testing.assert_allclose([c["score"] for c in document["classes"]],
                               image_level[[c["index"] for c in document["classes"]]], atol=2e-3)
    # each peak is the best window of its class, its box in level-0 pixels inside the slide
    for entry in document["classes"]:
        i, j = entry["peak"]["cell"]
        assert probabilities[entry["index"], i, j] == pytest.approx(probabilities[entry["index"]].max(),
                                                                      abs=2e-3)
        x0, y0, x1, y1 = entry["peak"]["box"]
        assert (x0, y0, x1, y1) == (32 * j, 32 * i, 32 * j + 224, 32 * i + 224)

    # the OME-TIFF: one channel per class, pyramidal, physical size of its pixels
    with tifffile.TiffFile(folder / "heatmap.ome.tif") as tif:
        series = tif.series[0]
        level0 = series.levels[0].asarray()
        assert level0.shape[0] == 2 and len(series.levels) >= 1
        d = document["heat_downsample"]
        assert level0.shape[1:] == (-(-1000 // d), -(-1400 // d))
        assert 'PhysicalSizeX="' + str(0.5 * d) in tif.ome_metadata
    # heat pixel (i, j) covers slide pixels [i d, (i + 1) d): its value is the class's per-window
    # probability interpolated linearly between the windows' centres (112 + 32 k), held at the ends
    from scipy.interpolate import RegularGridInterpolator

    centres = [112 + 32 * np.arange(n) for n in reference.shape[1:]]
    ys, xs = ((np.arange(n) + 0.5) * d for n in level0.shape[1:])
    points = np.stack(np.meshgrid(np.clip(ys, centres[0][0], centres[0][-1]),
                                  np.clip(xs, centres[1][0], centres[1][-1]), indexing="ij"), -1)
    for channel, entry in zip(level0, document["classes"]):
        expected = RegularGridInterpolator(centres, probabilities[entry["index"]])(points)
        np.testing.assert_allclose(channel / 255, expected, atol=1 / 255 + 2e-3)
    geojson = json.loads((folder / "regions.geojson").read_text())
    assert geojson["type"] == "FeatureCollection"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["images"]["scan.ome-tif"]["files"] == ["scan.ome-tif_slide"]


def test_background_is_skipped_and_the_tissue_matches(given, slide, tmp_path, capsys):
    path, image = slide
    out = tmp_path / "out"
    code, stdout, err = run(capsys, path, "--out", out, "--max-memory", BUDGET, "--json")
    assert code == 0, err
    import zarr

    summary = json.loads((out / "scan.ome-tif_slide" / "summary.json").read_text())
    assert summary["skipped"] > 0
    logits = zarr.open_group(str(out / "scan.ome-tif_slide" / "scores.zarr"), mode="r")["logits"][...]
    evaluated = np.isfinite(logits[0])
    reference = _reference(given, image)
    np.testing.assert_allclose(logits[:, evaluated].astype(np.float32), reference[:, evaluated],
                               rtol=2e-3, atol=2e-3)
    # the cells whose windows are centred on the two photos were evaluated: centre (y, x) is cell
    # ((y - 112) // 32, (x - 112) // 32)
    assert evaluated[(230 - 112) // 32, (325 - 112) // 32] and evaluated[(720 - 112) // 32, (900 - 112) // 32]
    assert not evaluated.all()


def test_interrupted_slide_resumes_its_tiles(given, slide, tmp_path, capsys, monkeypatch):
    path, image = slide
    out = tmp_path / "out"
    calls = {"n": 0}
    original = streamed.streamed_evaluate

    class Stop(KeyboardInterrupt):
        pass

    def interrupted(fcn, source, normalize, sink, **kwargs):
        write = sink.write

        def failing(row0, col0, logits):
            calls["n"] += 1
            if calls["n"] > 2:
                raise Stop
            write(row0, col0, logits)
        sink.write = failing
        return original(fcn, source, normalize, sink, **kwargs)

    import fcnclassify.outputs.slide as slide_module

    monkeypatch.setattr(slide_module, "streamed_evaluate", interrupted)
    code, _, err = run(capsys, path, "--out", out, "--tissue", "none", "--max-memory", BUDGET)
    assert code == 130 and err[-1] == "fcnclassify: interrupted", err  # Ctrl-C
    assert not (out / "scan.ome-tif_slide").exists() and (out / ".scan.ome-tif_slide.partial").is_dir()

    monkeypatch.setattr(slide_module, "streamed_evaluate", original)
    code, _, err = run(capsys, path, "--out", out, "--tissue", "none", "--max-memory", BUDGET)
    assert code == 2 and len(err) == 1 and "--resume" in err[0], err  # refused, nothing lost

    code, _, err = run(capsys, path, "--out", out, "--tissue", "none", "--max-memory", BUDGET,
                       "--resume", "--json")
    assert code == 0, err
    summary = json.loads((out / "scan.ome-tif_slide" / "summary.json").read_text())
    assert summary["resumed"] == 2 and summary["evaluated"] > 0
    import zarr

    logits = zarr.open_group(str(out / "scan.ome-tif_slide" / "scores.zarr"), mode="r")["logits"][...]
    np.testing.assert_allclose(logits.astype(np.float32), _reference(given, image), rtol=2e-3, atol=2e-3)
    # a finished slide is not redone or overwritten
    code, _, err = run(capsys, path, "--out", out, "--tissue", "none", "--max-memory", BUDGET)
    assert code == 2 and "already exists" in err[0] and len(err) == 1


def test_bad_slides_are_one_line(given, slide, tmp_path, capsys):
    path, _ = slide
    truncated = tmp_path / "cut.ome.tif"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, err = run(capsys, truncated, "--out", tmp_path / "out")
    assert code == 2 and len(err) == 1 and "cut.ome.tif" in err[0], err
    code, _, err = run(capsys, path, "--out", tmp_path / "out", "--scales", "0.5,1")
    assert code == 2 and len(err) == 1 and "one scale" in err[0], err


def test_the_slide_viewer_draws_the_slide_and_its_layers(given, slide, tmp_path, capsys):
    """The viewer page of a slide's folder in headless Chromium, from file://: the slide's tiles and
    the chosen class's heatmap tiles requested and drawn, none failed."""
    from test_viewer import browse, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    path, _ = slide
    out = tmp_path / "out"
    code, _, err = run(capsys, path, "--out", out, "--max-memory", BUDGET, "--topk", "2")
    assert code == 0, err
    page = out / "scan.ome-tif_slide" / "viewer.html"
    for layer in (0, 1):
        state, screen = browse(chromium, page, f"layer={layer}&opacity=0.6", tmp_path)
        assert state["ready"] == "1" and state["tiles-failed"] == "0", state
        assert int(state["tiles-image"]) > 0 and int(state[f"tiles-layer{layer}"]) > 0, state
        assert f"tiles-layer{1 - layer}" not in state, state
        assert screen.std() > 10  # something was drawn, not a blank page
