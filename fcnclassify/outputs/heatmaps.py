"""What one prediction leaves behind: an overlay per class with its legend, the grid, the raw maps,
the viewer (Deep Zoom layers and their page) and the JSON document, written as one set of an
:class:`~fcnclassify.outputs.files.OutputFolder`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io.images import write_image
from .files import Job, OutputFolder, Writer, output_names, viewer_name
from .render import grid, overlay

if TYPE_CHECKING:
    from ..evaluation.predict import Prediction

__all__ = ["DEFAULT_GRID_WIDTH", "DEFAULT_QUALITY", "describe", "pictures",
           "save_maps", "write_heatmaps"]

DEFAULT_QUALITY = 90  # JPEG and WebP: a 6000 x 4000 overlay is ~3 MB (JPEG), ~2 MB (WebP), not ~37 MB (PNG)
DEFAULT_GRID_WIDTH = 2400  # pixels


def pictures(prediction: Prediction, classes: Sequence[int], *, alpha: float = 0.5,
             colormap: str = "jet", grid_width: int | None = DEFAULT_GRID_WIDTH
             ) -> tuple[list[np.ndarray], np.ndarray]:
    """``(overlays, grid)``: each class's heatmap over the photo with a legend, at the photo's
    resolution, and the photo beside them (at most ``grid_width`` pixels wide)."""
    from ..evaluation.predict import HEATMAP_FRACTION

    overlays, titles = [], []
    heat = prediction.heatmap_scores(classes).tolist()
    for rank, (cls, held) in enumerate(zip(classes, heat), 1):
        label = prediction.categories[cls]
        peak = prediction.peak(cls)
        legend = [f"{rank}. {label}",
                  f"heatmap p={held:.2f} over {HEATMAP_FRACTION:.0%} of the image",
                  f"best window p={peak['score']:.2f} (Q={peak['size']}) at "
                  f"({peak['x']:.0f}, {peak['y']:.0f})",
                  f"image-level p={float(prediction.probabilities[cls]):.3f}"]
        overlays.append(overlay(prediction.image, prediction.heatmap(cls), alpha=alpha,
                                colormap=colormap, legend=legend))
        titles.append(f"{rank}. {label}: heatmap p={held:.2f}")
    panels = [prediction.image, *overlays]
    name = Path(prediction.path).name if prediction.path else "image"
    picture = grid(panels, [name, *titles], columns=3 if len(panels) > 4 else None,
                   max_width=grid_width)
    return overlays, picture


def write_heatmaps(folder: OutputFolder, job: Job, prediction: Prediction, classes: Sequence[int],
                   *, alpha: float = 0.5, colormap: str = "jet", format: str = "jpg",
                   quality: int = DEFAULT_QUALITY, grid_width: int | None = DEFAULT_GRID_WIDTH,
                   save_npz: bool = False, viewer: bool = False, model: str = "",
                   also: Mapping[str, Writer] | None = None) -> dict:
    """Writes a prediction's overlays, grid and (optionally) maps as ``job``'s set in ``folder``.

    Args:
        format: ``"jpg"``, ``"webp"`` (at ``quality``) or ``"png"`` (lossless).
        viewer: also write the folder ``<key>_viewer/``: the photo and each class's heatmap as
            Deep Zoom layers and ``viewer.html`` (:func:`~fcnclassify.outputs.viewer.write_photo_viewer`).
        model: the model's name, shown by the viewer.
        also: more files of the set, by name (the demo's scene).

    Returns:
        The image's JSON document (:func:`describe`) with the paths written; the manifest keeps it.
    """
    names = output_names(job.key, [prediction.categories[c] for c in classes], format=format,
                         npz=save_npz)
    overlays, picture = pictures(prediction, classes, alpha=alpha, colormap=colormap,
                                 grid_width=grid_width)
    lossy = None if format == "png" else quality

    def image_writer(image: np.ndarray) -> Writer:
        return lambda path: write_image(path, image, quality=lossy)

    files: dict[str, Writer] = dict(also or {})
    files.update({name: image_writer(image) for name, image in zip(names, [*overlays, picture])})
    if save_npz:
        files[names[-1]] = lambda path: save_maps(path, prediction)
    paths = {name: str(folder.path / name) for name in names}
    page = None
    if viewer:
        from .viewer import PAGE, write_photo_viewer

        def viewer_writer(path: Path) -> None:
            heatmaps = [(prediction.categories[c], prediction.heatmap(c)) for c in classes]
            title = Path(prediction.path).name if prediction.path else job.key
            write_photo_viewer(path, prediction.image, heatmaps, title=title, model=model,
                               colormap=colormap, quality=quality)

        files[viewer_name(job.key)] = viewer_writer
        page = str(folder.path / viewer_name(job.key) / PAGE)
    document = describe(prediction, classes, {
        "overlays": [paths[n] for n in names[:len(classes)]], "grid": paths[names[len(classes)]],
        "npz": paths[names[-1]] if save_npz else None, "viewer": page})
    folder.write(job, files, document=document)
    return document


def save_maps(path: str | Path, prediction: Prediction) -> None:
    """``np.savez_compressed`` of the raw maps: ``logits_<k>`` ``(classes, h, w)`` float32 per map,
    ``scale`` ``(maps, 2)`` (input pixels per original pixel, y and x), ``input_size`` ``(maps, 2)``,
    ``flipped`` ``(maps,)``, ``image_size``, the geometry (``window``, ``stride``, ``offset``,
    ``receptive_field``, ``center``, in input pixels) and ``categories``.

    ``path`` should end in ``.npz`` (NumPy adds it otherwise)."""
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
    np.savez_compressed(path, **arrays)


def describe(prediction: Prediction, classes: Sequence[int], files: dict | None = None) -> dict:
    """The JSON document of one image: size, maps and, per class, the image-level score, the
    heatmap's score (:meth:`Prediction.heatmap_scores`), the peak and the overlay."""
    height, width = prediction.image.shape[:2]
    document = {"image": prediction.path, "width": width, "height": height,
                "maps": prediction.describe_maps(), "classes": []}
    overlays = (files or {}).get("overlays") or [None] * len(classes)
    heat = prediction.heatmap_scores(classes).tolist()
    for cls, held, overlay_path in zip(classes, heat, overlays):
        peak = prediction.peak(cls)
        entry = {"id": int(cls), "label": prediction.categories[cls],
                 "score": round(float(prediction.probabilities[cls]), 6),
                 "heatmap_score": round(held, 6),
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
        if files.get("viewer"):
            document["viewer"] = files["viewer"]
    return document
