"""Shared fixtures; the seeded weights and small VGG-style networks live in the package
(:mod:`fcnclassify.network.seeded`), where the benchmarks use them too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnclassify.network.convert import convert
from fcnclassify.network.seeded import VGG16_NARROW, build, randomize, vgg_features

__all__ = ["VGG16_NARROW", "build", "randomize", "vgg_features"]  # for the tests' `from conftest import`


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def vgg_fcn():  # test_stitch.py has its own, with other widths
    """VGG16's layers (3x3 convs with padding 1, five max-pools, fc6 as a 7x7 conv) at 1/16 width."""
    torch.manual_seed(0)
    head = [nn.Flatten(), nn.Linear(32 * 7 * 7, 24), nn.ReLU(), nn.Linear(24, 6)]
    return convert(randomize(nn.Sequential(vgg_features(VGG16_NARROW), *head)))
