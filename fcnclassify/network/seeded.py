"""Seeded random weights that make every layer matter, and small VGG-style networks.

For exactness checks without a download: the tests compare converted networks with their originals
under these weights, and ``benchmarks/`` times registry models with them. torchvision initialises
Linear layers with std 0.01, which makes VGG logits ~1e-3 and a tolerance of 1e-4 meaningless; here
weights are scaled by sqrt(2 / fan_in), so logits are of order one and a ranking means something.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["VGG16_NARROW", "BatchNormHead", "FlattenInClassifier", "NarrowVGG", "ViewSize", "build",
           "randomize", "vgg_features"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)

# VGG16's layer pattern at 1/16 of its width: the same geometry, a tiny fraction of the cost
VGG16_NARROW = [4, 4, "M", 8, 8, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every Conv2d, Linear and BatchNorm layer seeded random weights; returns it in eval mode.

    Conv and Linear weights ~ N(0, 2 / fan_in), biases ~ N(0, 0.1^2); BatchNorm scales near 1,
    shifts and running statistics random, so that folding or dropping a BatchNorm would show.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, _NORMS):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(n, generator=g))
    return model.eval()


def build(factory: Callable[..., nn.Module], seed: int = 0, **kwargs) -> nn.Module:
    """``factory(**kwargs)`` with :func:`randomize`'s weights, skipping the model's own (slow) init.

    Raises:
        ValueError: The model has a parameter that :func:`randomize` does not set.
    """
    with torch.device("meta"):
        model = factory(**kwargs)
    model = model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, _NORMS):
            m.num_batches_tracked.zero_()
    for name, _ in model.named_parameters():
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if not isinstance(owner, (nn.Conv2d, nn.Linear, *_NORMS)):
            raise ValueError(f"expected parameters of Conv2d, Linear or BatchNorm layers only, but "
                             f"randomize() does not initialise {name} ({type(owner).__name__})")
    return randomize(model, seed)


def vgg_features(cfg: list[int | str], *, batch_norm: bool = False, padding: int = 1) -> nn.Sequential:
    """A VGG body from its configuration: 3x3 convolutions of ``v`` channels, ``"M"`` a 2x2 max pool."""
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.Conv2d(c, v, 3, padding=padding))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
    return nn.Sequential(*layers)


class NarrowVGG(nn.Module):
    """VGG16's body at 1/16 of its width (window 224, stride 32, 32 channels); heads below."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg_features(VGG16_NARROW)


class FlattenInClassifier(NarrowVGG):
    """Flatten and AdaptiveAvgPool2d inside the classifier Sequential, as people write them."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(), nn.Linear(32 * 49, 64), nn.ReLU(True),
            nn.Dropout(0.5), nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ViewSize(NarrowVGG):
    """The features flattened by ``x.view(x.size(0), -1)`` in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(32 * 49, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


class BatchNormHead(NarrowVGG):
    """A fine-tuned head: more FC layers, BatchNorm1d between them, Dropout anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(32 * 49, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(48, 40), nn.ReLU(), nn.BatchNorm1d(40), nn.Linear(40, 24), nn.GELU(),
            nn.Linear(24, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))
