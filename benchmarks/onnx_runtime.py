"""onnxruntime against PyTorch on this CPU: dense seconds of the same exported network.

    python -m benchmarks.onnx_runtime --out benchmarks/results     # lite0, vgg16, resnet50; 224, 512, 1024
    python -m benchmarks.onnx_runtime --quick                      # lite0 and resnet50 at 224 and 512

Each model is converted (window cells, as the commands do), exported with
:func:`fcnclassify.network.export.export_onnx` (verified at three sizes; the largest logits
difference is recorded) and run by :class:`fcnclassify.network.onnx_runtime.OnnxNet` through the same
:func:`fcnclassify.evaluation.dense.dense_evaluate` as the PyTorch network (float32, channels-last,
oneDNN). Seconds: the median of ``--repeats`` passes over a ``size x size`` input, the two runtimes
interleaved (the CPU is shared), after one warm-up pass each. efficientnet_lite0 has its real
ImageNet weights (offline); vgg16 and resnet50 have seeded weights (:mod:`fcnclassify.network.seeded`;
speed does not depend on the values). Results go to ``onnx_cpu.json`` and ``.md`` (``_quick`` with
``--quick``) in a new ``bench-results/<date>-<time>`` folder unless ``--out``; an existing file is
replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .options import add_output_arguments
from .report import default_folder, refuse_overwrite

MODELS = ("efficientnet_lite0", "vgg16", "resnet50")
QUICK_MODELS = ("efficientnet_lite0", "resnet50")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two models at 224 and 512, one repeat")
    parser.add_argument("--models", nargs="+", default=None, choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="sides of the square input (default 224 512 1024; quick 224 512)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of both runtimes (default: torch's default, all cores)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    try:
        from fcnclassify.network.export import require

        for module in ("onnx", "onnxruntime", "onnxscript", "efficientnet_lite_pytorch"):
            require(module)
        out = args.out or default_folder()
        name = "onnx_cpu" + ("_quick" if args.quick else "")
        files = [out / f"{name}.json", out / f"{name}.md"]
        refuse_overwrite(files, force=args.force)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or list(QUICK_MODELS if args.quick else MODELS)
    sizes = args.sizes or ([224, 512] if args.quick else [224, 512, 1024])
    repeats = args.repeats or (1 if args.quick else 3)
    given = argv if argv is not None else sys.argv[1:]
    doc = {"command": "python -m benchmarks.onnx_runtime " + " ".join(given),
           "cpu": cpu_facts(), "repeats": repeats, "rows": []}
    for model in models:
        for row in measure_model(model, sizes=sizes, repeats=repeats, threads=torch.get_num_threads()):
            doc["rows"].append(row)
            print(_line(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps(doc, indent=1) + "\n")
    files[1].write_text(markdown(doc))
    print(f"wrote {files[0]} and {files[1]}")
    return doc


def cpu_facts() -> dict:
    import onnxruntime
    import torch

    return {"capability": torch.backends.cpu.get_cpu_capability(), "processor": _processor(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def network(name: str):
    """``(fully-convolutional network, weights)``: lite0 real, the others seeded."""
    import torchvision

    from fcnclassify import load_model
    from fcnclassify.network.convert import convert
    from fcnclassify.network.seeded import build

    if name == "efficientnet_lite0":
        return load_model(name).fcn, "ImageNet"
    return convert(build(getattr(torchvision.models, name))), "seeded"


def measure_model(name: str, *, sizes: list[int], repeats: int, threads: int) -> list[dict]:
    """One row per size: PyTorch and onnxruntime seconds of one dense pass, and their ratio."""
    import torch

    from fcnclassify.evaluation.dense import dense_evaluate
    from fcnclassify.network.export import export_onnx
    from fcnclassify.network.onnx_runtime import OnnxNet

    fcn, weights = network(name)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        report = export_onnx(fcn, Path(folder) / f"{name}.onnx", name=name)
        export_s = time.perf_counter() - start
        net = OnnxNet(Path(folder) / f"{name}.onnx", threads=threads)
    runtimes = {"torch": fcn, "onnxruntime": net}
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        maps = {k: dense_evaluate(f, x, device="cpu")[0][0].logits for k, f in runtimes.items()}
        difference = float((maps["onnxruntime"] - maps["torch"]).abs().max())  # also the warm-up
        times: dict[str, list[float]] = {k: [] for k in runtimes}
        for _ in range(repeats):
            for k, f in runtimes.items():  # interleaved: both see the same load
                start = time.perf_counter()
                dense_evaluate(f, x, device="cpu")
                times[k].append(time.perf_counter() - start)
        pt, ort = (statistics.median(times[k]) for k in runtimes)
        rows.append({"model": name, "weights": weights, "size": size,
                     "cells": list(maps["torch"].shape[-2:]), "torch_s": round(pt, 4),
                     "onnxruntime_s": round(ort, 4), "speedup": round(pt / ort, 3),
                     "max_abs_difference": difference, "export_s": round(export_s, 1),
                     "verify": [[list(s), d] for s, d in report.differences]})
    return rows


def _line(row: dict) -> str:
    return (f"{row['model']:>18} {row['size']:>4}: torch {row['torch_s']:.3f} s, onnxruntime "
            f"{row['onnxruntime_s']:.3f} s ({row['speedup']:.2f}x); max |difference| "
            f"{row['max_abs_difference']:.1e}")


def markdown(doc: dict) -> str:
    """The table of ``doc``, with the CPU it was measured on."""
    cpu = doc["cpu"]
    lines = [f"# onnxruntime vs PyTorch, dense, CPU ({cpu['processor']}, {cpu['capability']}, "
             f"{cpu['threads']} threads, torch {cpu['torch']}, onnxruntime {cpu['onnxruntime']})", "",
             f"`{doc['command']}`; seconds: median of {doc['repeats']} dense passes (float32) over a "
             "size x size input through `dense_evaluate`, the runtimes interleaved; speedup: "
             "torch / onnxruntime (above 1: onnxruntime is faster); difference: max |logits| "
             "between the two over the whole map.", "",
             "| model | weights | size | cells | torch s | onnxruntime s | speedup | max abs difference |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['weights']} | {r['size']} | {r['cells'][0]}x{r['cells'][1]} | "
                     f"{r['torch_s']:.3f} | {r['onnxruntime_s']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['max_abs_difference']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
