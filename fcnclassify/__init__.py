"""fcnclassify: make pretrained image classifiers fully convolutional and run them densely.

The public surface; the modules hold the rest (``fcnclassify.geometry``, ``fcnclassify.crops``, ...).
"""

from . import images as _images  # noqa: F401  (sets OpenCV's pixel limit before cv2 is imported)

__version__ = "0.1.0"

from .aggregate import fuse, fuse_heatmaps, global_pool  # noqa: E402
from .agreement import Agreement, agreement  # noqa: E402
from .checkpoint import load_state_dict, load_weights, save_weights  # noqa: E402
from .convert import FullyConvNet, convert  # noqa: E402
from .crops import center_crop, crop_map, grid_crops, ten_crop  # noqa: E402
from .dense import dense_evaluate  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .geometry import Geometry  # noqa: E402
from .images import ImageError, read_image  # noqa: E402
from .memory import activation_memory, parse_memory  # noqa: E402
from .models import LoadedModel, Normalization, available_models, load_model  # noqa: E402
from .pipeline import dense_maps, iter_images  # noqa: E402
from .predict import Prediction, predict  # noqa: E402
from .outputs.render import colorize, grid, overlay  # noqa: E402
from .scoremap import ScoreMap  # noqa: E402
from .stitch import shift_and_stitch, stitched_evaluate  # noqa: E402
from .tiling import tiled_forward  # noqa: E402

__all__ = [
    "Agreement",
    "FullyConvNet",
    "Geometry",
    "ImageError",
    "LoadedModel",
    "Normalization",
    "Prediction",
    "ScoreMap",
    "__version__",
    "activation_memory",
    "agreement",
    "available_models",
    "center_crop",
    "colorize",
    "convert",
    "crop_map",
    "dense_evaluate",
    "dense_maps",
    "evaluate",
    "fuse",
    "fuse_heatmaps",
    "global_pool",
    "grid",
    "grid_crops",
    "iter_images",
    "load_model",
    "load_state_dict",
    "load_weights",
    "overlay",
    "parse_memory",
    "predict",
    "read_image",
    "save_weights",
    "shift_and_stitch",
    "stitched_evaluate",
    "ten_crop",
    "tiled_forward",
]
