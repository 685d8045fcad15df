"""Dense evaluation against references: crops through the original model, flipped and rescaled inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from conftest import randomize
from fcnclassify import ScoreMap, convert, dense_evaluate, fuse, global_pool
from fcnclassify.network.geometry import Geometry

TOL = dict(rtol=1e-4, atol=1e-4)


class PadFree(nn.Module):
    """No padding anywhere: a dense cell must equal the original model on its window, exactly."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.ReLU(),
                                        nn.Dropout(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def padfree():
    model = randomize(PadFree()).double()
    return model, convert(model, input_size=32)


def test_cells_equal_crops_through_the_original(padfree):
    model, fcn = padfree
    g = fcn.geometry
    assert (g.window, g.stride, g.offset) == (32, 4, 0)
    x = torch.randn(1, 3, 45, 58, dtype=torch.float64)
    (m,) = dense_evaluate(fcn, x, dtype=torch.float64, channels_last=False)[0]
    h, w = m.shape
    by_hand = lambda n: (((n - 2) // 2 - 2) // 2) - 6 + 1  # noqa: E731  conv, pool, conv, pool, fc 6x6
    assert (h, w) == (by_hand(45), by_hand(58)) == (4, 8)
    # the last column's window ends 2 px past the image: the network ignores its last 2 pixels
    for i in range(h):
        for j in range(w):
            x0, y0, x1, y1 = g.box(i, j)
            with torch.no_grad():
                want = model(x[:, :, y0:y1, x0:x1])[0]
            torch.testing.assert_close(m.logits[:, i, j].double(), want.float().double(),
                                       rtol=1e-5, atol=1e-5)


def test_flip_is_the_flipped_image_flipped_back(padfree):
    model, fcn = padfree
    x = torch.randn(1, 3, 41, 57, dtype=torch.float64)
    plain, flipped = dense_evaluate(fcn, x, flip=True, dtype=torch.float64)[0]
    (ref,) = dense_evaluate(fcn, x.flip(-1), dtype=torch.float64)[0]
    torch.testing.assert_close(flipped.logits, ref.logits.flip(-1))
    # a flipped cell's window is the mirror image of the window it saw in the flipped input
    boxes, ref_boxes = flipped.boxes(), ref.boxes()
    w = flipped.shape[1]
    for j in range(w):
        x0, y0, x1, y1 = ref_boxes[0, w - 1 - j]
        assert tuple(boxes[0, j]) == (57 - x1, y0, 57 - x0, y1)
        with torch.no_grad():
            crop = x[:, :, int(y0):int(y1), 57 - int(x1):57 - int(x0)]
            torch.testing.assert_close(flipped.logits[:, 0, j], model(crop.flip(-1))[0].float())
    assert plain.boxes()[0, 0].tolist() == [0, 0, 32, 32]


def test_scales_map_back_to_original_pixels():
    fcn = convert(randomize(torchvision.models.resnet18(num_classes=4)), cells="activation")
    x = torch.randn(1, 3, 200, 260)
    full, half = dense_evaluate(fcn, x, scales=(1.0, 0.5))[0]
    small = F.interpolate(x, size=(100, 130), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(half.logits, fcn(small)[0], **TOL)
    assert half.input_size == (100, 130) and half.image_size == (200, 260)
    assert half.scale == (0.5, 0.5)
    # the same input cell, twice as large in the original image
    assert tuple(half.boxes()[1, 2]) == tuple(2 * v for v in fcn.geometry.box(1, 2))
    ys, xs = half.centers()
    assert ys[0] == 2 * fcn.geometry.cell_center(0) and xs[1] == 2 * fcn.geometry.cell_center(1)


def test_small_input_needs_pad(padfree):
    _, fcn = padfree
    x = torch.randn(1, 3, 20, 40, dtype=torch.float64)
    with pytest.raises(ValueError, match="smaller than one window"):
        dense_evaluate(fcn, x, dtype=torch.float64)
    (m,) = dense_evaluate(fcn, x, pad=True, dtype=torch.float64)[0]
    with torch.no_grad():
        want = fcn(F.pad(x, (0, 0, 0, 12)))[0]
    torch.testing.assert_close(m.logits, want.float())


def test_bfloat16_channels_last_agree_with_float32():
    torch.manual_seed(0)
    fcn = convert(randomize(torchvision.models.resnet18(num_classes=10)), cells="activation")
    x = torch.randn(1, 3, 160, 192)
    (ref,) = dense_evaluate(fcn, x, channels_last=False)[0]
    (nhwc,) = dense_evaluate(fcn, x, channels_last=True)[0]
    (bf16,) = dense_evaluate(fcn, x, dtype="bfloat16")[0]
    # the layouts take different oneDNN kernels (another order of float32 sums): on an AVX2 CPU
    # 1 of 300 logits of 18 layers differed by 1.3e-4
    torch.testing.assert_close(nhwc.logits, ref.logits, rtol=1e-3, atol=1e-3)
    assert bf16.logits.dtype == torch.float32
    assert (bf16.logits.argmax(0) == ref.logits.argmax(0)).float().mean() > 0.9
    assert next(fcn.parameters()).dtype == torch.float32  # the caller's weights were not rounded


def test_float16_is_refused_on_cpu():
    fcn = convert(randomize(torchvision.models.resnet18(num_classes=4)))
    with pytest.raises(ValueError, match="float16"):
        dense_evaluate(fcn, torch.randn(1, 3, 64, 64), dtype="float16", device="cpu")


def _map(logits: torch.Tensor, *, image=(128, 192), flipped=False) -> ScoreMap:
    g = Geometry(window=64, stride=32, offset=0, receptive_field=64, center=32.0)
    return ScoreMap(logits, g, image, image, flipped)


def test_image_grid_puts_values_at_window_centres():
    logits = torch.full((2, 3, 5), -10.0)
    logits[0, 1, 3] = 10.0
    m = _map(logits)
    grid = m.to_image_grid([0], probabilities=False)[0]
    assert grid.shape == (128, 192)
    y, x = divmod(int(grid.argmax()), 192)
    # window of cell (1, 3): x 96..160, y 32..96 -> centre (128, 64); pixel 127/63 spans it
    assert abs(x + 0.5 - 128) <= 0.5 and abs(y + 0.5 - 64) <= 0.5
    assert grid.max() == pytest.approx(-10 + 20 * (1 - 0.5 / 32) ** 2, abs=1e-4)  # half a px off, both axes
    # between two centres, values are linear
    assert grid[63, 112].item() == pytest.approx(-10 + 20 * (1 - 0.5 / 32) * (112.5 - 96) / 32, abs=1e-3)


def test_global_pooling_by_hand():
    logits = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]])  # 2 classes, 1x2 map
    avg_logits = torch.tensor([2.0, 1.0]).softmax(0)
    torch.testing.assert_close(global_pool(logits, pool="avg", over="logits"), avg_logits)
    probs = logits.softmax(0)
    torch.testing.assert_close(global_pool(logits, pool="avg", over="probs"), probs.mean((1, 2)))
    torch.testing.assert_close(global_pool(logits, pool="max", over="logits"),
                               torch.tensor([3.0, 2.0]).softmax(0))
    mx = probs.amax((1, 2))
    torch.testing.assert_close(global_pool(logits, pool="max", over="probs"), mx / mx.sum())
    with pytest.raises(ValueError, match="expected pool 'avg' or 'max' but got 'sum'"):
        global_pool(logits, pool="sum")


def test_average_of_logits_is_the_original_classifier_for_pooled_heads():
    model = randomize(torchvision.models.resnet18(num_classes=7))
    fcn = convert(model, cells="activation")
    x = torch.randn(1, 3, 224, 288)
    maps = dense_evaluate(fcn, x, flip=True)[0]
    with torch.no_grad():
        want = (model(x).softmax(1) + model(x.flip(-1)).softmax(1))[0] / 2
    torch.testing.assert_close(fuse(maps, pool="avg", over="logits"), want, **TOL)
