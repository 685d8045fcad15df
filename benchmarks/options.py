"""The suite's command-line options, apart from the suite so that parsing them imports no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

SIZES = ((224, 224), (512, 384), (1024, 768), (2048, 1536))  # (width, height)
MODELS = ("vgg16", "alexnet", "resnet50")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m benchmarks`` and ``fcnclassify bench``."""
    p.add_argument("--quick", action="store_true", help="a small grid, one repeat (< 2 min)")
    p.add_argument("--models", nargs="+", default=None, choices=MODELS)
    p.add_argument("--sizes", nargs="+", default=None, metavar="WxH", help="e.g. 1024x768")
    p.add_argument("--dtypes", nargs="+", default=None, choices=("float32", "bfloat16", "float16"))
    p.add_argument("--layouts", nargs="+", default=None, choices=("nchw", "channels_last"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 1)")
    p.add_argument("--crops", type=int, default=None, help="timed crops per configuration")
    p.add_argument("--batch-size", type=int, default=None, help="crops per batch")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd dense (CUDA)")
    add_output_arguments(p)
    p.add_argument("--no-plots", action="store_true")


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """``--out`` and ``--force``, shared by every benchmark that writes results."""
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="results folder (default: a new bench-results/<date-time> in the current "
                        "directory; benchmarks/results holds the committed ones)")
    p.add_argument("--force", action="store_true", help="replace result files that exist in --out")
