"""Command-line options shared by the commands that load a model and evaluate images.

``add_model_options`` (which network, which weights), ``add_evaluation_options`` (scales, flips,
pooling, device, precision, pixel limit, top-k, JSON, quiet) and ``load_from_args`` (the
:class:`~fcnclassify.models.registry.LoadedModel` they describe).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from .._constants import DEFAULT_MAX_PIXELS, DEFAULT_MODEL, LITE_MODEL
from ..evaluation.scales import PYRAMID_MAX_WINDOWS

if TYPE_CHECKING:
    from ..models.registry import LoadedModel

__all__ = ["add_model_options", "add_evaluation_options", "add_engine_options", "engine",
           "load_from_args", "parse_scales",
           "parse_sizes", "evaluation_kwargs", "runtime", "show_progress"]


def add_model_options(parser: argparse.ArgumentParser, *, default_model: str = DEFAULT_MODEL) -> None:
    """``--model``, ``--weights``, ``--num-classes``, ``--labels``, ``--input-size``."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", default=None, metavar="NAME",
                       help=f"network: any torchvision classifier (vgg16, resnet50, "
                            f"convnext_tiny, ...; NAME:TAG picks other weights, e.g. "
                            f"resnet50:IMAGENET1K_V1), timm/NAME (the timm extra), or "
                            f"{LITE_MODEL} (offline) (default: the one a converted --weights file "
                            f"or a hf-hub: repository names, else {default_model})")
    parser.set_defaults(_default_model=default_model)
    group.add_argument("--weights", "-w", default="default", metavar="default|PATH|hf-hub:REPO",
                       help="'default' (the model's pretrained weights: torchvision's downloaded "
                            "and cached by torch.hub, timm's from the Hugging Face cache or Hub, "
                            "efficientnet_lite0's shipped offline), a local file (.safetensors/"
                            ".pth/.pt: a state_dict, possibly fine-tuned, wrapped in "
                            "'state_dict'/'model' or with DataParallel's 'module.' prefixes, a timm "
                            "checkpoint, or a file written by 'fcnclassify convert'), or a Hugging "
                            "Face Hub reference hf-hub:ORG/NAME (cache first; HF_HUB_OFFLINE=1: "
                            "cache only); never runs code from the file")
    group.add_argument("--num-classes", type=_positive_int, default=None, metavar="N",
                       help="classes of a fine-tuned head (default: read from the weights)")
    group.add_argument("--labels", default=None, metavar="FILE",
                       help="class names, one a line, for a fine-tuned head")
    group.add_argument("--input-size", type=_positive_int, default=None, metavar="PIXELS",
                       help="the side the network was trained at (default: the weights' own, "
                            "e.g. 224, 299 for inception_v3)")
    group.add_argument("--cells", choices=("window", "activation"), default="window",
                       help="what a score-map cell is for a globally pooled head (ResNet, "
                            "EfficientNet): one input-size window of the image (default), or one "
                            "cell of the raw class activation map")


def add_evaluation_options(parser: argparse.ArgumentParser, *, topk: int = 5,
                           sizes: str = "vgg", flip: bool = True) -> None:
    """``--sizes``/``--scales``, ``--flip``, ``--pool``, ``--over``, ``--topk``, ``--json``,
    ``--device``, ``--dtype``, ``--max-pixels``, ``--max-memory``, ``--quiet``.

    ``sizes`` is the command's default: ``"vgg"`` (Q = 256, 384, 512 for a 224 network) or
    ``"pyramid"`` (:func:`fcnclassify.evaluation.scales.pyramid_sizes`)."""
    group = parser.add_argument_group("evaluation")
    scale = group.add_mutually_exclusive_group()
    default = ("the VGG dense protocol: 256,384,512 for a 224 network, in proportion for others"
               if sizes == "vgg" else
               f"pyramid: from one window on the shorter side up to the shorter side, at most "
               f"{PYRAMID_MAX_WINDOWS} windows, steps of at most sqrt(2)")
    scale.add_argument("--sizes", type=parse_sizes, default=sizes, metavar="Q[,Q...]|pyramid",
                       help=f"shorter sides in pixels the image is resized to (the VGG paper's Q), "
                            f"each at least the network's window, or 'pyramid' (default: {default})")
    scale.add_argument("--scales", type=parse_scales, default=None, metavar="S[,S...]",
                       help="instead of --sizes, resize factors of the image, e.g. '0.5,1' "
                            "(1: the image's own pixels)")
    group.add_argument("--flip", action=argparse.BooleanOptionalAction, default=flip,
                       help="also evaluate the mirrored image and average (the VGG protocol; "
                            f"default: {'on' if flip else 'off'})")
    group.add_argument("--pool", choices=("avg", "max"), default="avg",
                       help="global pooling of each score map (default: avg)")
    group.add_argument("--over", choices=("logits", "probs"), default="logits",
                       help="pool the logits then softmax (VGG), or pool per-cell probabilities "
                            "(default: logits)")
    group.add_argument("--topk", "-k", type=_positive_int, default=topk, metavar="K",
                       help=f"how many classes to report (default: {topk})")
    group.add_argument("--json", action="store_true",
                       help="print one JSON document to stdout instead of a table")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to compute (default: auto, CUDA when available)")
    group.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                       help="computation precision (default: float32; float16 on CUDA only)")
    group.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                       metavar="N", help="refuse images with more pixels (decompression bombs; "
                                         f"default: {DEFAULT_MAX_PIXELS})")
    group.add_argument("--max-memory", type=_memory, default=None, metavar="SIZE",
                       help="memory budget of the evaluation besides the weights (the image at "
                            "each size, its maps, one pass's working memory), e.g. 2GB or 512MiB "
                            "(a bare number is MiB); larger inputs run in exact tiles (default: "
                            "tiles only when an input would not fit in half the available memory)")
    group.add_argument("--stride-factor", type=_positive_int, default=1, metavar="K",
                       help="score maps at stride/K by shift-and-stitch (K*K times the work; "
                            "default: 1)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    group.add_argument("--runtime", choices=("torch", "onnxruntime"), default=None,
                       help="what runs the network: PyTorch (default), or onnxruntime on the "
                            "--onnx file ('fcnclassify export'; without --onnx the model is "
                            "exported to a temporary file first; CPU provider unless --device cuda)")
    group.add_argument("--onnx", default=None, metavar="FILE",
                       help="an ONNX file from 'fcnclassify export': its metadata gives the model, "
                            "labels, normalisation and geometry (implies --runtime onnxruntime)")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--ray-address`` (:mod:`fcnclassify.distributed`)."""
    group = parser.add_argument_group("scaling out")
    group.add_argument("--engine", choices=("local", "ray", "torchrun"), default=None,
                       help="where the images are evaluated: this process (local), a Ray cluster "
                            "(ray: the ray extra; decoding on CPU tasks, the network in an actor "
                            "pool), or the processes of 'torchrun --nproc-per-node N -m fcnclassify "
                            "...' (torchrun); the outputs are the local run's (default: torchrun "
                            "under torchrun, else local)")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="with --engine ray: the cluster to join ('auto', HOST:6379, "
                            "ray://HOST:10001) (default: start a local one)")


def engine(args: argparse.Namespace) -> str:
    """The engine ``add_engine_options`` asks for: ``"local"``, ``"ray"`` or ``"torchrun"``."""
    chosen = getattr(args, "engine", None)
    if chosen is None:
        from ..distributed import default_engine

        chosen = default_engine()
    if getattr(args, "ray_address", None) is not None and chosen != "ray":
        raise ValueError(f"--ray-address needs --engine ray but got --engine {chosen}")
    return chosen


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    """The :class:`~fcnclassify.models.registry.LoadedModel` that ``add_model_options`` describes;
    with ``--runtime onnxruntime`` its network is an onnxruntime session (:func:`_onnx_model`)."""
    from ..models.registry import load_model

    if runtime(args) == "onnxruntime":
        return _onnx_model(args)
    name = args.model
    if name is None and str(args.weights) == "default":
        name = getattr(args, "_default_model", DEFAULT_MODEL)
    return load_model(
        name, weights=args.weights, num_classes=args.num_classes, labels=args.labels,
        input_size=getattr(args, "input_size", None), cells=getattr(args, "cells", "window"),
        progress=show_progress(args),
    )


def evaluation_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`fcnclassify.evaluation.predict.predict` from ``add_evaluation_options``."""
    sizes = None if args.scales is not None or args.sizes == "vgg" else args.sizes
    return dict(sizes=sizes, scales=args.scales, flip=args.flip, pool=args.pool, over=args.over,
                device=_device(args), dtype=args.dtype, max_pixels=args.max_pixels,
                max_memory=args.max_memory, stride_factor=args.stride_factor,
                progress=show_progress(args))


def runtime(args: argparse.Namespace) -> str:
    """``"torch"`` or ``"onnxruntime"`` (``--onnx`` implies it); a contradiction is refused."""
    if not hasattr(args, "runtime"):  # a command without the option (export's --onnx is its output)
        return "torch"
    chosen, onnx = args.runtime, args.onnx
    if onnx is not None and chosen == "torch":
        raise ValueError("--onnx runs the file with onnxruntime: expected --runtime onnxruntime "
                         "(or no --runtime) but got --runtime torch")
    chosen = "onnxruntime" if onnx is not None else chosen or "torch"
    if chosen == "onnxruntime" and getattr(args, "dtype", None) not in (None, "float32"):
        # said before the dtype is resolved (which warns of an emulated bfloat16 on some CPUs)
        raise ValueError(f"the onnxruntime runtime computes the exported float32 graph: expected "
                         f"dtype float32 but got {args.dtype}")
    return chosen


def _device(args: argparse.Namespace) -> str:
    # onnxruntime's CPU provider by default: 'auto' must not pick CUDA for it
    return "cpu" if runtime(args) == "onnxruntime" and args.device == "auto" else args.device


def _onnx_model(args: argparse.Namespace) -> LoadedModel:
    """The model of ``--onnx FILE``, or of the model options exported to a temporary file, run by
    onnxruntime; its name, labels, normalisation and geometry come from the file's metadata."""
    import tempfile
    from pathlib import Path

    from ..models.registry import LoadedModel, Normalization
    from ..network.export import export_onnx
    from ..io.stderr import say
    from ..network.onnx_runtime import OnnxNet

    device = _device(args)
    if args.onnx is None:  # export on the fly: the same model the torch runtime would run
        model = load_from_args(argparse.Namespace(**{**vars(args), "runtime": "torch"}))
        with tempfile.TemporaryDirectory(prefix="fcnclassify-onnx-") as folder:
            export_onnx(model, Path(folder) / "model.onnx")
            net = OnnxNet(Path(folder) / "model.onnx", device=device)  # the session holds it all
        say(f"fcnclassify {args.command}: note: {model.name} exported to ONNX for this run; "
            f"'fcnclassify export -m {model.name} --onnx FILE' once, then --onnx FILE, skips that")
        weights = model.weights
    else:
        given = [f"--{o.replace('_', '-')}" for o, empty in
                 (("model", None), ("weights", "default"), ("num_classes", None), ("labels", None))
                 if getattr(args, o, empty) != empty]
        if given:
            raise ValueError(f"--onnx {args.onnx} carries its model, labels and normalisation: "
                             f"expected no {', '.join(given)}")
        net, weights = OnnxNet(args.onnx, device=device), str(args.onnx)
    if net.mean is None or net.std is None:
        raise ValueError(f"{args.onnx} has no normalisation in its metadata: export it from a "
                         f"loaded model, or give export_onnx mean= and std=")
    categories = net.categories or [str(i) for i in range(net.num_classes)]
    return LoadedModel(name=net.name, fcn=net, original=None, categories=list(categories),
                       normalization=Normalization(net.mean, net.std), input_size=net.input_size,
                       weights=weights)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal and without ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def parse_sizes(text: str) -> tuple[int, ...] | str:
    """``"256,384,512"`` (commas or spaces) -> ``(256, 384, 512)``; ``"pyramid"`` and ``"vgg"`` as
    they are."""
    if text.strip() in ("pyramid", "vgg"):
        return text.strip()
    try:
        sizes = tuple(int(s) for s in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers of pixels like '256,384,512' or "
                                         f"'pyramid' but got {text!r}")
    if not sizes or any(q < 1 for q in sizes):
        raise argparse.ArgumentTypeError(f"expected positive sizes but got {text!r}")
    return sizes


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.5,1,1.5"`` (commas or spaces) -> ``(0.5, 1.0, 1.5)``, all positive."""
    try:
        scales = tuple(float(s) for s in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '0.5,1,1.5' but got {text!r}")
    if not scales or any(not s > 0 for s in scales):
        raise argparse.ArgumentTypeError(f"expected positive scales but got {text!r}")
    return scales


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text!r}")
    return value


def _memory(text: str) -> int:
    """``2GB``, ``512MiB`` or a bare number of MiB on the command line -> bytes."""
    from ..evaluation.memory import parse_memory

    bare = re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*", text) is not None
    try:
        return parse_memory(f"{text}MiB" if bare else text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
