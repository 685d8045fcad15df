"""fcnclassify: make pretrained image classifiers fully convolutional and run them densely."""

from . import images as _images  # noqa: F401  (sets OpenCV's pixel limit before cv2 is imported)
from .aggregate import fuse, fuse_heatmaps, global_pool
from .checkpoint import load_state_dict, load_weights, save_weights
from .convert import FullyConvNet, convert
from .dense import dense_evaluate
from .geometry import Geometry
from .scoremap import ScoreMap

__version__ = "0.1.0"

__all__ = [
    "FullyConvNet",
    "Geometry",
    "ScoreMap",
    "__version__",
    "convert",
    "dense_evaluate",
    "fuse",
    "fuse_heatmaps",
    "global_pool",
    "load_state_dict",
    "load_weights",
    "save_weights",
]
