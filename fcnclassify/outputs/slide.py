"""Heatmaps of a slide or any image too large for memory: streamed in, streamed out.

:func:`slide_heatmaps` reads the image tile by tile (:mod:`fcnclassify.io.slides`), evaluates it
with the exact streamed tiling (:func:`fcnclassify.evaluation.streamed.streamed_evaluate`), skipping
background tiles under a tissue mask, into a chunked zarr store of the logits; then ranks the
classes (the VGG protocol over the evaluated cells: mean logits, softmax) and writes, into one
folder, what the tools of the field read:

- ``scores.zarr``: the logits ``(classes, rows, cols)`` (float16, NaN where skipped), with the
  geometry, the scale, the model and the mask in its attributes
  (:class:`~fcnclassify.outputs.scorestore.ScoreStore`);
- ``heatmap.ome.tif``: a pyramidal OME-TIFF, one uint8 channel per class (per-window probability
  x 255), on the image's grid shrunk by ``downsample`` (about one pixel per map cell), physical
  pixel size set where the slide has one (:func:`~fcnclassify.outputs.ometiff.write_pyramid`);
- ``regions.geojson``: the regions where a class's probability is at least ``threshold``, as QuPath
  annotations in level-0 pixels (:func:`~fcnclassify.outputs.geojson.write_geojson`);
- ``image.dzi`` and one ``<rank>_<class>.dzi`` per class with ``viewer.html``: Deep Zoom layers of
  the image and its heatmaps (:mod:`fcnclassify.outputs.viewer`);
- ``summary.json``: the image-level ranking, each class's best window, what was evaluated.

Nothing is held at the image's full resolution: the largest arrays are the map of the chosen
classes, one tile's crop, and a few rows of Deep Zoom tiles. The folder is written under a hidden
``.<name>.partial`` name beside it and renamed when complete; an interrupted run resumes from the
store's finished tiles (``resume=True``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation.scoremap import ScoreMap
from ..evaluation.streamed import Mask, StreamPlan, StreamStats, plan_stream, streamed_evaluate
from ..io.slides import open_slide, tissue_mask
from ..models.loaded import LoadedModel
from ..network.device import resolve
from .files import slug
from .render import colorize
from .viewer import colorbar

__all__ = ["SlideOptions", "TileRunner", "slide_heatmaps"]

# evaluates a plan's pending tiles under a mask into a store (elsewhere: Ray), what was done
TileRunner = Callable[[StreamPlan, "Mask | None", Any], StreamStats]

STORE = "scores.zarr"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class SlideOptions:
    """What a slide's outputs depend on (recorded in the store; a resumed run must match).

    Attributes:
        scale: level-0 pixels are resized by this factor for the network (0.5: half the width).
        tissue: ``"otsu"``: skip tiles without foreground (:func:`fcnclassify.io.slides.tissue_mask`);
            ``"none"``: evaluate every tile.
        topk: classes drawn when ``classes`` is None: the k whose best window is most confident.
        classes: class indices to draw.
        threshold: per-window probability at which GeoJSON regions start.
        dtype: the network's compute dtype.
        colormap: heatmap colours in the viewer.
    """

    scale: float = 1.0
    tissue: str = "otsu"
    topk: int = 3
    classes: tuple[int, ...] | None = None
    threshold: float = 0.5
    dtype: str | None = None
    colormap: str = "jet"


def slide_heatmaps(model: LoadedModel, path: str | os.PathLike, out: str | os.PathLike, *,
                   options: SlideOptions = SlideOptions(), max_memory: int | None = None,
                   device: str | torch.device | None = None, partial: str | os.PathLike | None = None,
                   resume: bool = False, progress: bool | None = None, viewer: bool = True,
                   tiles: TileRunner | None = None) -> dict:
    """Evaluates the slide at ``path`` and writes its outputs into the new folder ``out``.

    Args:
        model: from :func:`fcnclassify.models.registry.load_model`.
        path: a slide or large TIFF (:func:`fcnclassify.io.slides.open_slide`).
        out: the folder to write; must not exist (the caller decides about replacing).
        options: :class:`SlideOptions`.
        max_memory: budget in bytes for one tile's reading and working memory.
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``/None.
        partial: the work folder, renamed to ``out`` when complete (default ``.<out>.partial``
            beside it): kept after an interruption.
        resume: continue an interrupted run's work folder (same slide and options); otherwise
            such a folder is started over.
        progress: a progress bar over the tiles (None: on a terminal).
        viewer: also write the Deep Zoom layers and ``viewer.html``.
        tiles: evaluates the plan's pending tiles into the store elsewhere, e.g. on a Ray cluster
            (:func:`fcnclassify.distributed.slides.tile_runner`); default: here, one by one
            (:func:`~fcnclassify.evaluation.streamed.streamed_evaluate`).

    Returns:
        The summary document (also written as ``summary.json``).
    """
    from .geojson import write_geojson
    from .ometiff import write_pyramid
    from .scorestore import ScoreStore

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists")
    partial = Path(partial) if partial is not None else out.with_name(f".{out.name}.partial")
    progress = sys.stderr.isatty() if progress is None else progress
    device, dtype = resolve(device, options.dtype)
    fcn = model.prepared(device, dtype)
    started = time.perf_counter()
    with open_slide(path) as slide:
        size = slide.scaled_size(options.scale)
        plan = plan_stream(fcn, size, max_memory=max_memory, dtype=dtype, device=device)
        mask = None if options.tissue == "none" else Mask(*tissue_mask(slide))
        attrs = _attrs(model, slide, options, plan, fcn.geometry, mask)
        if partial.exists() and not resume:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        store_path = partial / STORE
        if store_path.exists() or store_path.with_name(f".{STORE}.partial").exists():
            store = ScoreStore.open(store_path, expect_attrs=attrs)  # an interrupted run's
        else:
            store = ScoreStore.create(store_path, classes=model.num_classes, shape=plan.shape,
                                      chunk=plan.tile, attrs=attrs)
        if tiles is None:
            stats = streamed_evaluate(fcn, slide, model.normalization, store, scale=options.scale,
                                      plan=plan, mask=mask, device=device, dtype=dtype,
                                      progress=progress)
        else:
            stats = tiles(plan, mask, store)
        store.finish()
        document, maps = _rank(store, model, options, slide, fcn.geometry, size)
        classes = [entry["index"] for entry in document["classes"]]
        heat, downsample = _heat(maps, fcn.geometry, slide, size)
        labels = [model.categories[c] for c in classes]
        write_pyramid(partial / "heatmap.ome.tif", heat.shape[1], heat.shape[2], len(classes),
                      lambda y0, y1, x0, x1: np.moveaxis(_u8(heat[:, y0:y1, x0:x1]), 0, -1),
                      mpp=slide.mpp * downsample if slide.mpp else None, channel_names=labels,
                      overwrite=True)
        regions = write_geojson(partial / "regions.geojson", list(zip(labels, heat)),
                                threshold=options.threshold,
                                to_image=(downsample, downsample, 0.0, 0.0), overwrite=True,
                                bounds=(slide.size[1], slide.size[0]),
                                properties={"model": model.name, "scale": options.scale})
        if viewer:
            _viewer(partial, slide, heat, downsample, labels, model.name, options.colormap,
                    Path(path).name)
        document.update(
            evaluated=stats.evaluated, skipped=stats.skipped, resumed=stats.resumed,
            megapixels_per_second=round(stats.megapixels_per_second, 2),
            seconds=round(time.perf_counter() - started, 1), regions=regions,
            heat_downsample=downsample,
            files=sorted(p.name for p in partial.iterdir() if not p.name.startswith(".")) + [SUMMARY])
    _write_json(partial / SUMMARY, document)
    os.replace(partial, out)
    return document


def _attrs(model, slide, options: SlideOptions, plan, geometry, mask) -> dict:
    """The store's attributes: what its numbers are, and what a resumed run must match."""
    return {
        "image": str(Path(slide.path).resolve()), "image_size": list(slide.size), "mpp": slide.mpp,
        "scale": options.scale, "input_size": list(plan.size), "tile": list(plan.tile),
        "model": model.name, "weights": str(model.weights), "dtype": str(options.dtype),
        "categories": list(model.categories),
        "geometry": {"stride": geometry.stride, "offset": geometry.offset, "window": geometry.window},
        "values": "logits, float16; NaN where a tile was skipped as background",
        "tissue": options.tissue,
        "mask_foreground": None if mask is None else round(float(mask.mask.mean()), 4),
        "mask_downsample": None if mask is None else mask.downsample,
    }


def _rank(store, model, options: SlideOptions, slide, geometry, size) -> tuple[dict, np.ndarray]:
    """The image-level probabilities (mean logits over the evaluated cells, softmax) and the
    classes to draw: by default those whose best window is most confident (as for photos), each
    with that window in level-0 pixels; and the chosen classes' probability maps (one pass over the
    store for them all)."""
    mean = torch.from_numpy(store.mean_logits()).float()
    probabilities = mean.softmax(0)
    if options.classes:
        classes = list(options.classes)
    else:
        best = torch.from_numpy(np.nan_to_num(store.max_probabilities(), nan=-1.0))
        classes = best.topk(min(options.topk, len(best))).indices.tolist()
    maps = store.class_maps(classes, probabilities=True)
    grid = ScoreMap(torch.zeros(1, *maps.shape[1:]), geometry, tuple(slide.size), tuple(size))
    entries = []
    for cls, values in zip(classes, maps):
        finite = np.where(np.isfinite(values), values, -1.0)
        i, j = np.unravel_index(int(finite.argmax()), finite.shape)
        x0, y0, x1, y1 = grid.box(int(i), int(j))
        entries.append({"index": int(cls), "label": model.categories[cls],
                        "score": float(probabilities[cls]),
                        "peak": {"score": float(finite[i, j]), "cell": [int(i), int(j)],
                                 "box": [round(v, 1) for v in (x0, y0, x1, y1)]}})
    return {"image": str(slide.path), "width": slide.size[1], "height": slide.size[0],
            "mpp": slide.mpp, "scale": options.scale, "model": model.name,
            "cells": list(maps.shape[1:]),
            "score": "image-level probability: the map's logits averaged over the evaluated (tissue) "
                     "windows, softmax; peak: the per-window probability of the best window; classes "
                     "ranked by their best window unless given",
            "classes": entries}, maps


def _heat(maps: np.ndarray, geometry, slide, size) -> tuple[np.ndarray, int]:
    """The per-window probability ``maps`` of the classes drawn, resampled on a grid of ``downsample`` x ``downsample`` slide
    pixels (a power of two, about one grid pixel per map cell): grid pixel ``(i, j)`` covers slide
    pixels ``[i * d, (i + 1) * d) x [j * d, (j + 1) * d)``, the last ones reaching past the edge.
    ``(k, h, w)`` in [0, 1], 0 in background; cells interpolated between their windows' centres
    (:meth:`~fcnclassify.evaluation.scoremap.ScoreMap.to_image_grid`)."""
    maps = np.nan_to_num(maps, nan=0.0)
    height, width = slide.size
    cell = geometry.stride * width / size[1]  # slide pixels between cell centres
    d = 2 ** max(0, int(np.floor(np.log2(cell))))
    shape = (-(-height // d), -(-width // d))
    covered = (shape[0] * d, shape[1] * d)  # the grid's extent in slide pixels
    grid = ScoreMap(torch.from_numpy(maps), geometry, covered,
                    (size[0] * covered[0] / height, size[1] * covered[1] / width))
    heat = grid.to_image_grid(size=shape, probabilities=False).clamp_(0, 1).numpy()
    return heat, d


def _u8(values: np.ndarray) -> np.ndarray:
    return np.rint(values * 255).astype(np.uint8)


def _viewer(folder: Path, slide, heat: np.ndarray, downsample: int, labels: list[str], model: str,
            colormap: str, title: str) -> None:
    from .dzi import write_dzi
    from .viewer import write_viewer

    height, width = slide.size
    image = write_dzi(folder / "image", width, height,
                      lambda x, y, w, h: slide.read(y, y + h, x, x + w), overwrite=True)
    layers = []
    for rank, (label, values) in enumerate(zip(labels, heat), 1):
        dzi = write_dzi(folder / f"{rank}_{slug(label)}", values.shape[1], values.shape[0],
                        lambda x, y, w, h, v=values: colorize(v[y:y + h, x:x + w], colormap=colormap),
                        overwrite=True)
        # a heat pixel is `downsample` slide pixels: the last ones reach past the slide's edge
        layers.append({"name": f"{rank}. {label}", "dzi": dzi,
                       "width": values.shape[1] * downsample / width,
                       "clip": [width / downsample, height / downsample]})
    write_viewer(folder, {"title": title, "image": image, "layers": layers, "model": model,
                          "colorbar": colorbar(colormap)}, overwrite=True)


def _write_json(path: Path, document: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1))
    os.replace(temporary, path)
