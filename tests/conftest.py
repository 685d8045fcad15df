"""Shared helpers: seeded random weights with logits of order one, and small VGG-style networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights that make every layer matter: logits of order one, random BN statistics.

    torchvision initialises Linear layers with std 0.01, which makes VGG logits ~1e-3 and any
    tolerance of 1e-4 meaningless; here weights are scaled by 1/sqrt(fan_in).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(n, generator=g))
    return model.eval()


def build(factory, seed: int = 0, **kwargs) -> nn.Module:
    """``factory(**kwargs)`` with seeded weights, skipping the model's own (slow) random init."""
    with torch.device("meta"):
        model = factory(**kwargs)
    model = model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.num_batches_tracked.zero_()
    for name, _ in model.named_parameters():
        if not _covered(model, name):
            raise ValueError(f"randomize() does not initialise {name}")
    return randomize(model, seed)


def _covered(model: nn.Module, name: str) -> bool:
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return isinstance(owner, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))


def vgg_features(cfg, *, batch_norm: bool = False, padding: int = 1) -> nn.Sequential:
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


# VGG16's layer pattern at 1/16 of its width: the same geometry, a tiny fraction of the cost
VGG16_NARROW = [4, 4, "M", 8, 8, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"]


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
