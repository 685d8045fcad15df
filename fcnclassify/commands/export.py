"""``fcnclassify export -m MODEL --onnx FILE``: the fully-convolutional network as ONNX.

The converted network (window cells by default, as in every other command) with dynamic batch,
height and width, from the dynamo-based exporter; verified with onnxruntime against PyTorch at three
input sizes before it is given its name (the largest difference of the logits at each is printed);
geometry, normalisation, model name and labels in its metadata, so that
``classify --onnx FILE`` and ``heatmap --onnx FILE`` run it with no PyTorch model
(:mod:`fcnclassify.network.export`, :mod:`fcnclassify.network.onnx_runtime`).
"""

from __future__ import annotations

import argparse

from ._options import add_model_options, load_from_args

HELP = "write the fully-convolutional network as ONNX (dynamic size), verified with onnxruntime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    group.add_argument("--force", "-f", action="store_true", help="replace an existing FILE")
    group.add_argument("--opset", type=int, default=None, metavar="N",
                       help="ONNX opset (default: the exporter's)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..network.export import check_target, export_onnx, require

    for package in ("onnx", "onnxruntime", "onnxscript"):  # refused before the model loads
        require(package)
    check_target(Path(args.onnx), force=args.force)
    model = load_from_args(args)
    report = export_onnx(model, args.onnx, force=args.force, opset=args.opset)
    g = model.fcn.geometry
    print(f"wrote {report.path} ({report.bytes / 2**20:.1f} MiB): {model.name}, "
          f"{model.num_classes} classes, cells {model.fcn.cells!r}, window {g.window}, "
          f"stride {g.stride}, offset {g.offset}, receptive field {g.receptive_field}")
    print(f"input x: (batch, 3, height, width), height and width >= {g.min_input}; "
          f"output logits: (batch, {model.num_classes}, rows, cols)")
    for (h, w), difference in report.differences:
        rows, cols = g.output_size(h, w)
        print(f"  onnxruntime vs PyTorch at {h}x{w} ({rows}x{cols} cells): max |logits "
              f"difference| {difference:.2e}")
    print(f"verified: every difference within {report.tolerance:.1e}")
    return 0
