"""What the heatmap pyramid's cap costs small objects: 4 against 8 windows on the shorter side.

    python -m benchmarks.small_objects [--out DIR] [--force]

A cat, an espresso and a rocket (scikit-image's chelsea, coffee and rocket, CC0) pasted side by side
on a 4000x3000 grey gradient at widths 1100, 800, 600 and 450 pixels, evaluated with
efficientnet_lite0 over the default pyramid (up to 4 windows, Q <= 896) and over the pyramid up to
8 windows (Q <= 1792); for each, the top 5 classes by heatmap score (``topk(by="heatmap")``, the
``heatmap`` command's ranking) and which objects have a class of their label set among them.
Writes ``small_objects.json`` (default folder: a new ``bench-results/<date-time>``).
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import torch

from .options import add_output_arguments
from .report import result_path, write_result

CANVAS = (3000, 4000)  # (height, width)
WIDTHS = (1100, 800, 600, 450)
# name, left edge, label set (ImageNet ids)
OBJECTS = (("chelsea", 200, (281, 282, 285)), ("coffee", 1600, (504, 967, 968)),
           ("rocket", 2900, (657, 744)))


def canvas(width: int) -> np.ndarray:
    """The three photos ``width`` pixels wide, their tops at y = 900, on a grey gradient."""
    from skimage import data

    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(),
              "rocket": np.ascontiguousarray(data.rocket()[:, 100:527])}
    height, full = CANVAS
    ramp = np.linspace(200, 150, height).astype(np.uint8)
    out = np.repeat(np.repeat(ramp[:, None, None], full, 1), 3, 2)
    for name, x, _ in OBJECTS:
        photo = photos[name]
        h = round(photo.shape[0] * width / photo.shape[1])
        out[900:900 + h, x:x + width] = cv2.resize(photo, (width, h), interpolation=cv2.INTER_AREA)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.small_objects",
                                description=__doc__.split("\n")[0])
    add_output_arguments(p)
    args = p.parse_args(argv)
    target = result_path(args.out, "small_objects.json", force=args.force)
    if target is None:
        return 2
    from fcnclassify import load_model, predict
    from fcnclassify.evaluation.scales import pyramid_sizes

    model = load_model("efficientnet_lite0")
    rows = []
    for width in WIDTHS:
        image = canvas(width)
        for cap in (4, 8):
            sizes = pyramid_sizes(CANVAS, model.input_size, max_windows=cap)
            ranked = predict(model, image, sizes=sizes, flip=False).topk(5, by="heatmap")
            found = [name for name, _, labels in OBJECTS if any(c in labels for c, _, _ in ranked)]
            rows.append({"width": width, "max_windows": cap, "sizes": list(sizes),
                         "top5": [(label, round(score, 3)) for _, label, score in ranked],
                         "objects_in_top5": found})
            print(f"{width:5d} px, {cap} windows: {', '.join(label for _, label, _ in ranked)}; "
                  f"objects in top 5: {', '.join(found) or 'none'}", file=sys.stderr)
    write_result({"command": "python -m benchmarks.small_objects", "canvas": list(CANVAS[::-1]),
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "rows": rows}, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
