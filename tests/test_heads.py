"""Every convertible torchvision and timm head == the original, on seeded weights (float64).

Two references, both computed with the original model alone:

* at the canonical size (here often a small one, to keep the suite fast: a pooled head adapts),
  the converted network's one cell equals the original logits;
* on an image two strides larger each way (a 3x3 map), five window cells equal the original
  model's own head on the features of each cell's window (:func:`window_reference`: the feature
  module's output cut to the window, fed through the original's forward).

The canonical-size versions of the larger models are ``@pytest.mark.slow``. The numbers for every
torchvision model are in docs/models.md (``python -m benchmarks.model_table``).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fcnclassify import convert
from fcnclassify.network.seeded import NarrowVGG
from fcnclassify.network.zoo import seeded, window_reference

TOL = dict(rtol=1e-9, atol=1e-9)  # float64 throughout
CELLS = [(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)]


def _check(model: nn.Module, size: int, *, kind: str | None = None, stride: int = 32):
    fcn = convert(model, input_size=size)
    if kind is not None:
        assert fcn.kind == kind
    g = fcn.geometry
    assert (g.window, g.stride, g.offset) == (size, stride, 0)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        got = fcn(x)
    assert got.shape == (*want.shape, 1, 1)
    assert 0.3 < want.std() < 3  # logits of order one: the tolerance means something
    torch.testing.assert_close(got[..., 0, 0], want, **TOL)
    big = size + 2 * stride
    y = torch.randn(1, 3, big, big, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = fcn(y)[0]
    assert out.shape[-2:] == (3, 3) == g.output_size(big, big)
    for (i, j), ref in window_reference(model, y, CELLS, input_size=size).items():
        torch.testing.assert_close(out[:, i, j], ref[0], **TOL)
    return fcn


def _tv(name: str, size: int, **kwargs) -> nn.Module:
    return seeded(torchvision.models.get_model, name=name, weights=None, input_size=size,
                  dtype=torch.float64, **kwargs)


TORCHVISION = [  # (model, small canonical size, head kind): the smallest of each family
    ("resnet18", 64, "pooled_linear"),
    ("resnext50_32x4d", 64, "pooled_linear"),
    ("wide_resnet50_2", 64, "pooled_linear"),
    ("regnet_x_400mf", 64, "pooled_linear"),
    ("regnet_y_400mf", 64, "pooled_linear"),
    ("mnasnet0_5", 64, "pooled_linear"),
    ("shufflenet_v2_x0_5", 64, "pooled_linear"),
    ("mobilenet_v2", 64, "pooled_linear"),
    ("mobilenet_v3_small", 64, "pooled_mlp"),
    ("efficientnet_b0", 64, "pooled_linear"),
    ("efficientnet_v2_s", 64, "pooled_linear"),
    ("densenet121", 64, "pooled_linear"),
    ("convnext_tiny", 64, "pooled_head"),
]


@pytest.mark.parametrize("name,size,kind", TORCHVISION)
def test_torchvision_family(name, size, kind):
    _check(_tv(name, size), size, kind=kind)


def test_squeezenet_conv_head():
    """Conv-ReLU-pool head (no Linear): the 1x1 conv runs on the map, the pooling over windows."""
    fcn = _check(_tv("squeezenet1_1", 64), 64, kind="pooled_head", stride=16)
    assert fcn.pool == "avg"


@pytest.mark.parametrize("name,size", [("googlenet", 64), ("inception_v3", 139)])
def test_googlenet_inception_aux_less(name, size):
    """As the pretrained weights build them: aux heads (unused in eval) and transform_input."""
    model = _tv(name, size, transform_input=True, aux_logits=True, init_weights=False)
    _check(model, size, kind="pooled_linear")


# ---- timm


def _timm(name: str, size: int, **kwargs) -> nn.Module:
    timm = pytest.importorskip("timm")
    return seeded(timm.create_model, model_name=name, pretrained=False, input_size=size,
                  dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("name,kind", [
    ("resnet50", "pooled_linear"), ("convnext_tiny", "pooled_head"),
    ("efficientnet_b0", "pooled_linear"), ("mobilenetv3_large_100", "pooled_head"),
])
def test_timm_models(name, kind):
    _check(_timm(name, 64), 64, kind=kind)


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "catavgmax"])
def test_timm_classifier_head_pool_types(pool):
    fcn = _check(_timm("resnet18", 64, global_pool=pool), 64)
    assert fcn.pool == {"avgmax": "avg+max", "catavgmax": "avg+max"}.get(pool, pool)


def test_timm_norm_mlp_classifier_head_with_pre_logits():
    """ConvNeXt's NormMlpClassifierHead: pool, LayerNorm2d, flatten, pre_logits MLP (tanh), fc."""
    model = _timm("convnext_atto", 64, head_hidden_size=48)
    assert type(model.head).__name__ == "NormMlpClassifierHead"
    _check(model, 64, kind="pooled_head")


class TimmVggHead(NarrowVGG):
    """timm VGG's head on VGG16's body at 1/16 width: ConvMlp (fc6 as 7x7, fc7 as 1x1), then
    ClassifierHead (global average pooling, fc)."""

    def __init__(self) -> None:
        from timm.layers import ClassifierHead
        from timm.models.vgg import ConvMlp

        super().__init__()
        self.pre_logits = ConvMlp(32, 64, kernel_size=7, mlp_ratio=1.0)
        self.head = ClassifierHead(64, 10)

    def forward(self, x):
        return self.head(self.pre_logits(self.features(x)))


def test_timm_vgg_conv_mlp_narrow():
    pytest.importorskip("timm")
    model = seeded(TimmVggHead, input_size=224, dtype=torch.float64)
    fcn = _check(model, 224, kind="pooled_linear")
    assert fcn.geometry.receptive_field == 404  # VGG16's, fc6 included


@pytest.mark.slow
def test_timm_vgg16():
    _check(_timm("vgg16", 224), 224, kind="pooled_linear")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny", "efficientnet_b0", "mobilenetv3_large_100"])
def test_timm_models_at_canonical_size(name):
    _check(_timm(name, 224), 224)


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet50", 224), ("convnext_tiny", 224), ("squeezenet1_0", 224),
                                       ("efficientnet_b1", 240), ("inception_v3", 299),
                                       ("mobilenet_v3_large", 224), ("densenet121", 224)])
def test_torchvision_at_canonical_size(name, size):
    kwargs = dict(transform_input=True, aux_logits=True, init_weights=False) if name == "inception_v3" else {}
    _check(_tv(name, size, **kwargs), size, stride=16 if name.startswith("squeezenet") else 32)


# ---- refused: attention over all tokens, said before any tracing


@pytest.mark.parametrize("name,cls", [("vit_b_16", "VisionTransformer"), ("swin_t", "SwinTransformer"),
                                      ("maxvit_t", "MaxVit")])
def test_attention_models_are_refused(name, cls):
    with torch.device("meta"):  # no weights at all: the refusal reads the modules only
        model = torchvision.models.get_model(name, weights=None)
    with pytest.raises(ValueError, match=f"{cls} cannot be converted: attention over all tokens .*"
                                         "a cell cannot be computed from its window alone"):
        convert(model)


def test_timm_vit_is_refused():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    with pytest.raises(ValueError, match="VisionTransformer cannot be converted: attention over all"):
        convert(model)


# ---- the per-cell head in the rest of the package


def test_convnext_activation_cells_run_the_head_per_feature_cell():
    """cells="activation" on a pooled_head: the original head on every single feature cell."""
    model = _tv("convnext_tiny", 64)
    fcn = convert(model, input_size=64, cells="activation")
    assert fcn.kind == "pooled_head" and fcn.cells == "activation"
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        features = model.features(x)
        out = fcn(x)[0]
        assert out.shape[-2:] == features.shape[-2:] == (3, 4)
        for i, j in [(0, 0), (1, 2), (2, 3)]:
            want = model.classifier(model.avgpool(features[..., i:i + 1, j:j + 1]))[0]
            torch.testing.assert_close(out[:, i, j], want, **TOL)


def test_pooled_head_in_tiles_under_a_memory_budget_equals_untiled():
    """The per-cell head traces for the memory estimate and tiles exactly (ConvNeXt, float32)."""
    from fcnclassify.evaluation.dense import dense_evaluate
    from fcnclassify.evaluation.memory import activation_memory
    from fcnclassify.evaluation.tiling import tiled_forward

    model = seeded(torchvision.models.get_model, name="convnext_tiny", weights=None, input_size=64)
    fcn = convert(model, input_size=64)
    x = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = fcn(x)[0]
    whole = dense_evaluate(fcn, x)[0][0].logits
    assert fcn.num_classes == 1000 and whole.shape == want.shape == (1000, 7, 9)
    torch.testing.assert_close(whole, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # 2x3-cell tiles, the head run per tile
        tiled = tiled_forward(fcn, x, tile=(2, 3))[0]
    torch.testing.assert_close(tiled, want, rtol=1e-4, atol=1e-4)
    assert activation_memory(fcn, (256, 320)) > 0  # the shape-only replay traces the head


@pytest.mark.parametrize("name", ["squeezenet1_1", "convnext_tiny"])
def test_converted_file_of_a_per_cell_head_loads_back(name, tmp_path):
    """``fcnclassify convert``'s file of a pooled_head network (SqueezeNet's conv head, ConvNeXt's
    norm-MLP head) loads back: the original classifier restored from it gives the seeded
    original's logits, and the converted network its map."""
    from fcnclassify.io.checkpoint import save_weights
    from fcnclassify.models.registry import converted_metadata, load_model

    torch.save(seeded(getattr(torchvision.models, name)).state_dict(), tmp_path / "original.pth")
    model = load_model(name, weights=tmp_path / "original.pth")
    assert model.fcn.kind == "pooled_head"
    save_weights(model.fcn, tmp_path / "fcn.safetensors", metadata=converted_metadata(model))
    again = load_model(name, weights=tmp_path / "fcn.safetensors")
    x = torch.randn(1, 3, 256, 288, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again.original(x[..., :224, :224]), model.original(x[..., :224, :224]),
                                   rtol=0, atol=0)
        torch.testing.assert_close(again.fcn(x), model.fcn(x), rtol=0, atol=0)
    assert again.num_classes == model.num_classes
