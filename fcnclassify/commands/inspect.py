"""``fcnclassify inspect``: layer tables of the original and the converted network at one input size."""

from __future__ import annotations

import argparse

from ._options import add_model_options

HELP = "layer tables of the original and the converted network for an input size, and the geometry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=(400, 400), metavar="WxH",
                        help="input size in pixels, width x height as every size option takes it "
                             "(e.g. 600x400), or one number for a square (default: 400x400)")
    add_model_options(parser)


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(width, height)``: ``"600x400"`` -> ``(600, 400)``; ``"400"`` -> ``(400, 400)``."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 400x400 but got {text!r}")
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 400x400 but got {text!r}")
    return values[0], values[1]


def run(args: argparse.Namespace) -> int:
    from ..network.convert import convert
    from ..models.registry import build_original_meta, load_model, model_spec, resolve
    from ..network.summary import format_table, layer_table

    width, height = args.size
    if str(args.weights) == "default":  # shapes do not depend on the weights: nothing to download
        name = args.model or args._default_model
        spec = model_spec(name)
        input_size = args.input_size or spec.input_size
        original = build_original_meta(name, num_classes=args.num_classes or spec.num_classes)
        fcn = convert(original.to_empty(device="cpu"), input_size=input_size)
        source = "random weights (shapes and parameter counts do not depend on them; nothing downloaded)"
        normalization, crop_pct, interpolation = spec.normalization, spec.crop_pct, spec.interpolation
    else:
        model = load_model(args.model, weights=args.weights, num_classes=args.num_classes,
                           labels=args.labels, input_size=args.input_size)
        name, original, fcn, source = model.name, model.original, model.fcn, f"weights {args.weights}"
        input_size = model.input_size
        normalization, crop_pct, interpolation = (model.normalization, model.crop_pct,
                                                  model.interpolation)
    family = resolve(name)
    fcn = fcn.to("meta")  # a throwaway copy: tabulate without arithmetic
    g = fcn.geometry
    print(f"{name} at {width}x{height} pixels, {source}")
    print(f"family {family.name}: trained at {input_size}x{input_size}"
          + (f", crop {crop_pct:g}" if crop_pct else "")
          + (f", {interpolation} resize" if interpolation else "")
          + f", mean {_floats(normalization.mean)}, std {_floats(normalization.std)}")
    print()
    print(f"original {type(original).__name__} (input 1x3x{height}x{width})")
    rows = layer_table(original.to("meta"), (height, width))
    print(format_table(rows, total_params=_count(original)))
    print(_verdict(rows, fcn.kind, height, width, input_size))
    print()
    print(f"converted FullyConvNet, head kind {fcn.kind!r} (input 1x3x{height}x{width})")
    converted = layer_table(fcn, (height, width)) if min(height, width) >= g.min_input else []
    if converted:
        print(format_table(converted, total_params=_count(fcn)))
    else:
        print(f"(smaller than one window: at least {g.min_input}x{g.min_input} pixels are needed; "
              "dense evaluation pads it)")
    print()
    print(f"window {g.window} px, stride {g.stride} px, offset {g.offset} px, "
          f"receptive field {g.receptive_field} px"
          + (", global context (a layer sees the whole image)" if g.global_context else ""))
    if min(height, width) >= g.min_input:
        h, w = g.output_size(height, width)
        print(f"score map {h}x{w} ({h * w} cells) for {width}x{height}; minimum input "
              f"{g.min_input}x{g.min_input}")
    return 0


def _floats(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _verdict(rows, kind: str, height: int, width: int, input_size: int) -> str:
    """One plain sentence on what the original head does with this input size."""
    failed = rows and rows[-1].output_shape is None
    if failed:
        return (f"-> the original fails at {width}x{height}: {rows[-1].name} ({rows[-1].type}) "
                f"{rows[-1].note}; it only runs at {input_size}x{input_size}")
    pools = [r for r in rows if r.type.startswith("Adaptive")]
    if pools and pools[-1].input_shape and pools[-1].input_shape[-2:] != pools[-1].output_shape[-2:]:
        p = pools[-1]
        src, dst = "x".join(map(str, p.input_shape[-2:])), "x".join(map(str, p.output_shape[-2:]))
        what = ("averages the whole" if p.output_shape[-2:] == (1, 1)
                else "resamples the")
        return (f"-> the original gives ONE prediction for the whole {width}x{height} image: "
                f"{p.name} ({p.type}) {what} {src} feature map to {dst} and the classifier runs "
                f"once; no map of where things are")
    return f"-> the original gives one prediction for the {width}x{height} image"
