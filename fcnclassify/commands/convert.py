"""``fcnclassify convert``: write a converted, fully-convolutional network's weights."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ._options import add_model_options

HELP = "convert a model to a fully-convolutional network and write its weights (safetensors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--out", "-o", default=None, metavar="FILE",
                        help="output file (default: weights/<model>-fcn.safetensors when run in a "
                             "checkout that has weights/registry.json, else ./<model>-fcn.safetensors)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def default_output(name: str, *, cwd: Path | None = None) -> Path:
    """``weights/<name>-fcn.safetensors`` in the repository's weights folder, if ``cwd`` has one; a
    name such as ``timm/convnext_tiny`` or ``resnet50:IMAGENET1K_V2`` becomes one file name
    (``timm-convnext_tiny``, ``resnet50-IMAGENET1K_V2``)."""
    cwd = Path.cwd() if cwd is None else cwd
    folder = cwd / "weights"
    base = folder if (folder / "registry.json").is_file() else cwd
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return base / f"{safe}-fcn.safetensors"


def run(args: argparse.Namespace) -> int:
    from ..io.checkpoint import save_weights
    from ..models.registry import converted_metadata
    from ._options import load_from_args

    out = Path(args.out) if args.out is not None else (
        default_output(args.model) if args.model else None)
    if out is not None:
        if out.suffix != ".safetensors":
            raise ValueError(f"expected an output file ending in .safetensors but got {out}")
        if out.exists() and not args.force:  # fail before loading anything
            raise FileExistsError(f"{out} exists; pass --force to replace it")
    model = load_from_args(args)
    out = out if out is not None else default_output(model.name)
    path = save_weights(model.fcn, out, metadata=converted_metadata(model), overwrite=args.force)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    params = sum(p.numel() for p in model.fcn.parameters())
    g = model.fcn.geometry
    print(f"wrote {path} ({model.name}, {model.num_classes} classes, head {model.fcn.kind!r}, "
          f"window {g.window} stride {g.stride}, {params / 1e6:.1f}M parameters, "
          f"{path.stat().st_size / 2**20:.1f} MiB)")
    return 0
