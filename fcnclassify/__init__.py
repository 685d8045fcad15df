"""fcnclassify: make pretrained image classifiers fully convolutional and run them densely.

The public surface; the modules hold the rest (``fcnclassify.geometry``, ``fcnclassify.crops``, ...).
A name is imported from its module when first used (PEP 562), so that ``import fcnclassify`` and the
command line's argument parsing import no torch, numpy or OpenCV.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING

# OpenCV reads this once, when cv2 is imported, and refuses bigger images (2**30 pixels by default)
# with a bare assertion; lift it here, before any module of the package can import cv2, so that
# read_image's `max_pixels` is the limit that speaks.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))

__version__ = "0.1.0"

_EXPORTS = {  # public name -> the module that defines it
    "fuse": "aggregate", "fuse_heatmaps": "aggregate", "global_pool": "aggregate",
    "Agreement": "agreement", "agreement": "agreement",
    "load_state_dict": "checkpoint", "load_weights": "checkpoint", "save_weights": "checkpoint",
    "FullyConvNet": "convert", "convert": "convert",
    "center_crop": "crops", "crop_map": "crops", "grid_crops": "crops", "ten_crop": "crops",
    "dense_evaluate": "dense",
    "evaluate": "evaluation",
    "Geometry": "geometry",
    "ImageError": "images", "read_image": "images",
    "activation_memory": "memory", "parse_memory": "memory",
    "LoadedModel": "models", "Normalization": "models", "available_models": "models",
    "load_model": "models",
    "dense_maps": "pipeline", "iter_images": "pipeline",
    "Prediction": "predict", "predict": "predict",
    "colorize": "outputs.render", "grid": "outputs.render", "overlay": "outputs.render",
    "ScoreMap": "scoremap",
    "shift_and_stitch": "stitch", "stitched_evaluate": "stitch",
    "tiled_forward": "tiling",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # what type checkers and editors see; tests/test_cli_fast.py keeps it equal to _EXPORTS
    from .aggregate import fuse, fuse_heatmaps, global_pool
    from .agreement import Agreement, agreement
    from .checkpoint import load_state_dict, load_weights, save_weights
    from .convert import FullyConvNet, convert
    from .crops import center_crop, crop_map, grid_crops, ten_crop
    from .dense import dense_evaluate
    from .evaluation import evaluate
    from .geometry import Geometry
    from .images import ImageError, read_image
    from .memory import activation_memory, parse_memory
    from .models import LoadedModel, Normalization, available_models, load_model
    from .outputs.render import colorize, grid, overlay
    from .pipeline import dense_maps, iter_images
    from .predict import Prediction, predict
    from .scoremap import ScoreMap
    from .stitch import shift_and_stitch, stitched_evaluate
    from .tiling import tiled_forward


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # importing fcnclassify.convert binds the module here as `convert`: the function of that
        # name stays the package's `convert`, as it was when the package imported everything
        if (name in _EXPORTS and isinstance(value, types.ModuleType)
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
