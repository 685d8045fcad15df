"""One huge image through VGG16 in exact tiles under a memory budget: time, peak memory, estimate.

    python -m benchmarks.huge_image                      # 4096 x 4096, --max-memory 4GB, float32
    python -m benchmarks.huge_image --size 8192 --dtype bfloat16
    nice -n 10 python -m benchmarks.huge_image --size 16384 --max-memory 4GB  # ~1 h on 2 cores

VGG16 has random weights here (timing and memory do not depend on them, and nothing is downloaded).
The budget covers what the run holds besides the weights and the runtime (Python, torch): the image
as 8-bit pixels, the float32 map, and one tile's working memory (its normalised crop, activations,
logits). Peak memory is the process's peak RSS on the CPU (VmHWM) or ``max_memory_allocated`` on
CUDA, from when the network is ready (building it peaks higher for a moment: ``building_peak``);
the run is within its budget when that peak, less the runtime (RSS before the model is built) and
the weights, is at most the budget.
Results go to ``huge_image_<size>_<dtype>_<device>.json`` in a new ``bench-results/<date>-<time>``
folder of the current directory (``--out DIR`` to choose; an existing file is replaced only with
``--force``); ``benchmarks/results/`` holds the committed ones.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import resource
import sys
import time
import warnings

import torch
import torchvision

from fcnclassify import convert
from fcnclassify.network.device import prepare, resolve_device, resolve_dtype
from fcnclassify.evaluation.memory import activation_memory, format_bytes, parse_memory
from fcnclassify.evaluation.tiling import choose_tile, plan_tiles, tiled_forward

from .options import add_output_arguments
from .report import default_folder, refuse_overwrite


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    """Linux: make the peak RSS (VmHWM) the current RSS, so that the peak is the pass's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _trim() -> None:
    """glibc: return freed heap pages to the system (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _rss()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels (default 4096)")
    parser.add_argument("--max-memory", default="4GB",
                        help="budget for everything but the weights and the runtime: the image "
                             "(8-bit), the map, one tile's working memory (default 4GB)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="vgg16", help="a torchvision classifier name")
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    out = (args.out or default_folder()) / f"huge_image_{args.size}_{args.dtype}_{device.type}.json"
    refuse_overwrite([out], force=args.force)  # before minutes of work
    dtype = resolve_dtype(args.dtype, device)
    budget = parse_memory(args.max_memory)
    runtime = _current_rss()  # Python, torch and its libraries: outside the budget, like the weights
    with torch.device("meta"):  # seeded random weights without torchvision's slow init
        model = getattr(torchvision.models, args.model)()
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(1, p[0].numel())) ** 0.5)
    fcn = convert(model.eval())
    del model
    gc.collect()  # a reference cycle keeps the original model's weights until the collector runs
    fcn, _ = prepare(fcn, device=device, dtype=dtype)
    weights = sum(p.numel() * p.element_size() for p in fcn.parameters())
    building = _peak_rss()  # converting copies fc6 for a moment: before the run, not part of it
    if device.type == "cpu":
        _trim()  # give the building's freed pages back, so the run's peak is the run's own
        _reset_peak_rss()
    before = _current_rss()
    # the image as 8-bit pixels (what a decoder gives), normalised tile by tile
    x = torch.randint(0, 256, (1, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    def normalise(crop: torch.Tensor) -> torch.Tensor:
        f = torch.empty(crop.shape, dtype=torch.float32, device=device,
                        memory_format=torch.channels_last).copy_(crop)
        return f.sub_(mean).div_(std).to(dtype)

    size = (args.size, args.size)
    untiled = activation_memory(fcn, size, dtype=dtype)
    out_h, out_w = fcn.geometry.output_size(*size)
    fixed = x.numel() + fcn.num_classes * out_h * out_w * 4
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tile = choose_tile(fcn, size, budget - fixed, dtype=dtype, fixed=fixed, budget=budget,
                           staging=True)
    plan_s = time.perf_counter() - t0
    tiles = list(plan_tiles(fcn.geometry, size, tile))
    crop = max(((t.crop[1] - t.crop[0]), (t.crop[3] - t.crop[2])) for t in tiles)
    work = sum((t.crop[1] - t.crop[0]) * (t.crop[3] - t.crop[2]) for t in tiles) / args.size**2
    estimate = activation_memory(fcn, crop, dtype=dtype) + 3 * 4 * crop[0] * crop[1]
    print(f"{args.model} {args.size}x{args.size} {args.dtype} on {device}: {len(tiles)} tiles of "
          f"{tile[0]}x{tile[1]} cells (crops up to {crop[0]}x{crop[1]} px, {work:.2f}x the image's "
          f"pixels); plan {plan_s:.1f} s", flush=True)
    for w in caught:
        print(f"  notice: {w.message}", flush=True)

    done = []
    t0 = time.perf_counter()

    def report(module, inputs, output):  # partial figures in the log of a long run
        done.append(1)
        print(f"  tile {len(done)}/{len(tiles)}: {time.perf_counter() - t0:.0f} s, peak RSS "
              f"{format_bytes(_peak_rss(), like=budget)}", flush=True)

    hook = fcn.register_forward_hook(report)
    logits = tiled_forward(fcn, x, max_memory=budget, transform=normalise)
    hook.remove()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss()
    if list(logits.shape[-2:]) != [out_h, out_w]:
        raise AssertionError(f"map {tuple(logits.shape)}")  # a bug

    # 2 FLOP per multiply-add: weights (MACs per output position) x output positions
    flops = 2 * sum(m.weight.numel() * _positions(fcn, m, args.size) for m in _convs(fcn))
    counted = peak - runtime - (weights if device.type == "cpu" else 0)
    result = {
        "model": args.model, "size": args.size, "dtype": args.dtype, "device": str(device),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "max_memory": int(budget), "untiled_estimate": untiled, "tile_cells": list(tile),
        "tiles": len(tiles), "largest_crop": list(crop), "work": round(work, 3),
        "image_and_map": fixed, "tile_estimate": estimate, "runtime_rss": runtime,
        "weights": weights, "building_peak": building, "held_before": before, "peak": peak, "peak_minus_runtime_and_weights": counted,
        "of_budget": round(counted / budget, 3), "map": [out_h, out_w],
        "plan_seconds": round(plan_s, 2), "seconds": round(seconds, 1),
        "tflop_untiled": round(flops / 1e12, 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    like = budget
    print(f"  untiled would need ~{format_bytes(untiled, like=like)} of activations; budget "
          f"{format_bytes(budget, like=like)}: image and map {format_bytes(fixed, like=like)}, tile "
          f"estimate {format_bytes(estimate, like=like)}")
    print(f"  time {seconds:.1f} s ({flops / 1e12:.1f} TFLOP untiled); peak "
          f"{'RSS' if device.type == 'cpu' else 'allocated'} {format_bytes(peak, like=like)} = runtime "
          f"{format_bytes(runtime, like=like)} + weights {format_bytes(weights, like=like)} + "
          f"{format_bytes(counted, like=like)} ({counted / budget:.0%} of the budget)")
    print(f"  -> {out}")
    return result


def _convs(fcn):
    return [m for m in fcn.modules() if isinstance(m, torch.nn.Conv2d)]


def _positions(fcn, conv, size: int) -> int:
    """Output positions of ``conv`` on an untiled ``size x size`` input (hooks on a fake pass)."""
    if not hasattr(fcn, "_positions"):
        from torch._subclasses.fake_tensor import FakeTensorMode

        counts = {}
        hooks = [m.register_forward_hook(lambda m, i, o: counts.__setitem__(m, o.shape[-2] * o.shape[-1]))
                 for m in _convs(fcn)]
        param = next(fcn.parameters())
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            fcn(torch.empty(1, 3, size, size, dtype=param.dtype, device=param.device))
        for h in hooks:
            h.remove()
        fcn._positions = counts
    return fcn._positions[conv]


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileExistsError) as e:  # a bad option, a result in the way
        print(f"benchmarks.huge_image: error: {e}", file=sys.stderr)
        sys.exit(2)
