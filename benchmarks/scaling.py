"""Scaling out on this machine: images per second against Ray workers, and the per-image figures a
user needs to size a cluster.

    python -m benchmarks.scaling --images 24 --out benchmarks/results  # 24 images, 1 and 2 workers
    python -m benchmarks.scaling --images 6 --workers 1 --out /tmp    # quicker

* Ray: ``fcnclassify.distributed.ray.predict_paths`` (the ``--engine ray`` path) over ``--images``
  synthetic 480x640 PNGs, efficientnet_lite0 (real weights, offline) with the classify defaults
  (Q = 256, 384, 512, flipped), on a local cluster of ``max(--workers) + 1`` logical CPUs, 1 and 2
  network actors. Images per second are over a whole run, after a first run that starts Ray's
  workers; each run starts its own actor pool, so the actors' start (importing torch, loading the
  model in each) is counted, as a user's run pays it: it weighs less with more images.
* Per image, in this process (one thread, as a Ray actor of one CPU runs): decoding seconds
  (``read_image``) and network seconds (``predict``) of a 480x640 PNG at three settings of the
  sizes Q (the network's cost depends on Q, not on the file's size), and the decode share.

The machine's 1-minute load average is recorded: on a shared machine 2 actors can be slower than 1.

Results go to ``scaling_cpu.json`` and ``.md``; an existing file is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .options import add_output_arguments
from .report import default_folder, refuse_overwrite

MODEL = "efficientnet_lite0"
SIZE = (480, 640)
# the network's cost depends on the sizes it sees (Q), not on the file's: per-image cost by Q
SETTINGS = {"Q=224": {"sizes": (224,), "flip": False},
            "Q=512": {"sizes": (512,), "flip": False},
            "Q=256,384,512 flipped (default)": {}}


def _images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{size[0]}x{size[1]}_{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def per_image(paths: list[Path], model, options: dict) -> dict:
    import torch

    from fcnclassify.evaluation.predict import predict
    from fcnclassify.io.images import read_image

    torch.set_num_threads(1)
    decode, network = [], []
    predict(model, read_image(paths[0]), **options)  # warm-up
    for path in paths[:3]:
        t = time.perf_counter()
        image = read_image(path)
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        predict(model, image, **options)
        network.append(time.perf_counter() - t)
    d, n = statistics.median(decode), statistics.median(network)
    return {"decode_s": round(d, 4), "network_s": round(n, 3), "decode_share": round(d / (d + n), 4)}


def ray_rate(paths: list[Path], workers: int) -> float:
    from fcnclassify.distributed.ray import predict_paths
    from fcnclassify.models.registry import load_model

    load = functools.partial(load_model, MODEL)
    list(predict_paths(paths[:workers], load=load, workers=workers))  # warm-up: Ray's start
    t = time.perf_counter()
    done = list(predict_paths(paths, load=load, workers=workers))
    seconds = time.perf_counter() - t
    assert [p for p, _ in done] == [str(p) for p in paths]
    return len(paths) / seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="images of the Ray runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    import ray
    import torch

    from fcnclassify.models.registry import load_model

    out = Path(args.out) if args.out else default_folder()
    files = [out / "scaling_cpu.json", out / "scaling_cpu.md"]
    refuse_overwrite(files, force=args.force)
    result = {"command": "python -m benchmarks.scaling " + " ".join(argv or sys.argv[1:]),
              "cpu": torch.backends.cpu.get_cpu_capability(), "machine": platform.processor(),
              "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "model": MODEL,
              "protocol": "classify defaults: Q=256,384,512, flipped", "per_image": {}, "ray": {}}
    model = load_model(MODEL)
    with tempfile.TemporaryDirectory() as folder:
        paths = _images(Path(folder), args.images, SIZE)
        for name, options in SETTINGS.items():
            result["per_image"][name] = per_image(paths, model, options)
            print(name, result["per_image"][name], flush=True)
        ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False)
        try:
            for workers in args.workers:
                rate = ray_rate(paths, workers)
                result["ray"][str(workers)] = {"images_per_s": round(rate, 3)}
                print(f"ray {workers} worker(s): {rate:.2f} images/s", flush=True)
        finally:
            ray.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Scaling out on this CPU ({result['cpu']}, {result['cores']} cores)", "",
             f"`{result['command']}`; {MODEL}, {result['protocol']}; load average "
             f"{result['load_average']:.1f} at the start.", "",
             "| Ray network actors | images/s (480x640) |", "|---:|---:|"]
    lines += [f"| {w} | {r['images_per_s']:.2f} |" for w, r in result["ray"].items()]
    lines += ["", "| 480x640, sizes | decode s | network s (1 thread) | decode share |",
              "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['decode_s']:.4f} | {v['network_s']:.3f} | {100 * v['decode_share']:.1f} % |"
              for k, v in result["per_image"].items()]
    files[1].write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
