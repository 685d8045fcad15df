"""Geometry from the layers against hand-computed map sizes, boxes, and the empirical receptive field."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from conftest import VGG16_NARROW, randomize, vgg_features
from fcnclassify import convert
from fcnclassify.network.geometry import Geometry, SizeOp


class NarrowVGG16(nn.Module):
    """VGG16's layers at 1/16 width: the geometry of VGG16 at a fraction of the cost."""

    def __init__(self, padding: int = 1):
        super().__init__()
        self.features = vgg_features(VGG16_NARROW, padding=padding)
        self.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture(scope="module")
def vgg16():
    return convert(torchvision.models.vgg16().eval())


@pytest.fixture(scope="module")
def alexnet():
    return convert(torchvision.models.alexnet().eval())


def test_vgg16_facts(vgg16):
    g = vgg16.geometry
    assert (g.window, g.stride, g.offset, g.receptive_field) == (224, 32, 0, 404)
    assert g.center == 112.0 and g.min_input == 224 and not g.global_context


def _alexnet_size(n: int) -> int:
    """AlexNet's layers written out by hand: conv 11/4 pad 2, pool 3/2, conv 5 pad 2, pool 3/2,
    three conv 3 pad 1, pool 3/2, fc6 as a 6x6 conv."""
    n = (n + 4 - 11) // 4 + 1
    n = (n - 3) // 2 + 1
    n = (n - 3) // 2 + 1
    n = (n - 3) // 2 + 1
    return n - 6 + 1


SIZES = [224, 225, 240, 255, 256, 287, 288, 300, 384, 400, 448, 500, 512, 777, 1024]


def test_map_sizes_by_hand(vgg16, alexnet):
    for h in SIZES:
        for w in (224, 333, 480):
            assert vgg16.geometry.output_size(h, w) == ((h - 224) // 32 + 1, (w - 224) // 32 + 1)
            assert alexnet.geometry.output_size(h, w) == (_alexnet_size(h), _alexnet_size(w))
    assert alexnet.geometry.min_input == 223  # 222 -> 5x5 pool5 features, one short of fc6's 6x6
    assert _alexnet_size(222) == 0 and _alexnet_size(223) == 1


@pytest.mark.parametrize("name", ["vgg16", "alexnet", "resnet18", "mobilenet_v2", "densenet121"])
def test_map_sizes_match_the_network(name):
    """output_size() against the network itself, run on meta tensors for many sizes."""
    fcn = convert(getattr(torchvision.models, name)().eval()).to("meta")
    for h, w in [(224, 224), (227, 301), (256, 320), (383, 290), (512, 400), (641, 225)]:
        out = fcn(torch.empty(1, 3, h, w, device="meta"))
        assert tuple(out.shape[-2:]) == fcn.geometry.output_size(h, w), (h, w)


def test_boxes_by_hand(vgg16, alexnet):
    assert vgg16.geometry.box(0, 0) == (0, 0, 224, 224)
    assert vgg16.geometry.box(2, 5) == (160, 64, 384, 288)
    assert alexnet.geometry.box(1, 3) == (96, 32, 320, 256)
    # AlexNet's receptive field (355) is centred at 111.5 (continuous), inside its 224 window
    assert alexnet.geometry.receptive_field == 355 and alexnet.geometry.center == 111.5


def test_resnet_activation_cells_are_stride_tiles():
    g = convert(torchvision.models.resnet18().eval(), cells="activation").geometry
    assert (g.window, g.stride, g.receptive_field) == (32, 32, 435)
    assert g.center == 0.5  # cell (0, 0) is centred on pixel 0: every layer pads symmetrically
    assert g.box(0, 0) == (-15, -15, 17, 17)


def test_resnet_window_cells_are_224_crops():
    g = convert(torchvision.models.resnet18().eval()).geometry
    # 7x7 activation cells at stride 1: 435 + 6 * 32 of receptive field, centred on cell 3's 96.5
    assert (g.window, g.stride, g.offset, g.receptive_field, g.center) == (224, 32, 0, 627, 96.5)
    assert g.box(0, 0) == (0, 0, 224, 224) and g.box(1, 2) == (64, 32, 288, 256)
    assert g.output_size(224, 224) == (1, 1) and g.output_size(400, 600) == (13 - 6, 19 - 6)


def test_squeeze_excitation_is_global_context():
    assert convert(torchvision.models.efficientnet_b0().eval()).geometry.global_context
    assert not convert(torchvision.models.resnet18().eval()).geometry.global_context


def _linearised(model: nn.Module) -> nn.Module:
    """Same geometry, linear: ReLU -> Identity, max -> average pooling (dense gradients)."""
    for name, m in model.named_children():
        if isinstance(m, nn.ReLU):
            setattr(model, name, nn.Identity())
        elif isinstance(m, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        else:
            _linearised(m)
    return model


@pytest.mark.parametrize("build", [lambda: NarrowVGG16(), lambda: torchvision.models.alexnet(num_classes=4)])
def test_receptive_field_matches_gradient(build):
    """Nonzero gradient of one interior cell w.r.t. the input spans exactly the receptive field."""
    fcn = convert(randomize(_linearised(build()))).double()
    g = fcn.geometry
    # the first cell whose field lies inside the image, and an image with room on the far side
    i = j = max(0, math.ceil((g.receptive_field / 2 - g.center) / g.stride))
    size = math.ceil(g.cell_center(i) + g.receptive_field / 2) + g.stride
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = fcn(x)
    out[0, :, i, j].sum().backward()
    nonzero = x.grad[0].abs().sum(0) > 0
    rows = torch.nonzero(nonzero.any(1)).flatten()
    cols = torch.nonzero(nonzero.any(0)).flatten()
    assert int(rows[-1] - rows[0]) + 1 == g.receptive_field
    assert int(cols[-1] - cols[0]) + 1 == g.receptive_field
    # the field is centred where the geometry says (continuous coordinates)
    assert (rows[0] + rows[-1] + 1) / 2 == g.field_center(i)
    assert (cols[0] + cols[-1] + 1) / 2 == g.field_center(j)


def test_too_small_input_raises(vgg16):
    with pytest.raises(ValueError, match="smaller than one window: expected at least 224x224"):
        vgg16(torch.empty(1, 3, 223, 300, device="meta"))


def test_size_op_ceil_mode_matches_torch():
    for n in range(3, 40):
        for k, s, p in [(3, 2, 0), (3, 2, 1), (2, 2, 0), (5, 3, 2)]:
            op = SizeOp(kernel=k, stride=s, pad_before=p, pad_after=p, ceil_mode=True)
            pool = nn.MaxPool2d(k, s, p, ceil_mode=True)
            assert op(n) == pool(torch.empty(1, 1, n, n)).shape[-1], (n, k, s, p)


def test_input_size_for_inverts_output_size(alexnet):
    g: Geometry = alexnet.geometry
    for cells in range(1, 12):
        h, w = g.input_size_for(cells, cells + 2)
        assert g.output_size(h, w) == (cells, cells + 2)
        assert g.output_size(h - 1, w - 1) == (cells - 1, cells + 1)
