"""predict(): rescaling, maps in original-image pixels, fusion, heatmaps and peaks, on real photos."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torch import nn

from fcnclassify.network.convert import convert
from fcnclassify.evaluation.dense import dense_evaluate
from fcnclassify.models.registry import IMAGENET, LoadedModel, load_model
from fcnclassify.network.seeded import VGG16_NARROW, randomize, vgg_features
from fcnclassify.evaluation.predict import predict

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
    prediction = predict(tiny, photo, scales=(0.5,), flip=False)
    (m,) = prediction.maps
    assert m.image_size == (520, 600) and m.input_size == (260, 300) and m.shape == (2, 3)
    # reference: the network on the image normalised by hand, resized with antialiasing by hand
    x = (torch.from_numpy(photo).permute(2, 0, 1).double() / 255
         - torch.tensor(IMAGENET.mean).double().view(3, 1, 1)) / torch.tensor(IMAGENET.std).double().view(3, 1, 1)
    x = F.interpolate(x[None], size=(260, 300), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        logits = tiny.fcn(x.float())[0]
    torch.testing.assert_close(m.logits, logits, **TOL)
    # cell (1, 2): input window x 64..288, y 32..256 -> twice that in the original image
    assert m.box(1, 2) == (128.0, 64.0, 576.0, 512.0)
    # one map, the VGG rule by hand: the mean of the logits over the cells, then softmax
    torch.testing.assert_close(prediction.probabilities.double(), logits.double().mean((1, 2)).softmax(0),
                               **TOL)


@pytest.mark.parametrize("options", [dict(scales=(0.5, 0.75)), dict(sizes=(224, 300), flip=True),
                                     dict(sizes=(256,), stride_factor=2, flip=False)])
def test_predict_is_dense_evaluate_to_the_bit(tiny, photo, options):
    """One evaluation path: predict's maps are dense_evaluate's maps of the normalised image."""
    prediction = predict(tiny, photo, **options)
    flip = options.get("flip", True)
    rest = {k: v for k, v in options.items() if k != "flip"}
    want = dense_evaluate(tiny.fcn, IMAGENET(photo), flip=flip, **rest)[0]
    assert len(prediction.maps) == len(want)
    for got, ref in zip(prediction.maps, want):
        assert (got.input_size, got.flipped, got.geometry) == (ref.input_size, ref.flipped, ref.geometry)
        torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=0)


def test_defaults_are_the_vgg_dense_protocol(tiny, photo):
    """Q = 256, 384, 512 (shorter side) with flips; average of logits, softmax, mean of posteriors."""
    prediction = predict(tiny, photo)
    assert [(m.input_size, m.flipped) for m in prediction.maps] == [
        ((256, 295), False), ((256, 295), True), ((384, 443), False), ((384, 443), True),
        ((512, 591), False), ((512, 591), True)]
    want = torch.stack([m.logits.mean((1, 2)).softmax(0) for m in prediction.maps]).mean(0)
    torch.testing.assert_close(prediction.probabilities, want, rtol=1e-6, atol=1e-7)


def test_sizes_and_scales_refuse_inputs_below_one_window(tiny, photo):
    with pytest.raises(ValueError, match="at least the network's window \\(224 pixels\\) but got 200"):
        predict(tiny, photo, sizes=(200, 256))
    with pytest.raises(ValueError, match="scale 0.1 makes the image's shorter side 52 pixels"):
        predict(tiny, photo, scales=(0.1,))
    with pytest.raises(ValueError, match="not both"):
        predict(tiny, photo, scales=(1.0,), sizes=(256,))
    with pytest.raises(ValueError, match="'pyramid'"):
        predict(tiny, photo, sizes="auto")


def test_flip_and_scales_make_one_map_each(tiny, photo):
    fresh = LoadedModel("tiny", fcn=copy.deepcopy(tiny.fcn), original=tiny.original,
                        categories=tiny.categories, normalization=IMAGENET, input_size=224)
    ran = []  # the network instances that ran (copies made to prepare it keep the hook)
    fresh.fcn.register_forward_hook(lambda module, inputs, output: ran.append(id(module)))
    prediction = predict(fresh, photo, scales=(0.5, 0.45), flip=True, pool="max", over="probs")
    assert [(m.input_size, m.flipped) for m in prediction.maps] == [
        ((260, 300), False), ((260, 300), True), ((234, 270), False), ((234, 270), True)]
    # by hand: per-cell softmax, each map's maximum per class renormalised to sum 1, mean of the maps
    per_map = [m.logits.double().softmax(0).amax((1, 2)) for m in prediction.maps]
    want = torch.stack([p / p.sum() for p in per_map]).mean(0)
    torch.testing.assert_close(prediction.probabilities.double(), want, rtol=1e-6, atol=1e-7)
    predict(fresh, photo, scales=(0.5,), flip=False)
    assert len(ran) >= 5 and len(set(ran)) == 1  # prepared once, not per map or per call


def test_small_image_is_padded_to_one_window(tiny):
    image = np.random.default_rng(1).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    prediction = predict(tiny, image, scales=(1.0,), flip=False)
    padded = torch.zeros(1, 3, 224, 224)
    padded[..., :100, :150] = IMAGENET(image)
    with torch.no_grad():
        want = tiny.original(padded)[0].softmax(0)
    torch.testing.assert_close(prediction.probabilities, want, **TOL)


def test_chelsea_is_a_cat(lite):
    prediction = predict(lite, skimage.data.chelsea(), scales=(1.0, 0.8))
    top3 = [label for _, label, _ in prediction.topk(3)]
    assert CATS & set(top3), top3


def test_pooled_linear_one_window_is_the_original_classifier(lite):
    image = cv2.resize(skimage.data.coffee(), (224, 224), interpolation=cv2.INTER_AREA)
    prediction = predict(lite, image, sizes=(224,), flip=False)
    with torch.no_grad():
        want = lite.original(lite.normalization(image)[None])[0].softmax(0)
    torch.testing.assert_close(prediction.probabilities, want, **TOL)
    assert predict(lite, skimage.data.coffee()).topk(1)[0][1] in {"espresso", "cup"}  # the defaults


def test_heatmap_is_the_per_pixel_maximum_over_maps_and_peak_its_best_window(lite):
    image = skimage.data.chelsea()
    prediction = predict(lite, image)
    assert len(prediction.maps) == 6
    cls = prediction.topk(1)[0][0]
    heat = prediction.heatmap(cls)
    assert heat.shape == (300, 451) and heat.dtype == np.float32
    # reference: every map's window probabilities on the image grid, the maximum per pixel
    grids = np.stack([m.to_image_grid([cls])[0].numpy() for m in prediction.maps])
    np.testing.assert_allclose(heat, grids.max(0), rtol=0, atol=1e-7)
    peak = prediction.peak(cls)
    # reference: the best cell of all maps, found by hand
    best = max(((k, i, j) for k, m in enumerate(prediction.maps) for i in range(m.shape[0])
                for j in range(m.shape[1])),
               key=lambda t: float(prediction.maps[t[0]].logits[:, t[1], t[2]].softmax(0)[cls]))
    m = prediction.maps[best[0]]
    assert peak["score"] == pytest.approx(float(m.logits[:, best[1], best[2]].softmax(0)[cls]))
    assert peak["size"] == min(m.input_size) and peak["flipped"] == m.flipped
    x0, y0, x1, y1 = m.box(best[1], best[2])
    assert peak["box"] == pytest.approx([max(0, x0), max(0, y0), min(451, x1), min(300, y1)], abs=0.005)
    assert 0 <= peak["x"] < 451 and 0 <= peak["y"] < 300  # inside the image, even at its edge
    assert heat.max() <= peak["score"] + 1e-6  # interpolation never exceeds the best window
    by_window = prediction.topk(3, by="window")
    assert by_window[0][2] == pytest.approx(float(prediction.window_scores().max()))


def test_heatmap_ranking_is_each_heatmaps_99th_percentile(lite):
    prediction = predict(lite, skimage.data.coffee(), sizes="pyramid", flip=False)
    top = [c for c, _, _ in prediction.topk(5, by="window")]
    # reference: the full-resolution heatmap's 99th percentile, by NumPy
    want = [np.percentile(prediction.heatmap(c), 99) for c in top]
    np.testing.assert_allclose(prediction.heatmap_scores(top).numpy(), want, rtol=0, atol=0.01)
    # the pruned top-k is the top-k of all classes' scores
    every = prediction.heatmap_scores(range(len(prediction.categories)))
    ranked = prediction.topk(5, by="heatmap")
    assert [c for c, _, _ in ranked] == every.topk(5).indices.tolist()
    np.testing.assert_allclose([v for _, _, v in ranked], every.topk(5).values.numpy(), atol=1e-6)
    assert (every <= prediction.window_scores() + 1e-6).all()  # never above the best window
    with pytest.raises(ValueError, match="by 'image', 'heatmap' or 'window'"):
        prediction.topk(3, by="area")


def enlarged(image: np.ndarray, width: int) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("name,labels", [
    ("chelsea", CATS),  # one window of fur read as a tick, of an eye as a ballpoint, outranked the cat
    ("rocket", {"missile", "projectile", "drilling platform", "space shuttle"}),
])
def test_heatmap_defaults_rank_the_object_of_a_4000_pixel_photo_first(lite, name, labels):
    """A photo that one object fills, at a phone's size: the heatmap command's defaults (the
    pyramid, not mirrored; classes by their heatmaps) put the object's classes first."""
    prediction = predict(lite, enlarged(getattr(skimage.data, name)(), 4000), sizes="pyramid", flip=False)
    ranked = [label for _, label, _ in prediction.topk(3, by="heatmap")]
    assert ranked[0] in labels and len(labels & set(ranked)) >= 2, ranked


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
    prediction = predict(tiny, photo, scales=(1.0,), flip=False, stride_factor=2)
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
