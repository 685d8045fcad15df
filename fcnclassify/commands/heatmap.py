"""``fcnclassify heatmap IMAGE...``: class heatmaps blended over each photo, a grid, JSON, raw maps.

The image is evaluated over a pyramid of sizes by default (:func:`fcnclassify.scales.pyramid_sizes`).
For each image, and each class asked for (default: the top-k classes by their best window), it
writes ``<out>/<stem>_<rank>_<class-slug>.png``, the class's per-window probability at the photo's
resolution (the per-pixel maximum over the maps, :meth:`Prediction.heatmap`), colour-mapped and
blended over it with a legend; ``<out>/<stem>_grid.png``, the photo and those
overlays side by side; and with ``--save-npz`` ``<out>/<stem>_maps.npz``, the raw score maps.

Nothing is overwritten without ``--force``: every image's outputs are checked before any work, so
a refused run writes nothing. With ``--force`` an image's earlier overlays at the same ranks are
replaced (also those of other classes). As in ``classify``, a path that is missing or cannot be
read as an image is reported on stderr, one line naming it, and skipped with no output; the other
images are processed and the exit code is 2. ``--json`` prints ``classify``'s document, with a peak
per class, once all images are done.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..images import write_image
from ..outputs.render import COLORMAPS, grid, overlay
from ._loop import describe_maps
from ._options import add_evaluation_options, add_model_options, load_from_args

if TYPE_CHECKING:
    from ..predict import Prediction

HELP = "write class heatmaps of images: an overlay PNG per class, a grid, optional JSON and raw maps"

DEFAULT_OUT = "fcnclassify-out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, or folders (the images directly inside them)")
    add_model_options(parser)
    add_evaluation_options(parser, topk=3, sizes="pyramid", flip=False)
    group = parser.add_argument_group("output")
    group.add_argument("--classes", "-c", nargs="+", default=None, metavar="NAME_OR_ID",
                       help="classes to draw, by name ('tabby', quote names with spaces) or index "
                            "(default: the top-k classes of each image)")
    group.add_argument("--out", "-o", default=DEFAULT_OUT, metavar="DIR",
                       help=f"output folder, created if needed (default: {DEFAULT_OUT})")
    group.add_argument("--alpha", type=float, default=0.5, metavar="A",
                       help="opacity of the colours over the photo, 0..1 (default: 0.5)")
    group.add_argument("--colormap", choices=sorted(COLORMAPS), default="jet", metavar="NAME",
                       help="OpenCV colour map: jet, turbo, viridis, inferno, magma, plasma, hot, ... "
                            "(default: jet)")
    group.add_argument("--save-npz", action="store_true",
                       help="also write <stem>_maps.npz: the logits of every map, its scale, flip and "
                            "the cell geometry")
    group.add_argument("--force", "-f", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> int:
    from ..dense import resolve_device, resolve_dtype
    from ._loop import ImageLoop

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"expected --alpha in [0, 1] but got {args.alpha}")
    loop = ImageLoop("heatmap", args.images)
    if not loop.paths:
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"expected --out to be a folder but {out} is a file")
    _check_unique_stems(loop.paths)
    count = len(args.classes) if args.classes else args.topk
    if not args.force:
        for path in loop.paths:
            existing = existing_outputs(out, path.stem, count, npz=args.save_npz)
            if existing:
                raise FileExistsError(f"{existing[0]}: already exists (pass --force to overwrite it)")
    resolve_dtype(args.dtype, resolve_device(args.device))  # a bad device fails once, not per image

    model = load_from_args(args)
    classes = [model.class_index(c) for c in args.classes] if args.classes else None
    documents = []
    for path, _, prediction in loop.predictions(model, args):
        # by default the classes whose best window is most confident: what the heatmaps can show
        chosen = classes or [index for index, _, _ in prediction.topk(args.topk, by="window")]
        out.mkdir(parents=True, exist_ok=True)
        files = write_outputs(prediction, chosen, out, path.stem, alpha=args.alpha,
                              colormap=args.colormap, save_npz=args.save_npz, overwrite=args.force)
        document = describe(prediction, chosen, files)
        documents.append(document)
        if not args.json:
            loop.write(_summary(document))
    # the same document as `fcnclassify classify --json`, with peaks
    return loop.finish(model, args, documents)


def slug(label: str) -> str:
    """A file-name-safe form of a class name: ``"Egyptian cat"`` -> ``"egyptian-cat"``."""
    name = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "class"
    # "<stem>_<rank>_grid.png" is the grid of the image "<stem>_<rank>": never an overlay name
    return "grid-class" if name == "grid" else name


def output_paths(out: Path, stem: str, labels: Sequence[str]) -> tuple[list[Path], Path, Path]:
    """``(overlays, grid, npz)``: the files written for an image named ``stem``."""
    overlays = [out / f"{stem}_{rank}_{slug(label)}.png" for rank, label in enumerate(labels, 1)]
    return overlays, out / f"{stem}_grid.png", out / f"{stem}_maps.npz"


def existing_outputs(out: Path, stem: str, count: int, *, npz: bool = False) -> list[Path]:
    """Files in ``out`` that a run would replace for image ``stem`` with ``count`` classes.

    An overlay at any of ranks 1..count counts, whatever its class: the classes are known only
    after the image is evaluated.
    """
    if not out.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(stem)}_(\d+)_(?!grid\.png$)[a-z0-9-]+\.png")
    found = sorted(p for p in out.iterdir()
                   if (m := pattern.fullmatch(p.name)) and 1 <= int(m.group(1)) <= count)
    _, grid_path, npz_path = output_paths(out, stem, [])
    found += [p for p in (grid_path, npz_path if npz else None) if p is not None and p.exists()]
    return found


def write_outputs(prediction: Prediction, classes: Sequence[int], out: Path, stem: str, *,
                  alpha: float = 0.5, colormap: str = "jet", save_npz: bool = False,
                  overwrite: bool = False) -> dict:
    """Writes the overlays, the grid and (optionally) the maps of one prediction.

    Returns:
        ``{"overlays": [paths], "grid": path, "npz": path or None}`` as strings.
    """
    labels = [prediction.categories[c] for c in classes]
    overlay_paths, grid_path, npz_path = output_paths(out, stem, labels)
    if not overwrite:  # the classes are known now: check again, exactly, before writing anything
        for path in [*overlay_paths, grid_path, *([npz_path] if save_npz else [])]:
            if path.exists():
                raise FileExistsError(f"{path}: already exists (pass --force to overwrite it)")
    stale = existing_outputs(out, stem, len(classes)) if overwrite else []
    images, titles = [], []
    for rank, (cls, label) in enumerate(zip(classes, labels), 1):
        score = float(prediction.probabilities[cls])
        peak = prediction.peak(cls)
        legend = [f"{rank}. {label}",
                  f"best window p={peak['score']:.2f} (Q={peak['size']}) at "
                  f"({peak['x']:.0f}, {peak['y']:.0f})",
                  f"image-level p={score:.3f}"]
        images.append(overlay(prediction.image, prediction.heatmap(cls), alpha=alpha,
                              colormap=colormap, legend=legend))
        titles.append(f"{rank}. {label}: window p={peak['score']:.2f}")
    panels = [prediction.image, *images]
    picture = grid(panels, [Path(prediction.path).name if prediction.path else "image", *titles],
                   columns=3 if len(panels) > 4 else None)
    for path, image in zip(overlay_paths, images):
        write_image(path, image, overwrite=overwrite)
    write_image(grid_path, picture, overwrite=overwrite)
    if save_npz:
        save_maps(npz_path, prediction)
    for path in stale:
        if path not in overlay_paths and path != grid_path:
            path.unlink(missing_ok=True)
    return {"overlays": [str(p) for p in overlay_paths], "grid": str(grid_path),
            "npz": str(npz_path) if save_npz else None}


def save_maps(path: Path, prediction: Prediction) -> None:
    """``np.savez_compressed`` of the raw maps: ``logits_<k>`` ``(classes, h, w)`` float32 per map,
    ``scale`` ``(maps, 2)`` (input pixels per original pixel, y and x), ``input_size`` ``(maps, 2)``,
    ``flipped`` ``(maps,)``, ``image_size``, the geometry (``window``, ``stride``, ``offset``,
    ``receptive_field``, ``center``, in input pixels) and ``categories``."""
    maps = prediction.maps
    geometry = maps[0].geometry
    arrays = {f"logits_{k}": m.logits.numpy().astype(np.float32) for k, m in enumerate(maps)}
    arrays.update(
        scale=np.array([m.scale for m in maps], dtype=np.float64),
        input_size=np.array([m.input_size for m in maps], dtype=np.int64),
        flipped=np.array([m.flipped for m in maps], dtype=bool),
        image_size=np.array(maps[0].image_size, dtype=np.int64),
        window=np.int64(geometry.window), stride=np.int64(geometry.stride),
        offset=np.int64(geometry.offset), receptive_field=np.int64(geometry.receptive_field),
        center=np.float64(geometry.center), categories=np.array(prediction.categories, dtype=str),
    )
    temporary = path.with_name(f".{path.name}.tmp.npz")  # savez adds .npz to other names
    try:
        np.savez_compressed(temporary, **arrays)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def describe(prediction: Prediction, classes: Sequence[int], files: dict | None = None) -> dict:
    """The JSON document of one image: size, map size and, per class, score and peak."""
    height, width = prediction.image.shape[:2]
    document = {
        "image": prediction.path,
        "width": width,
        "height": height,
        "maps": describe_maps(prediction),
        "classes": [],
    }
    overlays = (files or {}).get("overlays") or [None] * len(classes)
    for cls, overlay_path in zip(classes, overlays):
        peak = prediction.peak(cls)
        entry = {"id": int(cls), "label": prediction.categories[cls],
                 "score": round(float(prediction.probabilities[cls]), 6),
                 "peak": {"x": round(float(peak["x"]), 2), "y": round(float(peak["y"]), 2),
                          "box": [round(float(v), 2) for v in peak["box"]],
                          "score": round(float(peak["score"]), 6), "size": peak["size"],
                          "scale": peak["scale"], "flipped": peak["flipped"]}}
        if overlay_path is not None:
            entry["overlay"] = overlay_path
        document["classes"].append(entry)
    if files:
        document["grid"] = files["grid"]
        if files.get("npz"):
            document["npz"] = files["npz"]
    return document


def _summary(document: dict) -> str:
    sizes = sorted({m["size"] for m in document["maps"]})
    lines = [f"{document['image']}  {document['width']}x{document['height']}  "
             f"{len(document['maps'])} maps, Q={','.join(map(str, sizes))}"]
    for rank, entry in enumerate(document["classes"], 1):
        peak = entry["peak"]
        lines.append(f"  {rank}. {entry['label']:<24} window {peak['score']:.3f} (Q={peak['size']}) "
                     f"at ({peak['x']:.0f}, {peak['y']:.0f})  image {entry['score']:.4f}  "
                     f"-> {entry.get('overlay', '')}")
    lines.append(f"  grid -> {document['grid']}")
    return "\n".join(lines)


def _check_unique_stems(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ValueError(f"expected images with different names but {seen[path.stem]} and {path} "
                             f"would write the same outputs (run them with different --out)")
        seen[path.stem] = path
