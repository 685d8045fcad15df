"""Crop evaluation: crop (i, j) answers for dense cell (i, j); the multi-crop protocols match torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
from torch import nn

from conftest import VGG16_NARROW, randomize, vgg_features
from fcnclassify.evaluation.agreement import agreement
from fcnclassify.network.convert import convert
from fcnclassify.evaluation.crops import (center_crop, crop_boxes, crop_logits, crop_map, crop_window,
                               extract_crops, grid_crops, grid_positions, multicrop_probabilities,
                               ten_crop)
from fcnclassify.evaluation.dense import dense_evaluate


class Unpadded(nn.Module):
    """A VGG-style classifier in which no layer pads: 3x3 convs with padding 0, max pools, flatten, MLP.

    At 64x64: 64 -conv-> 62 -conv-> 60 -pool-> 30 -conv-> 28 -pool-> 14 -conv-> 12 -pool-> 6.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 12, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(nn.Linear(12 * 6 * 6, 24), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(24, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def test_crop_map_equals_dense_map_without_padding(rng):
    model = randomize(Unpadded(), seed=3).double()
    fcn = convert(model, input_size=64)
    g = fcn.geometry
    assert (g.window, g.stride, g.offset) == (64, 8, 0)
    image = torch.randn(3, 83, 101, generator=rng, dtype=torch.float64)  # not a multiple of 8
    dense = dense_evaluate(fcn, image, dtype=torch.float64)[0][0]
    # (83 - 64) // 8 + 1 = 3 rows, (101 - 64) // 8 + 1 = 5 columns
    assert dense.shape == (3, 5)
    crops = crop_map(model, fcn, image, batch_size=4, dtype=torch.float64)
    # computed in float64 by both; both maps are returned as float32, so equal to 1 ulp
    torch.testing.assert_close(crops.logits, dense.logits, rtol=0, atol=1e-6)
    # and cell (i, j) is the original model on the hand-cut window rows 8i.., columns 8j..
    for i, j in [(0, 0), (2, 4), (1, 3)]:
        ref = model(image[None, :, 8 * i:8 * i + 64, 8 * j:8 * j + 64])[0]
        torch.testing.assert_close(dense.logits[:, i, j], ref.float(), rtol=0, atol=1e-6)
    assert crops.box(2, 4) == (32.0, 16.0, 96.0, 80.0)
    a = agreement(dense, crops)
    assert (a.cells, a.top1) == (15, 1.0)
    assert a.max_abs_logit_diff < 1e-6 and a.correlation == pytest.approx(1.0)


def _vgg16_narrow() -> nn.Module:
    model = torchvision.models.VGG(vgg_features(VGG16_NARROW), num_classes=10, init_weights=False)
    model.classifier[0] = nn.Linear(32 * 7 * 7, 64)
    model.classifier[3] = nn.Linear(64, 64)
    model.classifier[6] = nn.Linear(64, 10)
    return randomize(model, seed=5)


class SmallVGG(nn.Module):
    """VGG-style with padded 3x3 convs, stride 8, for input_size 48: window 48, 6x6 features."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg_features([6, "M", 8, 8, "M", 12, "M"])
        self.classifier = nn.Sequential(nn.Linear(12 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class SmallPooled(nn.Module):
    """A pooled head (global average pooling -> Linear), stride 8, trained at input_size 48."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def test_crop_map_of_padded_vgg16_equals_dense_at_one_224_window(rng):
    model = _vgg16_narrow()
    fcn = convert(model)
    one = torch.randn(3, 224, 224, generator=rng)
    dense = dense_evaluate(fcn, one)[0][0]
    crops = crop_map(model, fcn, one)
    assert dense.shape == crops.shape == (1, 1)
    torch.testing.assert_close(crops.logits, dense.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(crops.logits[:, 0, 0], model(one[None])[0], rtol=1e-4, atol=1e-5)


def test_crop_map_of_padded_net_is_crops_through_the_original_and_differs_from_dense(rng):
    model = randomize(SmallVGG(), seed=4)
    fcn = convert(model, input_size=48)
    assert (fcn.geometry.window, fcn.geometry.stride, fcn.geometry.offset) == (48, 8, 0)
    big = torch.randn(3, 64, 72, generator=rng)
    dense = dense_evaluate(fcn, big)[0][0]
    crops = crop_map(model, fcn, big, batch_size=5)
    assert dense.shape == crops.shape == (3, 4)
    # padded convs zero-pad each crop at its own border while dense cells see the real
    # neighbours, so the logits differ (VGG paper, section 3.2)
    assert (dense.logits - crops.logits).abs().max() > 1e-3
    # the crop map's cells are the original model on geometry.box(i, j)
    x0, y0, x1, y1 = fcn.geometry.box(2, 3)
    assert (x0, y0, x1, y1) == (24, 16, 72, 64)
    ref = model(big[None, :, y0:y1, x0:x1])[0]
    torch.testing.assert_close(crops.logits[:, 2, 3], ref, rtol=1e-4, atol=1e-5)


def test_pooled_head_crops_are_input_size_windows_centred_on_cells(rng):
    model = randomize(SmallPooled(), seed=2)
    fcn = convert(model, input_size=48, cells="activation")
    assert fcn.kind == "pooled_linear" and fcn.geometry.window == 8 and crop_window(fcn) == 48
    g = fcn.geometry
    boxes = crop_boxes(g, (24, 40), window=48)
    assert boxes.shape[:2] == g.output_size(24, 40) == (3, 5)
    for i, j in [(0, 0), (2, 3)]:
        x0, y0, x1, y1 = boxes[i, j]
        assert (x1 - x0, y1 - y0) == (48, 48)
        # centred on the cell centre, to the nearest pixel
        assert abs((x0 + x1) / 2 - g.cell_center(j)) <= 0.5
        assert abs((y0 + y1) / 2 - g.cell_center(i)) <= 0.5
    image = torch.randn(3, 24, 40, generator=rng)
    crops = crop_map(model, fcn, image, batch_size=4)
    x0, y0, x1, y1 = (int(v) for v in boxes[1, 2])
    assert x0 < 0 < x1 - 40 and y0 < 0 < y1 - 24  # reaches past every border of the image
    padded = torch.zeros(3, 24 + 100, 40 + 100)  # zeros outside the image (normalised space)
    padded[:, 50:74, 50:90] = image
    ref = model(padded[None, :, y0 + 50:y1 + 50, x0 + 50:x1 + 50])[0]
    torch.testing.assert_close(crops.logits[:, 1, 2], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(crops.box(1, 2), (x0, y0, x1, y1))


def test_extract_crops_pads_with_zeros_and_rejects_mixed_sizes():
    image = torch.arange(1, 13, dtype=torch.float32).reshape(1, 3, 4).expand(3, 3, 4)
    (crop,) = extract_crops(image, [(-1, -1, 2, 2)])
    expected = torch.tensor([[0, 0, 0], [0, 1, 2], [0, 5, 6]], dtype=torch.float32)
    torch.testing.assert_close(crop[0], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one size"):
        extract_crops(image, [(0, 0, 2, 2), (0, 0, 3, 3)])


def test_crop_logits_batches_do_not_change_the_answer(rng):
    model = randomize(SmallVGG(), seed=4)
    image = torch.randn(3, 70, 60, generator=rng)
    boxes = crop_boxes(convert(model, input_size=48).geometry, (70, 60)).reshape(-1, 4)
    assert len(boxes) == 3 * 2
    torch.testing.assert_close(crop_logits(model, image, boxes, batch_size=1),
                               crop_logits(model, image, boxes, batch_size=64), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch size"):
        crop_logits(model, image, boxes, batch_size=0)


@pytest.mark.parametrize("size", [(300, 400), (401, 257)])
def test_center_and_ten_crop_equal_torchvision(rng, size):
    image = torch.randn(3, *size, generator=rng)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224)])(image)
    torch.testing.assert_close(center_crop(image)[0], ref, rtol=0, atol=0)
    ref10 = torch.stack(T.Compose([T.Resize(256), T.TenCrop(224)])(image))
    torch.testing.assert_close(ten_crop(image), ref10, rtol=0, atol=0)
    # an odd crop left over: centre rounding as torchvision does
    torch.testing.assert_close(center_crop(image, resize=231, crop=200)[0],
                               T.Compose([T.Resize(231), T.CenterCrop(200)])(image), rtol=0, atol=0)


def test_vgg_multicrop_has_150_crops_on_a_5x5_grid(rng):
    assert grid_positions(256, 224, 5) == [0, 8, 16, 24, 32]
    assert grid_positions(341, 224, 5) == [0, 29, 58, 88, 117]  # 117 / 4 = 29.25 steps, rounded
    assert grid_positions(300, 224, 1) == [38]
    with pytest.raises(ValueError, match="crop no larger"):
        grid_positions(200, 224, 5)
    image = torch.randn(3, 240, 320, generator=rng)
    crops = grid_crops(image)
    assert crops.shape == (150, 3, 224, 224)
    # scale Q = 384: the image becomes 384 x 512; row 3, column 1 -> top 120, left 72, then its flip
    x = T.Resize(384)(image)
    assert x.shape[-2:] == (384, 512)
    k = 50 + 2 * (3 * 5 + 1)
    torch.testing.assert_close(crops[k], x[:, 120:344, 72:296], rtol=0, atol=0)
    torch.testing.assert_close(crops[k + 1], x[:, 120:344, 72:296].flip(-1), rtol=0, atol=0)
    # the last crop is the flipped bottom-right corner at Q = 512
    x = T.Resize(512)(image)
    torch.testing.assert_close(crops[-1], x[:, -224:, -224:].flip(-1), rtol=0, atol=0)
    assert grid_crops(image, sizes=(256,), flip=False).shape == (25, 3, 224, 224)


def test_multicrop_probabilities_average_posteriors(rng):
    model = randomize(SmallVGG(), seed=4)
    crops = torch.randn(7, 3, 48, 48, generator=rng)
    expected = model(crops).softmax(1).mean(0)
    got = multicrop_probabilities(model, crops, batch_size=3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert got.sum().item() == pytest.approx(1.0, abs=1e-5)
