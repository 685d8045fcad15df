"""Plain values that the command line needs to build its parser: the default and offline model
names (the registry itself validates names when a model is loaded), the evaluation protocols and
the default pixel limit. Kept apart from the modules that define their
meaning (they import them from here) because those modules import torch, numpy or OpenCV."""

from __future__ import annotations

DEFAULT_MODEL = "vgg16"  # the design's network
# the hand-picked models the benchmarks sweep (every torchvision classifier and timm/NAME load too)
TORCHVISION_MODELS = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
                      "vgg19_bn", "alexnet", "resnet18", "resnet50")
LITE_MODEL = "efficientnet_lite0"  # offline, from the `lite` extra
MODEL_NAMES = (*TORCHVISION_MODELS, LITE_MODEL)

PROTOCOLS = ("center", "10crop", "multicrop", "dense", "dense+multicrop")  # of fcnclassify.evaluation.protocols

# Pillow's decompression-bomb error threshold: 2 * PIL.Image.MAX_IMAGE_PIXELS = 2 * (1024**3 // 4 // 3).
DEFAULT_MAX_PIXELS = 178_956_970
