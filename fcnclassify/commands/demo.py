"""``fcnclassify demo``: the whole job offline, on a scene composed from scikit-image's photos.

It pastes five CC0 photos (a cat, an espresso, a rocket, a motorcycle, a cameraman with his tripod)
at known places on a 1400 x 1000 canvas, evaluates the canvas densely with the offline
``efficientnet_lite0``, writes ``scene.png``, one overlay per object's class and a grid, and prints
whether the peak of each object's class falls inside that object.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..outputs.render import COLORMAPS
from .heatmap import DEFAULT_OUT, existing_outputs, write_outputs

HELP = "run the offline model on a scene composed from scikit-image's photos and check the peaks"

MODEL = "efficientnet_lite0"
STEM = "scene"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output folder, created if needed (default: {DEFAULT_OUT})")
    parser.add_argument("--force", "-f", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to compute (default: auto, CUDA when available)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="computation precision (default: float32; float16 on CUDA only)")
    parser.add_argument("--alpha", type=float, default=0.5, metavar="A",
                        help="opacity of the colours over the photo, 0..1 (default: 0.5)")
    parser.add_argument("--colormap", choices=sorted(COLORMAPS), default="jet", metavar="NAME",
                        help="OpenCV colour map (default: jet)")


def run(args: argparse.Namespace) -> int:
    from ..dense import resolve_device, resolve_dtype
    from ..images import write_image
    from ..models import load_model
    from ..predict import predict
    from ..scene import SCENE_SCALES, check_peaks, compose_scene, scene_objects

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"expected --alpha in [0, 1] but got {args.alpha}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"expected --out to be a folder but {out} is a file")
    scene_path = out / f"{STEM}.png"
    if not args.force:
        existing = [p for p in [scene_path] if p.exists()]
        existing += existing_outputs(out, STEM, len(scene_objects()))
        if existing:
            raise FileExistsError(f"{existing[0]}: already exists (pass --force to overwrite it)")
    resolve_dtype(args.dtype, resolve_device(args.device))

    canvas, objects = compose_scene()
    model = load_model(MODEL)
    prediction = predict(model, canvas, scales=SCENE_SCALES, device=args.device, dtype=args.dtype)
    prediction.path = str(scene_path)
    checks = check_peaks(prediction, objects)

    out.mkdir(parents=True, exist_ok=True)
    write_image(scene_path, canvas, overwrite=args.force)
    files = write_outputs(prediction, [c.cls for c in checks], out, STEM, alpha=args.alpha,
                          colormap=args.colormap, overwrite=args.force)

    height, width = canvas.shape[:2]
    map_h, map_w = prediction.maps[0].shape
    print(f"{MODEL} on a {width}x{height} scene at scale {', '.join(map(str, SCENE_SCALES))} "
          f"(score map {map_h}x{map_w}, cell stride {prediction.maps[0].geometry.stride} px):")
    print(f"{'object':<11} {'box (x0, y0, x1, y1)':<22} {'class':<16} {'peak':>5}  "
          f"{'at (x, y)':<12} inside")
    for check in checks:
        box = "({}, {}, {}, {})".format(*check.object.box)
        at = f"({check.x:.0f}, {check.y:.0f})"
        print(f"{check.object.name:<11} {box:<22} {prediction.categories[check.cls]:<16} "
              f"{check.score:5.3f}  {at:<12} {'yes' if check.inside else 'NO'}")
    hits = sum(c.inside for c in checks)
    print(f"{hits}/{len(checks)} peaks inside their objects")
    print(f"wrote {scene_path}, {len(files['overlays'])} overlays and {files['grid']}", file=sys.stdout)
    return 0
