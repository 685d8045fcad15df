"""The viewer page: an image and its class heatmaps as Deep Zoom layers, opened from ``file://``.

:func:`write_viewer` writes ``viewer.html`` and ``openseadragon/`` (OpenSeadragon 6.1.1 from npm,
BSD-3, its licence beside it) into a folder that holds the Deep Zoom tiles
(:func:`~fcnclassify.outputs.dzi.write_dzi`). The descriptors are inlined in the page, since a
browser will not fetch a ``.dzi`` file under ``file://``; the tiles load as images, so the page
works with no server and no internet. It has a class picker and an opacity slider, and keeps the
choice in the URL hash (``viewer.html#layer=1&opacity=0.7``) so that a view can be bookmarked.

:func:`write_photo_viewer` writes the page of one photo held in memory: the photo and each class's
colour-mapped heatmap as Deep Zoom layers (what ``fcnclassify heatmap --viewer`` does).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .dzi import FORMATS, write_dzi
from .files import slug

__all__ = ["ASSETS", "PAGE", "colorbar", "write_photo_viewer", "write_viewer"]

ASSETS = Path(__file__).with_name("viewer")  # the page template and the vendored OpenSeadragon
PAGE = "viewer.html"
LIBRARY = "openseadragon"  # the folder of OpenSeadragon beside the page


def write_viewer(out_dir: str | os.PathLike, manifest: dict, *, overwrite: bool = False) -> Path:
    """Writes ``out_dir/viewer.html`` and ``out_dir/openseadragon/``; returns the page's path.

    Args:
        out_dir: the folder of the Deep Zoom outputs; the descriptors' ``Url`` are relative to it.
        manifest: ``{"title": str, "image": descriptor, "layers": [{"name": "Egyptian cat",
            "dzi": descriptor}, ...], "model": str}``, each descriptor as
            :func:`~fcnclassify.outputs.dzi.write_dzi` returns it (a layer may give ``"width"``:
            its width as a fraction of the image's, default 1, and ``"clip"``: ``[width, height]``
            in its own pixels, for a coarse layer whose pixels reach past the image's edge);
            optionally ``"colorbar"``: the
            heatmaps' colours from low to high as CSS colours (:func:`colorbar`).
        overwrite: replace an existing page (otherwise FileExistsError).

    Raises:
        ValueError: A descriptor is malformed, or names a tiles folder that ``out_dir`` lacks.
    """
    out_dir = Path(out_dir)
    page = out_dir / PAGE
    if page.exists() and not overwrite:
        raise FileExistsError(f"{page}: already exists (pass overwrite=True to replace it)")
    document = _checked(manifest, out_dir)
    template = (ASSETS / PAGE).read_text(encoding="utf-8")
    text = (template.replace("__TITLE__", html.escape(document["title"]))
            .replace("__MANIFEST__", _script_json(document)))
    _copy_library(out_dir, overwrite=overwrite)
    temporary = out_dir / f".{PAGE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, page)
    finally:
        temporary.unlink(missing_ok=True)
    return page


def write_photo_viewer(out_dir: str | os.PathLike, image: np.ndarray,
                       heatmaps: Sequence[tuple[str, np.ndarray]], *, title: str = "", model: str = "",
                       colormap: str = "jet", quality: int = 90, tile_size: int = 254) -> Path:
    """Deep Zoom layers of a photo and its heatmaps, and their page, in a new folder ``out_dir``.

    Args:
        out_dir: created; must not exist (write to a temporary name and rename it, as
            :class:`~fcnclassify.outputs.files.OutputFolder` does).
        image: the photo, ``(H, W, 3)`` RGB uint8.
        heatmaps: ``(class name, values)`` pairs, values ``(H, W)`` in [0, 1] on the photo's grid
            (:meth:`~fcnclassify.evaluation.predict.Prediction.heatmap`), colour-mapped with ``colormap``.
        quality: JPEG quality of the photo's and the heatmaps' tiles.

    Returns:
        The page's path, ``out_dir/viewer.html``.
    """
    from .render import colorize

    out_dir = Path(out_dir)
    if np.ndim(image) != 3 or np.shape(image)[2] != 3 or np.asarray(image).dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB photo but got {np.asarray(image).dtype} "
                         f"{np.shape(image)}")
    height, width = image.shape[:2]
    out_dir.mkdir(parents=True)
    options = dict(tile_size=tile_size, format="jpeg", quality=quality)
    descriptor = write_dzi(out_dir / "image", width, height,
                           lambda x, y, w, h: image[y:y + h, x:x + w], **options)
    layers = []
    for rank, (name, heat) in enumerate(heatmaps, 1):
        if np.shape(heat) != (height, width):
            raise ValueError(f"expected the heatmap of {name!r} on the photo's grid {(height, width)} "
                             f"but got {np.shape(heat)}")
        layer = write_dzi(out_dir / f"{rank}_{slug(name)}", width, height,
                          lambda x, y, w, h: colorize(heat[y:y + h, x:x + w], colormap=colormap),
                          **options)
        layers.append({"name": f"{rank}. {name}", "dzi": layer})
    return write_viewer(out_dir, {"title": title, "image": descriptor, "layers": layers,
                                  "model": model, "colorbar": colorbar(colormap)})


def colorbar(colormap: str = "jet", *, steps: int = 64) -> list[str]:
    """``steps`` CSS colours (``"#rrggbb"``) of an OpenCV colour map, from value 0 to value 1."""
    from .render import colorize

    colours = colorize(np.linspace(0.0, 1.0, steps, dtype=np.float32)[None], colormap=colormap)[0]
    return ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in colours]


def _checked(manifest: dict, out_dir: Path) -> dict:
    """The manifest as the page reads it, every descriptor checked."""
    if not isinstance(manifest, dict) or "image" not in manifest:
        raise ValueError(f"expected a viewer manifest with an 'image' descriptor but got {manifest!r:.200}")
    layers = manifest.get("layers") or []
    if not isinstance(layers, list) or not all(isinstance(l, dict) and {"name", "dzi"} <= set(l)
                                                for l in layers):
        raise ValueError(f"expected 'layers' to be a list of {{'name': ..., 'dzi': descriptor}} but "
                         f"got {layers!r:.200}")
    document = {"title": str(manifest.get("title") or ""), "model": str(manifest.get("model") or ""),
                "image": _descriptor(manifest["image"], out_dir, "image"),
                "layers": [{"name": str(l["name"]), "dzi": _descriptor(l["dzi"], out_dir, l["name"]),
                            **({"width": float(l["width"])} if l.get("width") else {}),
                            **({"clip": [float(v) for v in l["clip"]]} if l.get("clip") else {})}
                           for l in layers]}
    if manifest.get("colorbar"):
        document["colorbar"] = [str(c) for c in manifest["colorbar"]]
    return document


def _descriptor(d: dict, out_dir: Path, what: str) -> dict:
    try:
        checked = {"Url": str(d["Url"]), "Format": str(d["Format"]), "Overlap": int(d["Overlap"]),
                   "TileSize": int(d["TileSize"]),
                   "Size": {"Width": int(d["Size"]["Width"]), "Height": int(d["Size"]["Height"])}}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"expected a Deep Zoom descriptor (Url, Format, Overlap, TileSize, Size) for "
                         f"{what!r} but got {d!r:.200} ({type(e).__name__}: {e})") from None
    if checked["Format"] not in FORMATS:
        raise ValueError(f"expected the tile format of {what!r} in {sorted(FORMATS)} but got "
                         f"{checked['Format']!r}")
    url = checked["Url"]
    if "://" not in url and not (out_dir / url).is_dir():  # a relative folder: it must be there
        raise ValueError(f"expected the tiles of {what!r} in {out_dir / url} (Url relative to the "
                         f"page's folder) but that folder does not exist")
    return checked


def _script_json(document: dict) -> str:
    """JSON safe inside ``<script>``: no ``</script>`` or ``<!--`` can close or confuse it."""
    return (json.dumps(document, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def _copy_library(out_dir: Path, *, overwrite: bool) -> None:
    """``out_dir/openseadragon/``: left alone if it holds this same copy, replaced if asked."""
    source, target = ASSETS / LIBRARY, out_dir / LIBRARY
    main = "openseadragon.min.js"
    if target.exists():
        same = (target / main).is_file() and (target / main).read_bytes() == (source / main).read_bytes()
        if same:
            return
        if not overwrite:
            raise FileExistsError(f"{target}: already exists and is not fcnclassify's copy of "
                                  f"OpenSeadragon (pass overwrite=True to replace it)")
    temporary = out_dir / f".{LIBRARY}.{uuid.uuid4().hex[:8]}.tmp"
    old = out_dir / f".{LIBRARY}.{uuid.uuid4().hex[:8]}.old"
    try:
        shutil.copytree(source, temporary)
        if target.exists():
            os.replace(target, old)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
