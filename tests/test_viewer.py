"""The viewer page in a real headless Chromium, from ``file://``: tiles requested and drawn (the
screenshot's colours against the blend the page should show), the class picker's layer switched by
the URL hash it keeps; the page's checks; ``heatmap --viewer`` on a photo; ``fcnclassify view``.

Chromium is the Debian package ``chromium`` (.ci/run installs it); without it the browser tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import webbrowser
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from fcnclassify import cli
from fcnclassify.commands import heatmap
from fcnclassify.io.images import write_image
from fcnclassify.outputs.dzi import write_dzi
from fcnclassify.outputs.files import slug
from fcnclassify.outputs.viewer import ASSETS, colorbar, write_viewer

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (800, 600)
GREEN, RED, BLUE = (0, 190, 0), (255, 0, 0), (0, 0, 255)


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); "
                    f"install the Debian package: apt-get install chromium")
    return path


def browse(chromium: str, page: Path, fragment: str, work: Path) -> tuple[dict, np.ndarray]:
    """Loads ``page#fragment`` headless; returns the body's data attributes after 15 s of the page's
    (virtual) time and the screenshot, RGB."""
    shot = work / f"shot-{re.sub(r'[^a-z0-9]+', '-', fragment)}.png"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-extensions", "--mute-audio",
               "--disable-dev-shm-usage",  # containers often give /dev/shm 64 MB
               f"--user-data-dir={work / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               "--virtual-time-budget=15000", "--dump-dom", f"--screenshot={shot}",
               f"{page.resolve().as_uri()}#{fragment}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, result.stdout[:2000]
    attributes = dict(re.findall(r'data-([a-z0-9-]+)="([^"]*)"', body.group(1)))
    pixels = cv2.imread(str(shot))
    assert pixels is not None and pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    return attributes, cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A green image with two heatmap layers: red left and blue right, and the reverse at half the
    resolution (a coarse score map's layer, stretched over the image)."""
    folder = tmp_path_factory.mktemp("viewer")
    width, height = 1000, 700
    image = np.empty((height, width, 3), np.uint8)
    image[:] = GREEN
    first = np.empty((height, width, 4), np.uint8)
    first[:, :width // 2], first[:, width // 2:] = (*RED, 255), (*BLUE, 255)
    second = first[::2, ::-2, :3].copy()  # blue left, red right; RGB in JPEG; 500 x 350

    def reader(pixels):
        return lambda x, y, w, h: pixels[y:y + h, x:x + w]

    descriptor = write_dzi(folder / "image", width, height, reader(image), format="jpeg")
    layers = [{"name": "red left", "dzi": write_dzi(folder / "first", width, height, reader(first),
                                                     format="png")},
              {"name": "blue left", "dzi": write_dzi(folder / "second", width // 2, height // 2,
                                                      reader(second), format="jpeg")}]
    return write_viewer(folder, {"title": "synthetic </script> & <b>", "image": descriptor,
                                 "layers": layers, "model": "none", "colorbar": colorbar("jet")})


def _patch(screen: np.ndarray, x: float, y: float) -> np.ndarray:
    """The median colour of a 21 x 21 patch at a fraction (x, y) of the viewing area."""
    top = 40  # below the header
    cx, cy = int(x * WINDOW[0]), int(top + y * (WINDOW[1] - top))
    return np.median(screen[cy - 10:cy + 11, cx - 10:cx + 11].reshape(-1, 3), axis=0)


def _blend(under, over, opacity):
    return (1 - opacity) * np.array(under, float) + opacity * np.array(over, float)


def test_the_page_draws_the_image_and_the_chosen_layer_over_it(chromium, page, tmp_path):
    # image alone (the layer at opacity 0): green both sides, tiles of the image only
    state, screen = browse(chromium, page, "layer=0&opacity=0", tmp_path)
    assert state["ready"] == "1" and state["tiles-failed"] == "0", state
    assert int(state["tiles-image"]) > 0 and "tiles-layer0" not in state, state
    for x in (0.25, 0.75):
        np.testing.assert_allclose(_patch(screen, x, 0.5), GREEN, atol=12)
    for layer, (left, right) in enumerate([(RED, BLUE), (BLUE, RED)]):
        state, screen = browse(chromium, page, f"layer={layer}&opacity=0.5", tmp_path)
        # the chosen layer's tiles were requested and drawn; the other layer's never loaded
        assert state["layer"] == str(layer) and state["opacity"] == "0.5", state
        assert int(state[f"tiles-layer{layer}"]) > 0 and f"tiles-layer{1 - layer}" not in state, state
        assert state["tiles-failed"] == "0", state
        np.testing.assert_allclose(_patch(screen, 0.25, 0.5), _blend(GREEN, left, 0.5), atol=12)
        np.testing.assert_allclose(_patch(screen, 0.75, 0.5), _blend(GREEN, right, 0.5), atol=12)


def test_the_page_inlines_its_descriptors_and_escapes_the_title(page):
    text = page.read_text()
    script = re.search(r'<script id="manifest" type="application/json">(.*?)</script>', text, re.S)
    manifest = json.loads(script.group(1))
    assert manifest["image"] == {"Url": "image_files/", "Format": "jpeg", "Overlap": 1, "TileSize": 254,
                                 "Size": {"Width": 1000, "Height": 700}}
    assert [layer["name"] for layer in manifest["layers"]] == ["red left", "blue left"]
    assert manifest["title"] == "synthetic </script> & <b>"
    assert "<title>synthetic &lt;/script&gt; &amp; &lt;b&gt;</title>" in text
    assert text.count("</script>") == 3  # the library's, the manifest's, the page's: none from the title
    library = page.parent / "openseadragon"
    assert (library / "openseadragon.min.js").read_bytes() == \
        (ASSETS / "openseadragon" / "openseadragon.min.js").read_bytes()
    assert "Redistribution and use in source and binary forms" in (library / "LICENSE.txt").read_text()
    assert len(list((library / "images").glob("*.png"))) >= 30


def test_write_viewer_refuses_a_missing_tiles_folder_and_an_existing_page(page, tmp_path):
    descriptor = {"Url": "image_files/", "Format": "jpeg", "Overlap": 1, "TileSize": 254,
                  "Size": {"Width": 10, "Height": 10}}
    with pytest.raises(ValueError, match=r"expected the tiles of 'image' in .*image_files"):
        write_viewer(tmp_path, {"title": "x", "image": descriptor, "layers": []})
    with pytest.raises(ValueError, match="expected a Deep Zoom descriptor"):
        write_viewer(tmp_path, {"image": {"Url": "x/"}})
    assert os.listdir(tmp_path) == []
    before = page.read_bytes()
    with pytest.raises(FileExistsError, match="viewer.html: already exists"):
        write_viewer(page.parent, {"title": "again", "image": json.loads(re.search(
            r'type="application/json">(.*?)</script>', before.decode(), re.S).group(1))["image"]})
    assert page.read_bytes() == before


@pytest.fixture(scope="module")
def lite():
    from fcnclassify.models.registry import load_model

    return load_model("efficientnet_lite0")


def test_heatmap_viewer_writes_the_photo_and_each_class_as_layers(lite, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(heatmap, "load_from_args", lambda args: lite)
    photo = tmp_path / "chelsea.png"
    write_image(photo, data.chelsea())
    out = tmp_path / "out"
    args = ["heatmap", str(photo), "--model", "efficientnet_lite0", "--sizes", "224", "--topk", "2",
            "--alpha", "1", "--format", "png", "--viewer", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    folder = out / "chelsea-png_viewer"
    assert f"viewer -> {folder / 'viewer.html'}" in capsys.readouterr().out
    entry = json.loads((out / "fcnclassify-manifest.json").read_text())["images"]["chelsea-png"]
    assert "chelsea-png_viewer" in entry["files"] and entry["document"]["viewer"] == str(folder / "viewer.html")
    classes = [c["label"] for c in entry["document"]["classes"]]
    script = re.search(r'type="application/json">(.*?)</script>', (folder / "viewer.html").read_text(), re.S)
    manifest = json.loads(script.group(1))
    assert [layer["name"] for layer in manifest["layers"]] == [f"{r}. {c}" for r, c in enumerate(classes, 1)]
    assert manifest["model"] == "efficientnet_lite0"

    # the top level of each layer is the class's colours: the overlay at alpha 1, below its legend
    height, width = data.chelsea().shape[:2]
    top = folder / "image_files" / "9"
    photo_tile = cv2.cvtColor(cv2.imread(str(top / "0_0.jpeg")), cv2.COLOR_BGR2RGB)
    assert np.abs(photo_tile.astype(int) - data.chelsea()[:255, :255]).mean() < 3
    for rank, (layer, label) in enumerate(zip(manifest["layers"], classes), 1):
        tiles = folder / layer["dzi"]["Url"] / "9"
        assert sorted(os.listdir(tiles)) == ["0_0.jpeg", "0_1.jpeg", "1_0.jpeg", "1_1.jpeg"]
        tile = cv2.cvtColor(cv2.imread(str(tiles / "0_1.jpeg")), cv2.COLOR_BGR2RGB)  # rows 253..300
        overlay = cv2.cvtColor(cv2.imread(str(out / f"chelsea-png_{rank}_{slug(label)}.png")),
                               cv2.COLOR_BGR2RGB)
        assert np.abs(tile.astype(int) - overlay[253:height, :255]).mean() < 3

    if chromium := find_chromium():  # the browser's own test skips, saying why, without it
        state, _ = browse(chromium, folder / "viewer.html", "layer=1", tmp_path)
        assert state["ready"] == "1" and state["tiles-failed"] == "0", state
        assert int(state["tiles-image"]) > 0 and int(state["tiles-layer1"]) > 0, state

    # --force replaces the whole folder; a leftover file of the earlier one goes with it
    (folder / "stale.txt").write_text("old")
    assert cli.main([*args, "--force"]) == 0
    assert not (folder / "stale.txt").exists() and (folder / "viewer.html").is_file()
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    # without --viewer the folder is no longer part of the set: removed with the earlier set
    assert cli.main([a for a in args if a != "--viewer"] + ["--force"]) == 0
    assert not folder.exists()


def test_view_prints_the_page_url_or_opens_the_browser(page, tmp_path, capsys, monkeypatch):
    assert cli.main(["view", str(page.parent), "--print"]) == 0
    assert capsys.readouterr().out.strip() == page.resolve().as_uri()
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert cli.main(["view", str(page)]) == 0
    assert opened == [page.resolve().as_uri()]


def test_view_of_a_folder_without_a_page_is_one_line_and_exit_2(page, tmp_path, capsys):
    (tmp_path / "a_viewer").mkdir()
    (tmp_path / "a_viewer" / "viewer.html").write_text("<html></html>")
    assert cli.main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a folder holding viewer.html" in err[0] and "a_viewer" in err[0]
    assert cli.main(["view", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fcnclassify view: error: {tmp_path / 'nothing'}: no such folder"]
