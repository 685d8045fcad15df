"""``fcnclassify evaluate DATA``: top-1 / top-5 accuracy over a labelled set, VGG Table 5 protocols.

``DATA`` is an ``ImageFolder`` directory (one folder per class, named by class name or id) or a CSV
file of ``path,label`` rows. See :mod:`fcnclassify.evaluation.protocols` for the protocols.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import json

from .._constants import DEFAULT_MAX_PIXELS, PROTOCOLS
from ._options import add_engine_options, add_model_options, engine, load_from_args, show_progress

HELP = "top-1/top-5 accuracy over a labelled folder or CSV: center, 10crop, multicrop, dense, dense+multicrop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA",
                        help="an ImageFolder directory (DATA/<class name or id>/*.jpg) or a CSV "
                             "file of path,label rows (paths relative to the CSV)")
    add_model_options(parser)
    group = parser.add_argument_group("evaluation")
    group.add_argument("--protocol", "-p", choices=PROTOCOLS, default="dense",
                       help="center: 224 of 256; 10crop: corners+centre and flips; multicrop: 5x5 "
                            "grid and flips at 3 scales (150 crops); dense: whole image at 3 scales "
                            "and flips; dense+multicrop: their mean (default: dense)")
    group.add_argument("--sizes", type=_sizes, default=None, metavar="Q[,Q...]",
                       help="shorter sides to resize to (default: 256 for center/10crop, "
                            "256,384,512 otherwise, for a 224 model)")
    group.add_argument("--batch-size", "-b", type=_positive, default=32, metavar="N",
                       help="crops per forward pass (default: 32)")
    group.add_argument("--limit", type=_positive, default=None, metavar="N",
                       help="evaluate only the first N images")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to compute (default: auto)")
    group.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                       help="computation precision (default: float32; float16 on CUDA only)")
    group.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help="refuse images with more pixels")
    group.add_argument("--json", action="store_true",
                       help="print one JSON document (with per-image top-5) instead of a summary")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_engine_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.protocols import default_sizes, evaluate, read_samples

    if not Path(args.data).exists():  # before a model download
        raise ValueError(f"{args.data}: no such folder or CSV file")
    model = load_from_args(args)
    samples = read_samples(args.data, model)
    if args.limit:
        samples = samples[:args.limit]
    if engine(args) == "local":
        result = evaluate(model, samples, protocol=args.protocol, sizes=args.sizes,
                          batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                          max_pixels=args.max_pixels, progress=show_progress(args))
    else:
        result = _distributed(args, samples)
        if result is None:  # a torchrun rank other than 0: rank 0 prints
            return 0
    sizes = args.sizes or default_sizes(args.protocol, model.input_size)
    if args.json:
        doc = {"model": model.name, "weights": model.weights, "data": str(args.data),
               "sizes": list(sizes), **result.as_dict()}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{model.name}  protocol {result.protocol}  sizes {','.join(map(str, sizes))}  "
          f"images {result.images}")
    print(f"top-1 accuracy {100 * result.top1:6.2f} %   error {100 * result.top1_error:6.2f} %")
    print(f"top-5 accuracy {100 * result.top5:6.2f} %   error {100 * result.top5_error:6.2f} %")
    return 0


def _distributed(args: argparse.Namespace, samples):
    """The same evaluation on Ray or torchrun ranks; None on a torchrun rank other than 0."""
    import functools

    from ..distributed import map_ordered
    from ..distributed.torchrun import rank
    from ..distributed.work import EvaluateWork, accuracy

    work = EvaluateWork(functools.partial(load_from_args, args), args.protocol, args.sizes,
                        args.batch_size, args.device, args.dtype, args.max_pixels)
    predictions = list(map_ordered(engine(args), work, samples, address=args.ray_address,
                                   device=args.device))
    if engine(args) == "torchrun" and rank() != 0:
        return None
    return accuracy(args.protocol, predictions)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text!r}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(",", " ").split())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes in pixels like '256,384,512' but got {text!r}")
    return sizes
