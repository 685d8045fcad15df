"""``fcnclassify classify``: image-level top-k classes from dense evaluation and aggregation.

By default the VGG dense protocol: the image at shorter sides Q = 256, 384, 512 (for a 224 network),
each as it is and mirrored; each map's logits are averaged over its windows, softmaxed, and the
posteriors averaged. The scores printed are those image-level probabilities.

Every image is evaluated; one that cannot be read is reported on stderr (one line) and skipped, and
the exit code is 2 at the end. The table prints each image as it is done; ``--json`` prints one
document at the end (nothing when no image could be classified).
"""

from __future__ import annotations

import argparse

from ._options import add_engine_options, add_evaluation_options, add_model_options

HELP = "top-k classes of whole images from dense evaluation and global pooling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    add_model_options(parser)
    add_evaluation_options(parser, topk=5)
    add_engine_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..network.device import resolve_device, resolve_dtype
    from ._loop import ImageLoop
    from ._options import load_from_args, runtime

    runtime(args)  # a contradiction in the options fails before any work, in one line
    resolve_dtype(args.dtype, resolve_device(args.device))
    loop = ImageLoop("classify", args.images)
    if not loop.paths:
        return 2
    model = load_from_args(args)
    documents = []
    for path, image, prediction in loop.predictions(model, args):
        document = {
            "image": str(path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "maps": prediction.describe_maps(),
            "classes": [{"id": i, "label": label, "score": round(score, 6)}
                        for i, label, score in prediction.topk(args.topk)],
        }
        documents.append(document)
        if not args.json:
            loop.write(_table(document))
    return loop.finish(model, args, documents)


def _table(document: dict) -> str:
    sizes = sorted({m["size"] for m in document["maps"]})
    lines = [f"{document['image']} ({document['width']}x{document['height']}, "
             f"{len(document['maps'])} maps, Q={','.join(map(str, sizes))})"]
    for rank, c in enumerate(document["classes"], 1):
        lines.append(f"  {rank}. {c['score']:7.2%}  {c['label']} ({c['id']})")  # image-level
    return "\n".join(lines)
