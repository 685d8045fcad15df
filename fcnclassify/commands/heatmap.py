"""``fcnclassify heatmap IMAGE...``: class heatmaps blended over each photo, a grid, JSON, raw maps.

The image is evaluated over a pyramid of sizes by default (:func:`fcnclassify.evaluation.scales.pyramid_sizes`).
For each image, and each class asked for (default: the top-k classes by what their heatmaps hold
over 1% of the image, :meth:`fcnclassify.evaluation.predict.Prediction.heatmap_scores`), it
writes the class's per-window probability at the photo's resolution, colour-mapped and blended
over it with a legend; a grid of the photo and those overlays; and with ``--save-npz`` the raw
score maps. An input ``chelsea.jpg`` writes ``<out>/chelsea-jpg_<rank>_<class-slug>.jpg``,
``<out>/chelsea-jpg_grid.jpg``, ``<out>/chelsea-jpg_maps.npz`` and with ``--viewer`` the folder
``<out>/chelsea-jpg_viewer/`` (Deep Zoom layers and ``viewer.html``; ``fcnclassify view`` opens it)
(:mod:`fcnclassify.outputs.files`), and ``<out>/fcnclassify-manifest.json`` records them.

Nothing is overwritten without ``--force``: every image's outputs are checked before any work, so
a refused run writes nothing. Each image's files appear together or not at all; ``--resume`` skips
the images whose outputs are complete (same input, same options) and writes the others; ``--force``
replaces an image's whole earlier set. As in ``classify``, a path that is missing or cannot be
read as an image is reported on stderr, one line naming it, and skipped with no output; the other
images are processed and the exit code is 2. ``--json`` prints ``classify``'s document, with a peak
per class, once all images are done.
"""

from __future__ import annotations

import argparse

from ._options import (add_engine_options, add_evaluation_options, add_model_options, load_from_args,
                       runtime)

HELP = "write class heatmaps of images: an overlay per class, a grid, optional JSON and raw maps"

DEFAULT_OUT = "fcnclassify-out"
FORMATS = ("jpg", "webp", "png")  # fcnclassify.outputs.files.FORMATS, without importing it
# what a set of outputs depends on: a set written with other values is not finished for --resume
OUTPUT_OPTIONS = ("model", "weights", "onnx", "num_classes", "labels", "input_size", "cells", "sizes",
                  "scales", "flip", "pool", "over", "dtype", "stride_factor", "topk", "classes",
                  "alpha", "colormap", "format", "quality", "grid_width", "save_npz", "viewer", "mpp",
                  "tissue", "threshold")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, or folders (the images directly inside them)")
    add_model_options(parser)
    add_evaluation_options(parser, topk=3, sizes="pyramid", flip=False)
    add_engine_options(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--classes", "-c", nargs="+", default=None, metavar="NAME_OR_ID",
                       help="classes to draw, by name ('tabby', quote names with spaces) or index "
                            "(default: the top-k classes of each image)")
    add_output_options(group)
    group.add_argument("--save-npz", action="store_true",
                       help="also write <key>_maps.npz: the logits of every map, its scale, flip and "
                            "the cell geometry")
    group.add_argument("--viewer", action="store_true",
                       help="also write <key>_viewer/: the photo and each class's heatmap as Deep Zoom "
                            "layers with viewer.html, a page that works offline from file:// "
                            "(`fcnclassify view DIR/<key>_viewer` opens it)")
    group.add_argument("--resume", action="store_true",
                       help="skip the images whose outputs are complete with the same input and "
                            "options (after an interrupted run); write the others; a slide resumes "
                            "from its finished tiles")
    slides = parser.add_argument_group(
        "slides and huge TIFFs",
        "a whole-slide image (SVS, NDPI, MRXS, ... with the openslide extra) or a tiled, pyramidal or "
        "very large TIFF is read tile by tile and written as <key>_slide/ in --out: scores.zarr, "
        "heatmap.ome.tif, regions.geojson, Deep Zoom layers with viewer.html, summary.json "
        "(needs the slide extra: pip install 'fcnclassify[slide]')")
    slides.add_argument("--mpp", type=float, default=None, metavar="MICRONS",
                        help="evaluate the slide at this many microns per pixel (the file must say "
                             "its own); otherwise at --scales S (one factor, default 1: level 0)")
    slides.add_argument("--tissue", choices=("otsu", "none"), default="otsu",
                        help="skip background tiles by an Otsu mask on a low level (otsu, default) "
                             "or evaluate every tile (none: satellite and other scenes)")
    slides.add_argument("--threshold", type=float, default=0.5, metavar="P",
                        help="per-window probability at which regions.geojson draws a class's "
                             "regions (default: 0.5)")


def add_output_options(group) -> None:
    """``--out``, ``--format``, ``--quality``, ``--grid-width``, ``--alpha``, ``--colormap``,
    ``--force``: shared with ``demo``."""
    group.add_argument("--out", "-o", default=DEFAULT_OUT, metavar="DIR",
                       help=f"output folder, created if needed (default: {DEFAULT_OUT})")
    group.add_argument("--format", choices=FORMATS, default="jpg",
                       help="overlays and grid as JPEG or WebP (at --quality) or lossless PNG "
                            "(default: jpg)")
    group.add_argument("--quality", type=_quality, default=90, metavar="1..100",
                       help="JPEG/WebP quality (default: 90)")
    group.add_argument("--grid-width", type=_pixels, default=2400, metavar="PIXELS",
                       help="a wider grid is shrunk to this width (default: 2400)")
    group.add_argument("--alpha", type=float, default=0.5, metavar="A",
                       help="opacity of the colours over the photo, 0..1 (default: 0.5)")
    group.add_argument("--colormap", default="jet", metavar="NAME",
                       help="OpenCV colour map: jet, turbo, viridis, inferno, magma, plasma, hot, ... "
                            "(default: jet)")
    group.add_argument("--force", "-f", action="store_true",
                       help="replace existing outputs (an image's whole earlier set)")


def check_output_options(args: argparse.Namespace) -> None:
    """The output options argparse cannot check without importing OpenCV."""
    from ..outputs.render import COLORMAPS

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"expected --alpha in [0, 1] but got {args.alpha}")
    if args.colormap not in COLORMAPS:
        raise ValueError(f"expected --colormap in {', '.join(sorted(COLORMAPS))} but got "
                         f"{args.colormap!r}")


def run(args: argparse.Namespace) -> int:
    from ..network.device import resolve_device, resolve_dtype
    from ..outputs.files import OutputFolder
    from ..outputs.heatmaps import write_heatmaps
    from ._loop import HEATMAP_SCORE, ImageLoop

    check_output_options(args)
    loop = ImageLoop("heatmap", args.images)
    if not loop.paths:
        return 2
    options = {name: getattr(args, name, None) for name in OUTPUT_OPTIONS}
    folder = OutputFolder(args.out, options=options, force=args.force, resume=args.resume)
    jobs = {job.source: job for job in folder.plan(loop.paths)}  # refuses before any work
    for note in folder.notes:
        _note(note)
    finished = [job for job in jobs.values() if job.finished]
    if finished:
        _note(f"{len(finished)} image(s) already done in {folder.path} (--resume): skipped")
    loop.paths = [path for path in loop.paths if not jobs[path].finished]
    runtime(args)  # a contradiction in the options fails once, in one line
    resolve_dtype(args.dtype, resolve_device(args.device))  # a bad device fails once, not per image
    if not loop.paths and not args.json:
        return loop.finish(None, args, [])

    model = load_from_args(args)
    classes = _unique_classes(model, args.classes) if args.classes else None
    documents = {job.source: job.finished["document"] for job in finished}
    slides = [path for path in loop.paths if _is_slide(path)]
    loop.paths = [path for path in loop.paths if path not in slides]
    for path in slides:  # streamed in and out, one after the other
        try:
            documents[path] = _slide(folder, jobs[path], model, classes, args)
        except (ValueError, OSError) as e:
            loop.report(e)
            continue
        if not args.json:
            loop.write(_slide_summary(documents[path]))
    for path, _, prediction in loop.predictions(model, args):
        # by default the classes whose heatmaps show the most: an object, not one window's texture
        chosen = classes or [index for index, _, _ in prediction.topk(args.topk, by="heatmap")]
        documents[path] = write_heatmaps(
            folder, jobs[path], prediction, chosen, alpha=args.alpha, colormap=args.colormap,
            format=args.format, quality=args.quality, grid_width=args.grid_width,
            save_npz=args.save_npz, viewer=args.viewer, model=model.name)
        if not args.json:
            loop.write(_summary(documents[path]))
    # the same document as `fcnclassify classify --json`, with peaks; input order
    return loop.finish(model, args, [documents[p] for p in jobs if p in documents],
                       {"heatmap_score": HEATMAP_SCORE})


def _is_slide(path) -> bool:
    from ..io.slides import is_slide

    return is_slide(path)


def _slide(folder, job, model, classes, args: argparse.Namespace) -> dict:
    """One slide's outputs: the folder ``<key>_slide`` through the output folder's atomic set (its
    work folder ``.<key>_slide.partial`` kept across interruptions for ``--resume``)."""
    from ..io.slides import open_slide
    from ..outputs.files import slide_name
    from ..outputs.slide import SlideOptions, slide_heatmaps
    from ._options import engine, show_progress

    name = slide_name(job.key)
    partial = folder.path / f".{name}.partial"
    if partial.exists() and not (args.resume or args.force):
        raise FileExistsError(f"{partial}: an interrupted run's tiles are there (pass --resume to "
                              f"continue it, or --force to start again)")
    scales = args.scales or (1.0,)
    if len(scales) != 1 or (args.mpp is not None and args.scales):
        raise ValueError(f"{job.source}: a slide is evaluated at one scale: expected --scales S (one "
                         f"factor) or --mpp MICRONS")
    scale = scales[0]
    if args.mpp is not None:
        with open_slide(job.source) as slide:
            scale = slide.scale_for_mpp(args.mpp)
    tiles = None
    chosen = engine(args)
    if chosen == "torchrun":
        raise ValueError(f"{job.source}: a slide runs on --engine local or ray (its tiles spread over "
                         f"the Ray cluster), not under torchrun")
    if chosen == "ray":
        import functools

        from ..distributed.slides import tile_runner

        tiles = tile_runner(functools.partial(load_from_args, args), str(job.source), scale=scale,
                            address=args.ray_address, device=args.device, dtype=args.dtype)
    options = SlideOptions(scale=scale, tissue=args.tissue, topk=args.topk,
                           classes=tuple(classes) if classes else None, threshold=args.threshold,
                           dtype=args.dtype, colormap=args.colormap)
    document: dict = {}

    def write(temporary):
        document.update(slide_heatmaps(model, job.source, temporary, partial=partial, options=options,
                                       max_memory=args.max_memory, device=args.device,
                                       resume=args.resume, progress=show_progress(args),
                                       viewer=True, tiles=tiles))
        document["folder"] = str(folder.path / name)

    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write(job, {name: write}, document=document)
    return document


def _slide_summary(document: dict) -> str:
    lines = [f"{document['image']}  {document['width']}x{document['height']}  scale "
             f"{document['scale']:g}, {document['cells'][1]}x{document['cells'][0]} cells, "
             f"{document['evaluated']} tiles evaluated, {document['skipped']} background, "
             f"{document['resumed']} resumed, {document['megapixels_per_second']} Mpx/s"]
    for rank, entry in enumerate(document["classes"], 1):
        x0, y0, x1, y1 = entry["peak"]["box"]
        lines.append(f"  {rank}. {entry['label']:<24} window {entry['peak']['score']:.3f} at "
                     f"({(x0 + x1) / 2:.0f}, {(y0 + y1) / 2:.0f})  image {entry['score']:.4f}")
    lines.append(f"  -> {document['folder']}/ ({', '.join(document['files'])})")
    return "\n".join(lines)


def _unique_classes(model, names: list[str]) -> list[int]:
    """Class indices of ``--classes``, each once, in the order first given."""
    indices = [model.class_index(name) for name in names]
    unique = list(dict.fromkeys(indices))
    if len(unique) < len(indices):
        repeated = [model.categories[i] for i in unique if indices.count(i) > 1]
        _note(f"--classes names {', '.join(repeated)} more than once: drawn once")
    return unique


def _note(text: str) -> None:
    from ..io.stderr import say

    say(f"fcnclassify heatmap: note: {text}")


def _summary(document: dict) -> str:
    sizes = sorted({m["size"] for m in document["maps"]})
    lines = [f"{document['image']}  {document['width']}x{document['height']}  "
             f"{len(document['maps'])} maps, Q={','.join(map(str, sizes))}"]
    for rank, entry in enumerate(document["classes"], 1):
        peak = entry["peak"]
        lines.append(f"  {rank}. {entry['label']:<24} heatmap {entry['heatmap_score']:.3f}  window "
                     f"{peak['score']:.3f} (Q={peak['size']}) at ({peak['x']:.0f}, {peak['y']:.0f})  "
                     f"image {entry['score']:.4f}  "
                     f"-> {entry.get('overlay', '')}")
    lines.append(f"  grid -> {document['grid']}")
    if document.get("viewer"):
        lines.append(f"  viewer -> {document['viewer']}")
    return "\n".join(lines)


def _quality(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number in 1..100 but got {text!r}")
    return int(text)


def _pixels(text: str) -> int:
    if not text.isdigit() or int(text) < 16:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels >= 16 but got {text!r}")
    return int(text)
