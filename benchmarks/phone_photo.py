"""What a user sees on a phone-sized photo, before and after window cells and scales in the model's terms.

    python -m benchmarks.phone_photo [--out DIR] [--force] [--skip-agreement]

1. Writes ``phone_photo.jpg``: a 4000x2667 photo holding a cat, an espresso and a rocket (the
   scikit-image photos, CC0), each 1100 pixels wide at known places.
2. Runs efficientnet_lite0 (real ImageNet weights, offline) on it the old way (scale 1, class
   activation cells, classes by image-level score) and the new defaults (``heatmap``: the pyramid,
   window cells, classes by their heatmap scores; ``classify``: the VGG dense protocol), writes both
   heatmap grids and times them (the issue's target: the pyramid within 2x of the scale-1 run).
   Then a photo that one object fills (chelsea enlarged to 4000x2661): the classes drawn by an
   earlier rule (best single window, pyramid to 8 windows) and today's (heatmap scores, 4 windows).
3. Dense-vs-crop agreement per window on the scikit-image photos: each dense cell against the
   original model on the crop ``box(i, j)``, for window cells and for class-activation cells.

Writes ``phone_photo.json`` and the pictures into ``--out`` (default: benchmarks/results), never
over an existing file without ``--force``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fcnclassify import agreement, convert, crop_map, dense_evaluate, grid, load_model, overlay, predict
from fcnclassify.evaluation.dense import rescale
from fcnclassify.evaluation.scales import pyramid_sizes
from fcnclassify.io.images import write_image

PHOTO_SIZE = (2667, 4000)  # (height, width)
# name, (x0, y0) of the photo pasted 1100 pixels wide, label classes
OBJECTS = (("chelsea", (150, 300), (281, 282, 285)), ("coffee", (1450, 900), (504, 967, 968)),
           ("rocket", (2750, 700), (657, 744)))


def phone_photo() -> tuple[np.ndarray, dict[str, tuple[tuple[int, int, int, int], tuple[int, ...]]]]:
    """The 4000x2667 photo on a grey gradient, and each object's box and label classes."""
    from skimage import data

    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(),
              "rocket": np.ascontiguousarray(data.rocket()[:, 100:527])}
    height, width = PHOTO_SIZE
    ramp = np.linspace(200, 150, height).astype(np.uint8)
    canvas = np.repeat(np.repeat(ramp[:, None, None], width, 1), 3, 2)
    boxes = {}
    for name, (x, y), classes in OBJECTS:
        img = photos[name]
        h = round(img.shape[0] * 1100 / img.shape[1])
        canvas[y:y + h, x:x + 1100] = cv2.resize(img, (1100, h), interpolation=cv2.INTER_CUBIC)
        boxes[name] = ((x, y, x + 1100, y + h), classes)
    return canvas, boxes


def heatmap_grid(prediction, classes: list[int], title: str) -> np.ndarray:
    """The photo and one overlay per class, 1/4 size, titled with the class's heatmap score (what
    it holds over 1% of the photo) and its best cell's probability."""
    small = cv2.resize(prediction.image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    panels, titles = [small], [title]
    for rank, (cls, held) in enumerate(zip(classes, prediction.heatmap_scores(classes).tolist()), 1):
        heat = cv2.resize(prediction.heatmap(cls), small.shape[1::-1], interpolation=cv2.INTER_AREA)
        peak = prediction.peak(cls)
        panels.append(overlay(small, heat, alpha=0.5))
        titles.append(f"{rank}. {prediction.categories[cls]}: heatmap {held:.2f}, "
                      f"best window {peak['score']:.2f}")
    return grid(panels, titles, height=300, columns=2)


def timed(fns: dict, repeats: int = 2) -> tuple[dict, dict]:
    """Each function's result and its fastest of ``repeats`` runs, the runs interleaved so that a
    busy machine slows all of them alike."""
    results, seconds = {}, {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    return results, {name: min(s) for name, s in seconds.items()}


def run_photo(out: Path, force: bool) -> dict:
    photo, boxes = phone_photo()
    write_image(out / "phone_photo.jpg", photo, overwrite=force)
    lite = load_model("efficientnet_lite0")
    activation = dataclasses.replace(lite, fcn=convert(lite.original, cells="activation"),
                                     _prepared={})
    predict(lite, photo[:448, :448], sizes=(224,), flip=False)  # warm-up: first-call costs
    results, seconds = timed({
        "before": lambda: predict(activation, photo, scales=(1.0,), flip=False),
        "after": lambda: predict(lite, photo, sizes="pyramid", flip=False),
        "vgg": lambda: predict(lite, photo)})
    (before, after, vgg), (t_before, t_after, t_vgg) = (
        [results[k] for k in ("before", "after", "vgg")], [seconds[k] for k in ("before", "after", "vgg")])
    before_classes = [c for c, _, _ in before.topk(3)]
    after_classes = [c for c, _, _ in after.topk(3, by="heatmap")]
    write_image(out / "phone_before.jpg", heatmap_grid(before, before_classes, "before: scale 1, CAM cells"),
                overwrite=force)
    write_image(out / "phone_after.jpg", heatmap_grid(after, after_classes, "after: pyramid, window cells"),
                overwrite=force)

    def located(prediction, classes):
        rows = {}
        for name, (box, labels) in boxes.items():
            best = max(labels, key=lambda c: prediction.peak(c)["score"])
            peak = prediction.peak(best)
            x0, y0, x1, y1 = box
            rows[name] = {"class": prediction.categories[best], "window_p": round(peak["score"], 3),
                          "size": peak["size"], "inside": bool(x0 <= peak["x"] < x1 and y0 <= peak["y"] < y1)}
        return rows

    def top(prediction, by="image"):
        return [(label, round(score, 4)) for _, label, score in prediction.topk(5, by=by)]

    return {
        "photo": "4000x2667, three objects 1100 px wide",
        "before": {"command": "heatmap --scales 1 --cells activation (the old defaults)",
                   "seconds": round(t_before, 2), "top5_image": top(before),
                   "drawn": [before.categories[c] for c in before_classes], "objects": located(before, before_classes)},
        "heatmap": {"command": "heatmap (defaults: --sizes pyramid)", "seconds": round(t_after, 2),
                    "sizes": sorted({min(m.input_size) for m in after.maps}),
                    "top5_heatmap": top(after, "heatmap"), "top5_window": top(after, "window"),
                    "top5_image": top(after),
                    "drawn": [after.categories[c] for c in after_classes],
                    "objects": located(after, after_classes)},
        "classify": {"command": "classify (defaults: VGG dense protocol)", "seconds": round(t_vgg, 2),
                     "top5_image": top(vgg)},
        "pyramid_over_scale1_time": round(t_after / t_before, 2),
    }


def run_filled(out: Path, force: bool) -> dict:
    """A photo that one object fills, at a phone's size (chelsea enlarged to 4000x2661): the classes
    ``heatmap`` draws by the rule of an earlier version (best single window, pyramid up to 8 windows
    on the shorter side) and by today's (heatmap scores, up to 4 windows); both grids."""
    from skimage import data

    image = data.chelsea()
    photo = cv2.resize(image, (4000, round(image.shape[0] * 4000 / image.shape[1])),
                       interpolation=cv2.INTER_CUBIC)
    lite = load_model("efficientnet_lite0")
    results, seconds = timed({
        "old": lambda: predict(lite, photo, sizes=pyramid_sizes(photo.shape[:2], 224, max_windows=8),
                               flip=False),
        "new": lambda: predict(lite, photo, sizes="pyramid", flip=False)}, repeats=1)
    old, new = results["old"], results["new"]
    drawn = {"old": [c for c, _, _ in old.topk(3, by="window")],
             "new": [c for c, _, _ in new.topk(3, by="heatmap")]}
    write_image(out / "cat_before.jpg", heatmap_grid(old, drawn["old"], "before: best window, Q<=1792"),
                overwrite=force)
    write_image(out / "cat_after.jpg", heatmap_grid(new, drawn["new"], "now: heatmap scores, Q<=896"),
                overwrite=force)

    def rows(prediction, classes):
        return [{"class": prediction.categories[c], "window_p": round(prediction.peak(c)["score"], 3),
                 "size": prediction.peak(c)["size"],
                 "heatmap_p": round(float(prediction.heatmap_scores([c])[0]), 3)} for c in classes]

    return {"photo": "chelsea enlarged to 4000x2661 (one object fills it)",
            "before": {"rule": "topk(by='window'), pyramid up to 8 windows",
                       "sizes": sorted({min(m.input_size) for m in old.maps}),
                       "seconds": round(seconds["old"], 2), "drawn": rows(old, drawn["old"])},
            "now": {"rule": "topk(by='heatmap'), pyramid up to 4 windows (the defaults)",
                    "sizes": sorted({min(m.input_size) for m in new.maps}),
                    "seconds": round(seconds["new"], 2), "drawn": rows(new, drawn["new"])},
            "classify_top3": [(label, round(p, 4)) for _, label, p in predict(lite, photo).topk(3)]}


def run_agreement(size: int = 512) -> list[dict]:
    """Per window: the dense cell's top-1 against the original model on the cell's crop."""
    from skimage import data

    lite = load_model("efficientnet_lite0")
    nets = {"window": lite.fcn, "activation": convert(lite.original, cells="activation")}
    photos = {"astronaut": data.astronaut(), "rocket": data.rocket(), "chelsea": data.chelsea(),
              "coffee": data.coffee()}
    rows = []
    for name, rgb in photos.items():
        x = lite.normalization(rgb)
        for cells, fcn in nets.items():
            (dense,) = dense_evaluate(fcn, x, sizes=(size,))[0]
            resized = rescale(x[None], size / min(x.shape[-2:]))[0]  # the image the dense pass saw
            crops = crop_map(lite.original, fcn, resized)
            a = agreement(dense, crops)
            rows.append({"photo": name, "cells": cells, "size": size, "map": list(dense.shape),
                         "top1": round(a.top1, 3), "correlation": round(a.correlation, 3)})
            print(f"{name:10s} {cells:10s} Q={size} map {dense.shape[0]}x{dense.shape[1]}: "
                  f"top-1 agreement {a.top1:.1%}, correlation {a.correlation:.3f}", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-photo", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "phone_photo.json"
    if target.exists() and not args.force:
        print(f"{target}: already exists (pass --force to overwrite it)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    result = {"cpu": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    if not args.skip_photo:
        result.update(run_photo(args.out, args.force))
        result["filled"] = run_filled(args.out, args.force)
    if not args.skip_agreement:
        result["agreement"] = run_agreement()
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
