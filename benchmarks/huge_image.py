"""One huge image through VGG16 in exact tiles under a memory budget: time, peak memory, estimate.

    python -m benchmarks.huge_image                      # 4096 x 4096, --max-memory 4GB, float32
    python -m benchmarks.huge_image --size 8192 --dtype bfloat16

VGG16 has random weights here (timing and memory do not depend on them, and nothing is downloaded).
Peak memory is the process's peak RSS on the CPU (``ru_maxrss``) or ``max_memory_allocated`` on
CUDA; the working memory of the tiled pass is that peak minus the memory held before it (weights,
input image), to compare with the budget and with :func:`fcnclassify.memory.activation_memory`.
Results go to ``huge_image_<size>_<dtype>_<device>.json`` in a new ``bench-results/<date>-<time>``
folder of the current directory (``--out DIR`` to choose; an existing file is replaced only with
``--force``); ``benchmarks/results/`` holds the committed ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch
import torchvision

from fcnclassify import convert
from fcnclassify.dense import prepare, resolve_device, resolve_dtype
from fcnclassify.memory import activation_memory, format_bytes, parse_memory
from fcnclassify.tiling import choose_tile, plan_tiles, tiled_forward

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


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _rss()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels (default 4096)")
    parser.add_argument("--max-memory", default="4GB", help="activation budget (default 4GB)")
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
    torch.manual_seed(0)
    fcn = convert(getattr(torchvision.models, args.model)().eval())
    fcn, _ = prepare(fcn, device=device, dtype=dtype)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)

    untiled = activation_memory(fcn, (args.size, args.size), dtype=dtype)
    t0 = time.perf_counter()
    tile = choose_tile(fcn, (args.size, args.size), budget, dtype=dtype)
    plan_s = time.perf_counter() - t0
    tiles = list(plan_tiles(fcn.geometry, (args.size, args.size), tile))
    crop = max(((t.crop[1] - t.crop[0]), (t.crop[3] - t.crop[2])) for t in tiles)
    estimate = activation_memory(fcn, crop, dtype=dtype)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        before = _current_rss()
    t0 = time.perf_counter()
    logits = tiled_forward(fcn, x, tile=tile, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss()

    # 2 FLOP per multiply-add: weights (MACs per output position) x output positions
    flops = 2 * sum(m.weight.numel() * _positions(fcn, m, args.size) for m in _convs(fcn))
    result = {
        "model": args.model, "size": args.size, "dtype": args.dtype, "device": str(device),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "max_memory": budget, "untiled_estimate": untiled, "tile_cells": list(tile),
        "tiles": len(tiles), "largest_crop": list(crop), "tile_estimate": estimate,
        "held_before": before, "peak": peak, "working_memory": peak - before,
        "map": list(logits.shape[-2:]), "plan_seconds": round(plan_s, 2),
        "seconds": round(seconds, 1), "tflop_untiled": round(flops / 1e12, 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model} {args.size}x{args.size} {args.dtype} on {device}: map {logits.shape[-2]}x"
          f"{logits.shape[-1]}, {len(tiles)} tiles of {tile[0]}x{tile[1]} cells (crops up to "
          f"{crop[0]}x{crop[1]} px)")
    print(f"  untiled would need ~{format_bytes(untiled)}; budget {format_bytes(budget)}; "
          f"estimate per tile {format_bytes(estimate)}")
    print(f"  time {seconds:.1f} s ({flops / 1e12:.1f} TFLOP untiled); peak "
          f"{'RSS' if device.type == 'cpu' else 'allocated'} {format_bytes(peak)}, "
          f"held before {format_bytes(before)}, working memory {format_bytes(peak - before)}")
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
