"""``fcnclassify demo``: the whole job offline, on a scene composed from scikit-image's photos.

It pastes five CC0 photos (a cat, an espresso, a rocket, a motorcycle, a cameraman with his tripod)
at known places on a 1400 x 1000 canvas, evaluates the canvas densely with the offline
``efficientnet_lite0`` over the pyramid of sizes that ``heatmap`` uses by default, writes ``scene.png``, one overlay per object's class
(``scene_<rank>_<class>.jpg``) and a grid (``scene_grid.jpg``), recorded in the folder's manifest,
and prints whether the peak of each object's class falls inside that object.
"""

from __future__ import annotations

import argparse

from .heatmap import add_output_options, check_output_options

HELP = "run the offline model on a scene composed from scikit-image's photos and check the peaks"

MODEL = "efficientnet_lite0"
KEY = "scene"
SCENE = "scene.png"  # lossless: the input of the run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_options(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to compute (default: auto, CUDA when available)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="computation precision (default: float32; float16 on CUDA only)")


def run(args: argparse.Namespace) -> int:
    from ..network.device import resolve_device, resolve_dtype
    from ..io.images import write_image
    from ..models.registry import load_model
    from ..outputs.files import Job, OutputFolder
    from ..outputs.heatmaps import write_heatmaps
    from ..evaluation.predict import predict
    from ..scene import check_peaks, compose_scene

    check_output_options(args)
    options = {name: getattr(args, name) for name in ("dtype", "alpha", "colormap", "format",
                                                      "quality", "grid_width")}
    folder = OutputFolder(args.out, options={"demo": MODEL, **options}, force=args.force,
                          resumable=False)
    (job,) = folder.check([Job(KEY, also=(SCENE,))])  # refuses before any work
    resolve_dtype(args.dtype, resolve_device(args.device))

    canvas, objects = compose_scene()
    model = load_model(MODEL)
    prediction = predict(model, canvas, sizes="pyramid", flip=False, device=args.device,
                         dtype=args.dtype)  # what `heatmap` does by default
    prediction.path = str(folder.path / SCENE)
    checks = check_peaks(prediction, objects)
    document = write_heatmaps(folder, job, prediction, [c.cls for c in checks], alpha=args.alpha,
                              colormap=args.colormap, format=args.format, quality=args.quality,
                              grid_width=args.grid_width,
                              also={SCENE: lambda path: write_image(path, canvas)})

    height, width = canvas.shape[:2]
    sizes = ",".join(str(min(m.input_size)) for m in prediction.maps)
    print(f"{MODEL} on a {width}x{height} scene over the pyramid Q={sizes} (every cell a "
          f"{model.fcn.geometry.window}-pixel window, stride {model.fcn.geometry.stride}):")
    print(f"{'object':<11} {'box (x0, y0, x1, y1)':<22} {'class':<16} {'peak':>5}  "
          f"{'Q':>4}  {'at (x, y)':<12} inside")
    for check in checks:
        box = "({}, {}, {}, {})".format(*check.object.box)
        at = f"({check.x:.0f}, {check.y:.0f})"
        size = prediction.peak(check.cls)["size"]
        print(f"{check.object.name:<11} {box:<22} {prediction.categories[check.cls]:<16} "
              f"{check.score:5.3f}  {size:>4}  {at:<12} {'yes' if check.inside else 'NO'}")
    hits = sum(c.inside for c in checks)
    print(f"{hits}/{len(checks)} peaks inside their objects")
    print(f"wrote {prediction.path}, {len(document['classes'])} overlays and {document['grid']}")
    return 0
