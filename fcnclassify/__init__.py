"""fcnclassify: make pretrained image classifiers fully convolutional and run them densely.

The public surface; the modules hold the rest (``fcnclassify.network.geometry``, ``fcnclassify.evaluation.crops``, ...).
A name is imported from its module when first used (PEP 562), so that ``import fcnclassify`` and the
command line's argument parsing import no torch, numpy or OpenCV.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

# OpenCV reads this once, when cv2 is imported, and refuses bigger images (2**30 pixels by default)
# with a bare assertion; lift it here, before any module of the package can import cv2, so that
# read_image's `max_pixels` is the limit that speaks.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))

__version__ = "0.1.0"

_EXPORTS = {  # public name -> the module that defines it
    "fuse": "evaluation.aggregate", "fuse_heatmaps": "evaluation.aggregate",
    "global_pool": "evaluation.aggregate",
    "Agreement": "evaluation.agreement", "agreement": "evaluation.agreement",
    "center_crop": "evaluation.crops", "crop_map": "evaluation.crops",
    "grid_crops": "evaluation.crops", "ten_crop": "evaluation.crops",
    "dense_evaluate": "evaluation.dense",
    "activation_memory": "evaluation.memory", "parse_memory": "evaluation.memory",
    "dense_maps": "evaluation.pipeline", "iter_images": "evaluation.pipeline",
    "Prediction": "evaluation.predict", "predict": "evaluation.predict",
    "evaluate": "evaluation.protocols",
    "ScoreMap": "evaluation.scoremap",
    "shift_and_stitch": "evaluation.stitch", "stitched_evaluate": "evaluation.stitch",
    "tiled_forward": "evaluation.tiling",
    "ArraySink": "evaluation.streamed", "Mask": "evaluation.streamed",
    "plan_stream": "evaluation.streamed", "streamed_evaluate": "evaluation.streamed",
    "load_state_dict": "io.checkpoint", "load_weights": "io.checkpoint",
    "save_weights": "io.checkpoint",
    "ImageError": "io.images", "read_image": "io.images",
    "Slide": "io.slides", "SlideError": "io.slides", "open_slide": "io.slides",
    "tissue_mask": "io.slides",
    "LoadedModel": "models.loaded", "Normalization": "models.loaded",
    "available_models": "models.registry", "load_model": "models.registry",
    "model_spec": "models.registry", "ModelSpec": "models.registry",
    "FullyConvNet": "network.convert", "convert": "network.convert",
    "export_onnx": "network.export", "OnnxNet": "network.onnx_runtime",
    "Geometry": "network.geometry",
    "colorize": "outputs.render", "grid": "outputs.render", "overlay": "outputs.render",
    "write_dzi": "outputs.dzi", "write_viewer": "outputs.viewer",
    "write_geojson": "outputs.geojson", "write_pyramid": "outputs.ometiff",
    "ScoreStore": "outputs.scorestore",
    "SlideOptions": "outputs.slide", "slide_heatmaps": "outputs.slide",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # what type checkers and editors see; tests/test_cli_fast.py keeps it equal to _EXPORTS
    from .evaluation.aggregate import fuse, fuse_heatmaps, global_pool
    from .evaluation.agreement import Agreement, agreement
    from .evaluation.crops import center_crop, crop_map, grid_crops, ten_crop
    from .evaluation.dense import dense_evaluate
    from .evaluation.memory import activation_memory, parse_memory
    from .evaluation.pipeline import dense_maps, iter_images
    from .evaluation.predict import Prediction, predict
    from .evaluation.protocols import evaluate
    from .evaluation.scoremap import ScoreMap
    from .evaluation.stitch import shift_and_stitch, stitched_evaluate
    from .evaluation.streamed import ArraySink, Mask, plan_stream, streamed_evaluate
    from .evaluation.tiling import tiled_forward
    from .io.checkpoint import load_state_dict, load_weights, save_weights
    from .io.images import ImageError, read_image
    from .io.slides import Slide, SlideError, open_slide, tissue_mask
    from .models.loaded import LoadedModel, Normalization
    from .models.registry import ModelSpec, available_models, load_model, model_spec
    from .network.convert import FullyConvNet, convert
    from .network.export import export_onnx
    from .network.onnx_runtime import OnnxNet
    from .network.geometry import Geometry
    from .outputs.dzi import write_dzi
    from .outputs.geojson import write_geojson
    from .outputs.ometiff import write_pyramid
    from .outputs.render import colorize, grid, overlay
    from .outputs.scorestore import ScoreStore
    from .outputs.slide import SlideOptions, slide_heatmaps
    from .outputs.viewer import write_viewer


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

