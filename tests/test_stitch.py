"""Shift-and-stitch cells == dense evaluation of the shifted inputs; offset pooling == shift-and-stitch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import randomize, vgg_features
from fcnclassify import convert, dense_evaluate
from fcnclassify.evaluation.stitch import (interleave, offset_pooling, shift_and_stitch, stitched_evaluate,
                                stitched_geometry)

EXACT = dict(rtol=0.0, atol=1e-5)
# VGG16's geometry (3x3 convs, five 2x2 max-pools, fc6 as a 7x7 conv: window 224, stride 32) at
# a tiny width, with and without the convolutions' zero padding
NARROW = [4, "M", 4, "M", 8, "M", 8, "M", 8, "M"]


def _fcn(padding: int):
    torch.manual_seed(0)
    features = vgg_features(NARROW, padding=padding)
    # without padding each 3x3 conv eats 2 pixels: a 316 input gives the same 7x7 map
    model = nn.Sequential(features, nn.Flatten(), nn.Linear(8 * 7 * 7, 12), nn.ReLU(),
                          nn.Linear(12, 5))
    return convert(randomize(model), input_size=224 if padding else 316)


@pytest.fixture(scope="module")
def vgg_fcn():
    return _fcn(padding=1)


def _input(h: int, w: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("factor", [2, 4])
def test_stitched_cells_are_dense_cells_of_shifted_inputs(vgg_fcn, factor):
    x = _input(331, 290, n=2)
    got = shift_and_stitch(vgg_fcn, x, factor=factor)
    d = 32 // factor
    with torch.no_grad():
        for a in range(factor):
            for b in range(factor):
                want = vgg_fcn(x[..., a * d:, b * d:])  # the naive reference: a plain forward
                torch.testing.assert_close(got[..., a::factor, b::factor], want, **EXACT)


@pytest.mark.parametrize("factor,size", [(2, (331, 290)), (4, (331, 290)), (4, (300, 999)), (2, (241, 257))])
def test_stitched_size_is_hand_computed(vgg_fcn, factor, size):
    """Stride 32 / k: floor((H - 224) / (32 / k)) + 1 cells, as a network of that stride would give."""
    d = 32 // factor
    got = shift_and_stitch(vgg_fcn, _input(*size), factor=factor)
    want = ((size[0] - 224) // d + 1, (size[1] - 224) // d + 1)
    assert got.shape[-2:] == want
    assert stitched_geometry(vgg_fcn.geometry, factor).output_size(*size) == want


def test_stitched_geometry_places_cells_at_the_finer_stride(vgg_fcn):
    """Cell I of the stitched map is cell I // k of the copy shifted by (I % k) * d: its window starts at I * d."""
    g = stitched_geometry(vgg_fcn.geometry, 4)
    assert (g.stride, g.window, g.receptive_field) == (8, 224, vgg_fcn.geometry.receptive_field)
    assert g.box(5, 3) == (24, 40, 24 + 224, 40 + 224)
    assert g.cell_center(5) == vgg_fcn.geometry.cell_center(1) + 8


def test_factor_one_is_the_dense_map(vgg_fcn):
    x = _input(300, 270)
    want = dense_evaluate(vgg_fcn, x)[0][0].logits
    torch.testing.assert_close(shift_and_stitch(vgg_fcn, x, factor=1)[0], want, **EXACT)


def test_stitched_evaluate_with_flip_and_tiles(vgg_fcn):
    """Flipped maps flipped back: a cell of the stitched flipped map is the mirrored cell of the
    stitched map of the mirrored image; tiling inside changes nothing."""
    x = _input(300, 300)
    maps = stitched_evaluate(vgg_fcn, x, factor=2, flip=True, max_memory=6_000_000)
    plain, flipped = maps[0]
    torch.testing.assert_close(plain.logits, shift_and_stitch(vgg_fcn, x, factor=2)[0], **EXACT)
    torch.testing.assert_close(flipped.logits, shift_and_stitch(vgg_fcn, x.flip(-1), factor=2)[0].flip(-1),
                               **EXACT)
    assert plain.geometry.stride == 16 and plain.shape == ((300 - 224) // 16 + 1,) * 2


def test_offset_pooling_equals_shift_and_stitch_without_padding():
    """No zero padding: the pre-pool features of a shifted input are a crop of the features."""
    fcn = _fcn(padding=0)
    x = _input(400, 371)
    want = shift_and_stitch(fcn, x, factor=2)
    torch.testing.assert_close(offset_pooling(fcn, x), want, **EXACT)
    maps = stitched_evaluate(fcn, x, factor=2, method="offset_pool")
    torch.testing.assert_close(maps[0][0].logits, want[0], **EXACT)


def test_offset_pooling_with_padding_equals_inside(vgg_fcn):
    """With padding, equal where the shifted input's padding cannot reach: away from the top/left."""
    x = _input(480, 450)
    want = shift_and_stitch(vgg_fcn, x, factor=2)
    got = offset_pooling(vgg_fcn, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got[..., 1::2, 1::2][..., 1:, 1:], want[..., 1::2, 1::2][..., 1:, 1:], **EXACT)
    torch.testing.assert_close(got[..., ::2, ::2], want[..., ::2, ::2], **EXACT)  # no shift: identical
    assert (got - want).abs().max() > 1e-3  # the shifted copies' own border does differ


def test_interleave_by_hand():
    maps = [[torch.full((2, 2), 0.0), torch.full((2, 1), 1.0)], [torch.full((1, 2), 2.0), torch.full((1, 1), 3.0)]]
    want = torch.tensor([[0, 1, 0], [2, 3, 2], [0, 1, 0]], dtype=torch.float32)
    torch.testing.assert_close(interleave(maps), want)


def test_rejects_bad_factor_and_small_input(vgg_fcn):
    with pytest.raises(ValueError, match="divides the stride 32 but got 3"):
        shift_and_stitch(vgg_fcn, _input(300, 300), factor=3)
    with pytest.raises(ValueError, match="at least 240x240"):
        shift_and_stitch(vgg_fcn, _input(230, 300), factor=2)
