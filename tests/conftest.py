"""Shared fixtures; the seeded weights and small VGG-style networks live in the package
(:mod:`fcnclassify.network.seeded`), where the benchmarks use them too."""

from __future__ import annotations

import pytest
import torch

from fcnclassify.network.seeded import VGG16_NARROW, build, randomize, vgg_features

__all__ = ["VGG16_NARROW", "build", "randomize", "vgg_features"]  # for the tests' `from conftest import`


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
