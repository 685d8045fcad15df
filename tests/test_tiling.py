"""Tiled evaluation == untiled evaluation, cell for cell, with many seams; memory estimate and budget."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from conftest import VGG16_NARROW, randomize, vgg_features
from fcnclassify import convert, dense_evaluate
from fcnclassify.evaluation import tiling
from fcnclassify.evaluation.memory import activation_memory, format_bytes, parse_memory
from fcnclassify.evaluation.tiling import choose_tile, plan_tiles, tiled_forward

EXACT = dict(rtol=0.0, atol=1e-4)


def _narrow_resnet() -> nn.Module:
    """ResNet-18's layer pattern at 8-16 channels: 7x7/2 stem, 3x3/2 max-pool, strided basic blocks
    with 1x1/2 shortcuts, global average pooling; a 195 px receptive field at stride 32."""
    def block(cin, cout, stride):
        shortcut = None if stride == 1 else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                          nn.BatchNorm2d(cout))
        return BasicBlock(cin, cout, stride, shortcut)

    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), block(8, 8, 1), block(8, 16, 2), block(16, 16, 2),
                         block(16, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


@pytest.fixture(scope="module")
def resnet_fcn():
    torch.manual_seed(0)
    fcn = convert(randomize(_narrow_resnet(), seed=1))
    # a window cell pools 7x7 feature cells: 195 + 6 * 32 pixels of receptive field
    assert (fcn.kind, fcn.geometry.stride, fcn.geometry.receptive_field) == ("pooled_linear", 32, 387)
    return fcn


def _input(h: int, w: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _interior_crops(fcn, size, tile) -> int:
    """Tiles whose crop touches no image border: their cells are computed without any padding."""
    h, w = size
    return sum(t.crop[0] > 0 and t.crop[1] < h and t.crop[2] > 0 and t.crop[3] < w
               for t in plan_tiles(fcn.geometry, size, tile))


@pytest.mark.parametrize("size,tile", [((301, 455), (1, 1)), ((301, 455), (2, 3)),
                                       ((449, 387), (2, 2)), ((224, 999), (1, 5))])
def test_vgg_tiled_equals_untiled(vgg_fcn, size, tile):
    """Sizes not a multiple of 32, non-square, tiles of one cell: a seam between every pair of cells."""
    x = _input(*size, n=2)
    with torch.no_grad():
        want = vgg_fcn(x)
    got = tiled_forward(vgg_fcn, x, tile=tile)
    assert want.shape[-2:] == ((size[0] - 224) // 32 + 1, (size[1] - 224) // 32 + 1)
    assert len(list(plan_tiles(vgg_fcn.geometry, size, tile))) > 1
    torch.testing.assert_close(got, want, **EXACT)


def test_vgg_tiles_are_real_crops(vgg_fcn):
    """On a large image most crops are strictly inside: equality is not the whole image in disguise."""
    size = (1100, 830)
    assert _interior_crops(vgg_fcn, size, (4, 4)) >= 2
    x = _input(*size)
    with torch.no_grad():
        want = vgg_fcn(x)
    torch.testing.assert_close(tiled_forward(vgg_fcn, x, tile=(4, 4)), want, **EXACT)
    for t in plan_tiles(vgg_fcn.geometry, size, (4, 4)):  # crops start on the stride's grid
        assert t.crop[0] % 32 == 0 and t.crop[2] % 32 == 0


@pytest.mark.parametrize("size,tile", [((700, 900), (2, 3)), ((677, 803), (3, 2))])
def test_resnet_tiled_equals_untiled(resnet_fcn, size, tile):
    """Padding in every layer, strided 1x1 shortcuts, a max-pool after the stem, borders included."""
    assert _interior_crops(resnet_fcn, size, tile) >= 1
    x = _input(*size, seed=3)
    with torch.no_grad():
        want = resnet_fcn(x)
    got = tiled_forward(resnet_fcn, x, tile=tile)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, **EXACT)


def test_torchvision_resnet18_tiled_equals_untiled():
    """The real ResNet-18 (random weights) at a small size: every tile is a seam against a border."""
    fcn = convert(randomize(torchvision.models.resnet18(num_classes=4)))
    x = _input(230, 290)
    with torch.no_grad():
        want = fcn(x)
    torch.testing.assert_close(tiled_forward(fcn, x, tile=(2, 3)), want, **EXACT)


def test_ceil_mode_pooling_tiled_equals_untiled():
    """Max-pools with ceil_mode=True (the last window runs past the border) and no conv padding."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         nn.Conv2d(8, 8, 3, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True),
                         nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True))
    fcn = convert(randomize(nn.Sequential(body, nn.Flatten(), nn.Linear(8 * 5 * 5, 4))), input_size=40)
    assert fcn.geometry.stride == 8
    x = _input(203, 157)
    with torch.no_grad():
        want = fcn(x)
    torch.testing.assert_close(tiled_forward(fcn, x, tile=(2, 3)), want, **EXACT)


def test_a_halo_too_small_is_caught(vgg_fcn, monkeypatch):
    """Control: with a halo 52 px short the seams are wrong, so the tests above bite."""
    small = dataclasses.replace(vgg_fcn.geometry, receptive_field=vgg_fcn.geometry.receptive_field - 104)
    monkeypatch.setattr(vgg_fcn, "geometry", small)
    x = _input(480, 480)
    with torch.no_grad():
        want = vgg_fcn(x)
    got = tiled_forward(vgg_fcn, x, tile=(2, 2))
    assert (got - want).abs().max() > 1e-2


def test_dense_evaluate_with_max_memory(vgg_fcn):
    """The public path: dense_evaluate(max_memory=...) with flips, against untiled. The budget holds
    the image, its copies and the maps: the flipped pass, which holds the first map and a flipped
    copy besides, gets less room than the first and is tiled."""
    x = _input(600, 700)
    image, logits = x.numel() * 4, 6 * 12 * 15 * 4
    # first pass: the image, its channels-last copy, the map; the flipped one holds a flipped copy
    # and the first map besides: half an image too many for one pass
    budget = activation_memory(vgg_fcn, (600, 700)) + 2.5 * image + 2 * logits
    want = dense_evaluate(vgg_fcn, x, flip=True)
    calls = []
    real = tiling.choose_tile
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiling, "choose_tile", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tiling.SlowTilingWarning)
            got = dense_evaluate(vgg_fcn, x, flip=True, max_memory=int(budget))
    whole = vgg_fcn.geometry.output_size(600, 700)
    assert len(calls) == 2 and calls[0] == whole and calls[1] != whole
    for a, b in zip(want[0], got[0]):
        torch.testing.assert_close(b.logits, a.logits, **EXACT)


def test_dense_tiles_automatically_when_memory_is_short(vgg_fcn, monkeypatch):
    """With little memory available dense_evaluate tiles by itself, and gets the same map."""
    x = _input(1024, 1100)
    want = dense_evaluate(vgg_fcn, x)[0][0].logits
    calls = []
    real = tiling.tiled_forward
    monkeypatch.setattr(tiling, "tiled_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    # half of it (the automatic budget) holds the image, its channels-last copy and a 500 px pass
    room = 2 * (activation_memory(vgg_fcn, (500, 500)) + 2 * x.numel() * 4)
    monkeypatch.setattr(tiling, "available_memory", lambda device: room)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tiling.SlowTilingWarning)
        got = dense_evaluate(vgg_fcn, x)[0][0].logits
    assert calls == [1]
    torch.testing.assert_close(got, want, **EXACT)
    monkeypatch.setattr(tiling, "available_memory", lambda device: 10**12)
    assert not tiling.needs_tiling(vgg_fcn, x)


def _least_work(fcn, size, budget):
    """Brute force: every tile shape, its real crops, the largest crop's estimate; the least work."""
    out_h, out_w = fcn.geometry.output_size(*size)
    best = None
    for th in range(1, out_h + 1):
        for tw in range(1, out_w + 1):
            crops = [t.crop for t in plan_tiles(fcn.geometry, size, (th, tw))]
            memory = max(activation_memory(fcn, (c[1] - c[0], c[3] - c[2])) for c in crops)
            work = sum((c[1] - c[0]) * (c[3] - c[2]) for c in crops)
            if memory <= budget and (best is None or work < best):
                best = work
    return best


@pytest.mark.parametrize("size,budget", [((1100, 830), "6MB"), ((1100, 830), "9MB"),
                                         ((700, 1300), "7MB"), ((1100, 830), "1GB")])
def test_choose_tile_has_the_least_work_within_budget(vgg_fcn, size, budget):
    """Against every tile shape: the planner's tiles fit and no fitting shape does less work."""
    budget = parse_memory(budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tiling.SlowTilingWarning)
        tile = choose_tile(vgg_fcn, size, budget)
    crops = [t.crop for t in plan_tiles(vgg_fcn.geometry, size, tile)]
    assert max(activation_memory(vgg_fcn, (c[1] - c[0], c[3] - c[2])) for c in crops) <= budget
    assert sum((c[1] - c[0]) * (c[3] - c[2]) for c in crops) == _least_work(vgg_fcn, size, budget)
    if budget > 10**8:
        assert tile == vgg_fcn.geometry.output_size(*size)  # room for the whole map: one pass


def test_choose_tile_refuses_with_the_smallest_budget_that_works(vgg_fcn):
    size = (2000, 1500)
    with pytest.raises(ValueError, match=r"expected max_memory of at least .* but got 1000 B"):
        choose_tile(vgg_fcn, size, 1000)


def test_activation_memory_hand_computed():
    """conv(3->8) -> in-place ReLU -> conv(8->4): peak = input + 8-channel map + 4-channel map."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    fcn = convert(net, input_size=10)
    h, w = 50, 70
    # input, conv1 out, conv2 out alive together, + the 1x1 head conv's output while conv2's is alive;
    # plus the transient weight copy of the convolution running at the peak
    peak = max((3 + 8) * h * w * 4 + 8 * 3 * 9 * 4,  # conv1
               (8 + 4) * h * w * 4 + 4 * 8 * 4,  # conv2 (the input is freed after conv1)
               (4 + 2) * h * w * 4 + 2 * 4 * 4)  # head conv
    from fcnclassify.evaluation import memory

    assert activation_memory(fcn, (h, w)) == int(peak * memory.SAFETY)
    assert activation_memory(copy.deepcopy(fcn).to(torch.bfloat16), (h, w), batch=3) == int(
        max((3 + 8) * h * w * 3 * 2 + 8 * 3 * 9 * 2, (8 + 4) * h * w * 3 * 2 + 4 * 8 * 2,
            (4 + 2) * h * w * 3 * 2 + 2 * 4 * 2) * memory.SAFETY)


@pytest.mark.parametrize("text,value", [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5g", 1.5e9),
                                        ("4096", 4096), (" 3 kib ", 3072), (10, 10)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "2 GBs", "-1GB", "0", "GB", "1e9"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError, match="expected"):
        parse_memory(text)


def test_global_context_is_refused():
    """Squeeze-and-excitation pools over the whole image: a tile cannot see what the cell sees."""
    net = torchvision.models.mobilenet_v3_small(num_classes=3)
    fcn = convert(randomize(net))
    assert fcn.geometry.global_context
    with pytest.raises(ValueError, match="cannot be tiled exactly"):
        tiled_forward(fcn, _input(300, 300), tile=1)
    assert not tiling.needs_tiling(fcn, _input(1100, 1100))


def test_format_bytes():
    assert format_bytes(1536 * 2**20) == "1.50 GiB"
    assert format_bytes(512) == "512 B"
