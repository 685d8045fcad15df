"""``fcnclassify classify``: image-level top-k classes from dense evaluation and aggregation.

Every image is evaluated; one that cannot be read is reported on stderr (one line) and skipped, and
the exit code is 2 at the end. The table prints each image as it is done; ``--json`` prints one
document at the end (nothing when no image could be classified).
"""

from __future__ import annotations

import argparse
import json
import sys

from ._options import add_evaluation_options, add_model_options, evaluation_kwargs, show_progress

HELP = "top-k classes of whole images from dense evaluation and global pooling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    add_model_options(parser)
    add_evaluation_options(parser, topk=5)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..dense import resolve_device, resolve_dtype
    from ..images import ImageError
    from ..pipeline import iter_images
    from ..predict import predict
    from ._options import load_from_args

    resolve_dtype(args.dtype, resolve_device(args.device))  # a bad option fails before any work
    paths, failures = _existing(args.images)
    if not paths:
        if not failures:
            raise ValueError(f"expected image files but found none in {' '.join(args.images)}")
        return 2
    model = load_from_args(args)
    options = evaluation_kwargs(args)
    documents = []
    progress = tqdm(iter_images(paths, max_pixels=args.max_pixels), total=len(paths), unit="image",
                    disable=not show_progress(args))
    for path, image in progress:
        if isinstance(image, ImageError):
            _report(image)
            failures += 1
            continue
        try:
            prediction = predict(model, image, **options)
        except ValueError as e:
            _report(e if str(e).startswith(str(path)) else f"{path}: {e}")
            failures += 1
            continue
        document = {
            "image": str(path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "map_size": list(prediction.maps[0].shape),
            "classes": [{"id": i, "label": label, "score": round(score, 6)}
                        for i, label, score in prediction.topk(args.topk)],
        }
        documents.append(document)
        if not args.json:
            _print_table(document, progress)
    if args.json and documents:
        print(json.dumps({
            "model": model.name, "weights": model.weights, "scales": list(args.scales),
            "flip": args.flip, "pool": args.pool, "over": args.over, "images": documents,
        }, indent=2))
    return 2 if failures else 0


def _existing(items: list[str]) -> tuple[list, int]:
    """Image files from files and folders; a missing path is reported and counted."""
    from ..images import ImageError, list_images

    paths, missing = [], 0
    for item in items:
        try:
            paths += list_images([item])
        except ImageError as e:
            _report(e)
            missing += 1
    return paths, missing


def _report(error) -> None:
    print(f"fcnclassify classify: error: {error}", file=sys.stderr)


def _print_table(document: dict, progress) -> None:
    lines = [f"{document['image']} ({document['width']}x{document['height']}, "
             f"map {document['map_size'][0]}x{document['map_size'][1]})"]
    for rank, c in enumerate(document["classes"], 1):
        lines.append(f"  {rank}. {c['score']:7.2%}  {c['label']} ({c['id']})")
    progress.write("\n".join(lines), file=sys.stdout)
