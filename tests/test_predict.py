"""predict(): rescaling, maps in original-image pixels, fusion, heatmaps and peaks, on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from torch import nn

from conftest import VGG16_NARROW, randomize, vgg_features
from fcnclassify.aggregate import fuse, fuse_heatmaps
from fcnclassify.convert import convert
from fcnclassify.models import IMAGENET, LoadedModel, load_model
from fcnclassify.predict import predict

TOL = dict(rtol=1e-4, atol=1e-4)
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


class TinyVGG(nn.Module):
    """VGG16's geometry (window 224, stride 32) at 1/16 of its width, with a small FC head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg_features(VGG16_NARROW)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    original = randomize(TinyVGG(), seed=7)
    return LoadedModel("tiny", fcn=convert(original), original=original,
                       categories=[f"c{i}" for i in range(5)], normalization=IMAGENET, input_size=224)


@pytest.fixture(scope="module")
def lite() -> LoadedModel:
    return load_model("efficientnet_lite0")


@pytest.fixture
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (520, 600, 3), dtype=np.uint8)


def test_rescaled_map_is_in_original_pixels(tiny, photo):
    prediction = predict(tiny, photo, scales=(0.5,))
    (m,) = prediction.maps
    assert m.image_size == (520, 600) and m.input_size == (260, 300) and m.shape == (2, 3)
    # reference: the network on the area-resized image, normalised by hand
    resized = cv2.resize(photo, (300, 260), interpolation=cv2.INTER_AREA)
    x = (torch.from_numpy(resized).permute(2, 0, 1).double() / 255
         - torch.tensor(IMAGENET.mean).double().view(3, 1, 1)) / torch.tensor(IMAGENET.std).double().view(3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m.logits, tiny.fcn(x[None].float())[0], **TOL)
    # cell (1, 2): input window x 64..288, y 32..256 -> twice that in the original image
    assert m.box(1, 2) == (128.0, 64.0, 576.0, 512.0)
    torch.testing.assert_close(prediction.probabilities, fuse(prediction.maps), rtol=0, atol=0)


def test_one_window_image_is_the_original_classifier(tiny, photo):
    image = photo[:224, :224]
    prediction = predict(tiny, image, flip=True)
    with torch.no_grad():
        x = IMAGENET(image)[None]
        want = (tiny.original(x)[0].softmax(0) + tiny.original(x.flip(-1))[0].softmax(0)) / 2
    torch.testing.assert_close(prediction.probabilities, want, **TOL)


def test_flip_and_scales_make_one_map_each(tiny, photo):
    prediction = predict(tiny, photo, scales=(0.5, 0.45), flip=True, pool="max", over="probs")
    assert [(m.input_size, m.flipped) for m in prediction.maps] == [
        ((260, 300), False), ((260, 300), True), ((234, 270), False), ((234, 270), True)]
    torch.testing.assert_close(prediction.probabilities,
                               fuse(prediction.maps, pool="max", over="probs"), rtol=0, atol=0)
    assert len(tiny._prepared) == 1  # the network was prepared once, not per scale


def test_small_image_is_padded_to_one_window(tiny):
    image = np.random.default_rng(1).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    prediction = predict(tiny, image)
    padded = torch.zeros(1, 3, 224, 224)
    padded[..., :100, :150] = IMAGENET(image)
    with torch.no_grad():
        want = tiny.original(padded)[0].softmax(0)
    torch.testing.assert_close(prediction.probabilities, want, **TOL)


def test_chelsea_is_a_cat(lite):
    prediction = predict(lite, skimage.data.chelsea(), scales=(1.0, 0.8))
    top3 = [label for _, label, _ in prediction.topk(3)]
    assert CATS & set(top3), top3


def test_pooled_linear_prediction_is_the_original_classifier(lite):
    image = skimage.data.coffee()
    prediction = predict(lite, image)
    with torch.no_grad():
        want = lite.original(lite.normalization(image)[None])[0].softmax(0)
    torch.testing.assert_close(prediction.probabilities, want, **TOL)
    assert prediction.topk(1)[0][1] in {"espresso", "cup"}


def test_heatmap_and_peak_agree_with_the_map(lite):
    prediction = predict(lite, skimage.data.chelsea())
    (m,) = prediction.maps
    cls = prediction.topk(1)[0][0]
    heat = prediction.heatmap(cls)
    assert heat.shape == (300, 451) and heat.dtype == np.float32
    np.testing.assert_allclose(heat, fuse_heatmaps(prediction.maps, [cls])[0].numpy(), rtol=0, atol=0)
    peak = prediction.peak(cls)
    i, j, score = m.peak(cls)
    assert peak["score"] == pytest.approx(score)
    ys, xs = m.centers()
    assert (peak["x"], peak["y"]) == (xs[j], ys[i])
    # bilinear interpolation between cell centres: the hottest pixel is next to the peak's centre
    hy, hx = np.unravel_index(heat.argmax(), heat.shape)
    assert abs(hx + 0.5 - peak["x"]) <= 1 and abs(hy + 0.5 - peak["y"]) <= 1
    assert heat.max() == pytest.approx(score, abs=0.02)
    x0, y0, x1, y1 = m.box(i, j)
    assert peak["box"] == pytest.approx([max(0, x0), max(0, y0), min(451, x1), min(300, y1)])
    assert peak["box"][0] <= peak["x"] <= peak["box"][2]


def test_bad_input(tiny, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        predict(tiny, np.zeros((300, 300, 3), np.float32))
    with pytest.raises(ValueError, match="at most 1000 pixels"):
        predict(tiny, np.zeros((300, 300, 3), np.uint8), max_pixels=1000)
    with pytest.raises(ValueError, match="scale"):
        predict(tiny, np.zeros((300, 300, 3), np.uint8), scales=(0.0,))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        predict(tiny, tmp_path / "empty.jpg")


def test_stride_factor_gives_the_shifted_evaluations(tiny, photo):
    """--stride-factor 2: cell (2i + a, 2j + b) is the dense map of the image shifted by (16a, 16b)."""
    prediction = predict(tiny, photo, stride_factor=2)
    (m,) = prediction.maps
    assert m.geometry.stride == 16
    assert m.shape == ((520 - 224) // 16 + 1, (600 - 224) // 16 + 1)
    x = tiny.normalization(photo)[None]
    with torch.no_grad():
        for a in (0, 1):
            for b in (0, 1):
                shifted = tiny.fcn(x[:, :, 16 * a:, 16 * b:])[0]
                torch.testing.assert_close(m.logits[:, a::2, b::2], shifted[:, :m.logits[:, a::2, b::2].shape[1],
                                           :m.logits[:, a::2, b::2].shape[2]], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="stride factor >= 1"):
        predict(tiny, photo, stride_factor=0)
