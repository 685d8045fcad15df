"""Rendering: overlays put each cell's value at its window centre, in RGB order, through a PNG."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fcnclassify.network.geometry import Geometry
from fcnclassify.io.images import write_image
from fcnclassify.outputs.render import COLORMAPS, colorize, draw_legend, grid, overlay
from fcnclassify.evaluation.scoremap import ScoreMap

# window 64, stride 32, offset 0: cell (i, j) covers x in [32 j, 32 j + 64), centred at 32 j + 32
GEOMETRY = Geometry(window=64, stride=32, offset=0, receptive_field=64, center=32.0)
HOT = (2, 3)  # the hot cell (row, column) of a 5 x 7 map


def one_hot_map(*, image_size: tuple[int, int] | None = None) -> ScoreMap:
    """Two classes; class 0 has probability ~1 at the hot cell and exactly 0.5 everywhere else."""
    logits = torch.zeros(2, 5, 7)
    logits[0, HOT[0], HOT[1]] = 30.0
    input_size = (64 + 32 * 4, 64 + 32 * 6)  # 192 x 256: exactly a 5 x 7 map
    return ScoreMap(logits, GEOMETRY, image_size or input_size, input_size)


def decode_jet(bgr: np.ndarray) -> np.ndarray:
    """Inverts OpenCV's jet colour map: each pixel's level in [0, 1] (jet's 256 colours are distinct)."""
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET)[0].astype(np.int64)
    key = lambda c: (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]  # noqa: E731
    order = np.argsort(key(lut))
    codes = key(bgr.astype(np.int64))
    index = np.searchsorted(key(lut)[order], codes)
    assert np.array_equal(key(lut)[order][index], codes), "a pixel that is not a jet colour"
    return order[index] / 255.0


def render_through_png(score_map: ScoreMap, path) -> np.ndarray:
    heat = score_map.to_image_grid([0])[0].numpy()
    black = np.zeros((*score_map.image_size, 3), np.uint8)
    write_image(path, overlay(black, heat, alpha=1.0, colormap="jet"))
    return decode_jet(cv2.imread(str(path), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("factor", [1, 2])
def test_hot_cell_lands_on_its_window_centre(tmp_path, factor):
    base = one_hot_map()
    image_size = (base.input_size[0] * factor, base.input_size[1] * factor)  # factor 2: scale 0.5
    levels = render_through_png(one_hot_map(image_size=image_size), tmp_path / "hot.png")
    assert levels.shape == image_size

    # hand-computed: the window of cell (2, 3) spans x 96..160, y 64..128 of the input
    cx, cy = (3 * 32 + 32) * factor, (2 * 32 + 32) * factor
    ys, xs = np.nonzero(levels == levels.max())
    assert np.all(np.abs(xs + 0.5 - cx) <= 1) and np.all(np.abs(ys + 0.5 - cy) <= 1), (xs, ys)
    # the nearest pixel centres are half a pixel from the cell centre along x and y
    t = 0.5 / (32 * factor)
    assert levels.max() == pytest.approx(0.5 + 0.5 * (1 - t) ** 2, abs=0.6 / 255)
    # one stride away from the centre the bilinear tent is back to the background's 0.5
    assert levels[int(cy), int(cx + 32 * factor)] == pytest.approx(0.5, abs=2 / 255)
    assert levels[int(cy - 32 * factor), int(cx)] == pytest.approx(0.5, abs=2 / 255)
    # half-way, half-way between 1 and 0.5 (bilinear, not nearest: nothing shifted by half a cell)
    half = levels[int(cy), int(cx + 16 * factor)]
    assert half == pytest.approx(0.75, abs=3 / 255 + 1 / (32 * factor))


def test_flipped_map_peaks_at_the_mirrored_centre(tmp_path):
    logits = torch.zeros(2, 5, 7)
    logits[0, HOT[0], HOT[1]] = 30.0
    size = (192, 256)
    flipped = ScoreMap(logits, GEOMETRY, size, size, flipped=True)  # columns already flipped back
    levels = render_through_png(flipped, tmp_path / "flip.png")
    ys, xs = np.nonzero(levels == levels.max())
    # cell 3 of the flipped-back map is cell 7-1-3 = 3 of the flipped input: centre 256 - 128
    assert np.all(np.abs(xs + 0.5 - (256 - 128)) <= 1) and np.all(np.abs(ys + 0.5 - 96) <= 1)


def test_colour_map_is_rgb_and_red_stays_red(tmp_path):
    low, high = colorize(np.array([[0.0, 1.0]]), colormap="jet")[0]
    assert low.tolist() == [0, 0, 128]  # jet starts dark blue ...
    assert high.tolist() == [128, 0, 0]  # ... and ends dark red, in RGB order

    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    blended = overlay(red, np.zeros((40, 60)), alpha=0.3, colormap="jet")
    write_image(tmp_path / "red.png", blended)
    bgr = cv2.imread(str(tmp_path / "red.png"), cv2.IMREAD_COLOR)
    # 0.7 * red + 0.3 * jet(0): R = 0.7 * 255, B = 0.3 * 128, read back by OpenCV as B, G, R
    np.testing.assert_allclose(bgr[..., 2], 178.5, atol=1)
    np.testing.assert_allclose(bgr[..., 1], 0, atol=0)
    np.testing.assert_allclose(bgr[..., 0], 38.4, atol=1)


def test_colorize_range():
    heat = np.array([[0.0, 0.1, 0.2]])
    absolute = colorize(heat, colormap="hot", vmax=1.0)
    stretched = colorize(heat, colormap="hot", vmax=None)
    lut = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_HOT),
                       cv2.COLOR_BGR2RGB)[0]
    np.testing.assert_array_equal(absolute[0], lut[[0, 26, 51]])  # round(255 * 0.1), round(255 * 0.2)
    np.testing.assert_array_equal(stretched[0], lut[[0, 128, 255]])  # the maximum gets the last colour


def test_every_named_colour_map_works():
    assert {"jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot"} <= set(COLORMAPS)
    ramp = np.linspace(0, 1, 256)[None]
    for name in COLORMAPS:
        assert colorize(ramp, colormap=name).shape == (1, 256, 3)


def test_legend_stays_in_its_corner():
    image = np.full((300, 400, 3), 200, np.uint8)
    out = draw_legend(image, ["Egyptian cat 0.93", "tabby 0.02"])
    changed = np.any(out != image, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() == 0 and xs.min() == 0  # the box starts in the corner
    assert ys.max() < 80 and xs.max() < 250  # small
    box = out[: ys.max() + 1, : xs.max() + 1]
    assert box.min() < 100  # darkened box ...
    assert box.max() > 220  # ... with white text on it
    np.testing.assert_array_equal(image, np.full_like(image, 200))  # input untouched


def test_grid_places_panels_side_by_side_under_titles():
    red = np.zeros((100, 200, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((200, 100, 3), np.uint8)
    blue[..., 2] = 255
    out = grid([red, blue], ["a red panel", "blue"], height=80, gap=4)
    bar = out.shape[0] - 80
    assert out.shape == (bar + 80, 160 + 4 + 40, 3)  # widths follow each panel's aspect
    np.testing.assert_array_equal(out[bar + 5:, 5:155], np.broadcast_to([255, 0, 0], (75, 150, 3)))
    np.testing.assert_array_equal(out[bar + 5:, 170:200], np.broadcast_to([0, 0, 255], (75, 30, 3)))
    assert out[:bar].min() < 100  # a dark title on the white bar

    two_rows = grid([red, blue, red], ["1", "2", "3"], height=80, columns=2, gap=4)
    assert two_rows.shape[0] == 2 * (bar + 80) + 4


def test_bad_arguments_name_the_value():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="'nosuchmap'"):
        colorize(np.zeros((10, 10)), colormap="nosuchmap")
    with pytest.raises(ValueError, match="1.5"):
        overlay(image, np.zeros((10, 10)), alpha=1.5)
    with pytest.raises(ValueError, match=r"\(9, 10\)"):
        overlay(image, np.zeros((9, 10)))
    with pytest.raises(ValueError, match="float64"):
        overlay(image.astype(np.float64), np.zeros((10, 10)))
    with pytest.raises(ValueError, match="2 titles for 1 panels"):
        grid([image], ["a", "b"])


def test_grid_wider_than_the_cap_is_the_uncapped_grid_shrunk():
    wide = np.zeros((100, 1000, 3), np.uint8)
    wide[:, :500] = (255, 0, 0)
    panels, titles = [wide, wide, wide], ["a", "b", "c"]
    uncapped = grid(panels, titles, height=80)
    assert uncapped.shape[1] == 3 * 800 + 2 * 4  # each panel 80 high, 800 wide
    capped = grid(panels, titles, height=80, max_width=600)
    height = round(uncapped.shape[0] * 600 / uncapped.shape[1])
    assert capped.shape == (height, 600, 3)
    # the reference: the uncapped grid, area-averaged to the capped size
    reference = cv2.resize(uncapped, (600, height), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(capped, reference)
    np.testing.assert_array_equal(grid(panels, titles, height=80, max_width=5000), uncapped)  # no cap hit
    with pytest.raises(ValueError, match="at least 16 pixels but got 8"):
        grid(panels, titles, max_width=8)
