"""Deep Zoom tiles of a large synthetic image: throughput and peak memory of the streamed writer.

    python -m benchmarks.dzi                         # 8192 x 8192, JPEG
    python -m benchmarks.dzi --size 16384 --format png

The image is a scikit-image photo (astronaut, 512 x 512) repeated, read region by region as a slide
reader would serve it; nothing holds it whole. Megapixels per second count the image's own pixels
(level 0 of a slide); the lower levels add about a third more tiles. ``read_seconds`` is the time
spent in the synthetic reader; ``writer_megapixels_per_s`` leaves it out. Peak memory is the process's
peak RSS (VmHWM) less its RSS before the writer started (Python, NumPy, OpenCV loaded).
Results go to ``dzi_<size>_<format>.json`` in a new ``bench-results/<date>-<time>`` folder (``--out``
to choose); ``benchmarks/results/`` holds the committed ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fcnclassify.outputs.dzi import READ_PIXELS, dzi_levels, write_dzi

from .options import add_output_arguments
from .report import result_path, write_result


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dzi", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=8192, help="image side in pixels (default 8192)")
    p.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    p.add_argument("--quality", type=int, default=90)
    add_output_arguments(p)
    args = p.parse_args(argv)
    target = result_path(args.out, f"dzi_{args.size}_{args.format}.json", force=args.force)
    if target is None:
        return 2

    from skimage import data

    texture = np.ascontiguousarray(data.astronaut()[:, :, :3])
    if args.format == "png":
        texture = np.dstack([texture, np.full(texture.shape[:2], 200, np.uint8)])
    th, tw = texture.shape[:2]
    strip = np.tile(texture, (1, -(-args.size // tw), 1))  # one row of photos, the image's width
    calls, reading = [], [0.0]

    def read(x, y, w, h):
        start = time.perf_counter()
        calls.append(w * h)
        pixels = np.take(strip[:, x:x + w], np.arange(y, y + h) % th, axis=0)
        reading[0] += time.perf_counter() - start
        return pixels

    work = Path(tempfile.mkdtemp(prefix="fcnclassify-dzi-bench-"))
    try:
        before = _rss()
        start = time.perf_counter()
        write_dzi(work / "image", args.size, args.size, read, format=args.format, quality=args.quality)
        seconds = time.perf_counter() - start
        peak = _peak_rss()
        files = [Path(root) / name for root, _, names in os.walk(work / "image_files") for name in names]
        disk = sum(f.stat().st_size for f in files)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    megapixels = args.size * args.size / 1e6
    result = {
        "command": f"python -m benchmarks.dzi --size {args.size} --format {args.format}",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "size": [args.size, args.size], "format": args.format, "quality": args.quality,
        "levels": len(dzi_levels(args.size, args.size)), "tiles": len(files),
        "disk_mb": round(disk / 1e6, 1), "seconds": round(seconds, 2),
        "megapixels_per_s": round(megapixels / seconds, 1),
        "read_seconds": round(reading[0], 2),
        "writer_megapixels_per_s": round(megapixels / (seconds - reading[0]), 1),
        "rss_before_mb": round(before / 2 ** 20), "peak_rss_added_mb": round((peak - before) / 2 ** 20),
        "image_mb": round(args.size * args.size * texture.shape[2] / 2 ** 20),
        "max_pixels_per_read": max(calls), "read_pixels_limit": READ_PIXELS,
    }
    try:
        import torch

        result["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        pass
    write_result(result, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
