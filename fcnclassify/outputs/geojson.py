"""Regions of a heat map as GeoJSON polygons (with holes) in level-0 image pixels, for QuPath.

Polygons follow the cells' edges exactly: the mask is doubled (each cell 2 x 2) and traced with
``cv2.findContours`` (``RETR_CCOMP``, ``CHAIN_APPROX_SIMPLE``); a traced point ``(X, Y)`` of the
doubled grid is the cell corner ``(ceil(X / 2), ceil(Y / 2))`` (the doubled grid's diagonal steps
fall on one corner), so a polygon covers its cells' squares and its area is their number times
``sx * sy``. Corner ``(x, y)`` of the mask is ``(x * sx + ox, y * sy + oy)`` in the image.

Rings are closed; exteriors have a positive shoelace area in the coordinates as written and holes a
negative one: counter-clockwise and clockwise per RFC 7946 with y up (with the image's y down, they
look the other way round on screen).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import cv2
import numpy as np

__all__ = ["COLORS", "regions", "write_geojson"]

COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
          (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]  # one per layer, in turn


def _corners(contour: np.ndarray) -> np.ndarray:
    """A contour of the doubled mask as the cell corners it runs along, without repeats or straight
    midpoints, ``(n, 2)`` int64."""
    points = (contour.reshape(-1, 2).astype(np.int64) + 1) // 2
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)
    points = points[keep] if keep.any() else points[:1]
    if len(points) > 2:  # drop points between two collinear edges
        before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
        cross = ((points - before)[:, 0] * (after - points)[:, 1]
                 - (points - before)[:, 1] * (after - points)[:, 0])
        points = points[cross != 0]
    return points


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _ring(corners: np.ndarray, to_image: tuple[float, float, float, float], *, exterior: bool,
          bounds: tuple[float, float] | None = None) -> list:
    sx, sy, ox, oy = to_image
    ring = corners.astype(np.float64) * (sx, sy) + (ox, oy)
    if bounds is not None:  # a grid reaching past the image's right and bottom edges
        ring = np.minimum(ring, bounds)
    if (_signed_area(ring) > 0) != exterior:
        ring = ring[::-1]
    return [[float(x), float(y)] for x, y in ring] + [[float(ring[0, 0]), float(ring[0, 1])]]


def regions(heat: np.ndarray, *, threshold: float, to_image: tuple[float, float, float, float],
            min_area: float = 0.0, bounds: tuple[float, float] | None = None) -> list[dict]:
    """GeoJSON Features (Polygons with holes) of the 8-connected regions where ``heat >= threshold``.

    Args:
        heat: ``(h, w)`` map (NaN counts as below the threshold).
        threshold: the regions' lower bound, inclusive.
        to_image: ``(sx, sy, ox, oy)``: mask corner ``(x, y)`` -> image ``(x * sx + ox, y * sy + oy)``.
        min_area: regions of fewer image pixels (holes taken out) are left out.
        bounds: ``(width, height)`` of the image: coordinates past them are clamped to the edge.

    Returns:
        Features, largest first, each with properties ``max`` and ``mean`` (of ``heat`` over the
        region's cells) and ``area`` (image pixels).
    """
    heat = np.asarray(heat)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"expected a 2-D heat map but got shape {heat.shape}")
    if len(to_image) != 4 or not (to_image[0] > 0 and to_image[1] > 0):
        raise ValueError(f"expected to_image = (sx, sy, ox, oy) with sx, sy > 0 but got {to_image!r}")
    with np.errstate(invalid="ignore"):
        mask = (heat >= threshold).astype(np.uint8)
    if not mask.any():
        return []
    labels = cv2.connectedComponentsWithStats(mask, connectivity=8)[1:3]
    doubled = np.kron(mask, np.ones((2, 2), np.uint8))
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    hierarchy = hierarchy.reshape(-1, 4)  # next, previous, first child, parent
    features = []
    for index in np.flatnonzero(hierarchy[:, 3] < 0):  # outer boundaries; their children are holes
        rings = [_ring(_corners(contours[index]), to_image, exterior=True, bounds=bounds)]
        child = hierarchy[index, 2]
        while child >= 0:
            rings.append(_ring(_corners(contours[child]), to_image, exterior=False, bounds=bounds))
            child = hierarchy[child, 0]
        area = sum(abs(_signed_area(np.asarray(ring[:-1]))) * (1 if k == 0 else -1)
                   for k, ring in enumerate(rings))
        if area < min_area:
            continue
        x, y = contours[index][0, 0] // 2  # a cell of the region, on its boundary
        values = _cells(heat, *labels, int(labels[0][y, x]))
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
                         "properties": {"max": float(values.max()), "mean": float(values.mean()),
                                        "area": float(area)}})
    features.sort(key=lambda f: -f["properties"]["area"])
    return features


def _cells(heat: np.ndarray, labels: np.ndarray, stats: np.ndarray, label: int) -> np.ndarray:
    x, y, w, h = stats[label, :4]
    box = (slice(y, y + h), slice(x, x + w))
    return heat[box][labels[box] == label].astype(np.float64)


def write_geojson(path: str | os.PathLike, layers: list[tuple[str, np.ndarray]], *, threshold: float = 0.5,
                  to_image: tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0),
                  colors: list[tuple[int, int, int]] | None = None, overwrite: bool = False,
                  properties: dict | None = None, bounds: tuple[float, float] | None = None) -> int:
    """Writes the regions of each layer as a GeoJSON FeatureCollection of QuPath annotations.

    Args:
        path: the file (``.geojson``).
        layers: ``(label, heat)`` pairs: each heat map's regions become annotations classified ``label``.
        threshold, to_image, bounds: as :func:`regions`.
        colors: ``(r, g, b)`` per layer (default :data:`COLORS` in turn).
        overwrite: replace an existing file (otherwise FileExistsError).
        properties: JSON properties added to every feature (the model, the run's options).

    Returns:
        The number of features written.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    colors = list(colors) if colors is not None else [COLORS[k % len(COLORS)] for k in range(len(layers))]
    if len(colors) != len(layers):
        raise ValueError(f"{path}: expected {len(layers)} colors (one per layer) but got {len(colors)}")
    features = []
    for (label, heat), color in zip(layers, colors):
        for feature in regions(heat, threshold=threshold, to_image=to_image, bounds=bounds):
            found = feature["properties"]
            feature["properties"] = {
                "objectType": "annotation",
                "classification": {"name": str(label), "color": [int(c) for c in color]},
                "probability": found["max"], "mean": found["mean"], "area": found["area"],
                **(properties or {})}
            features.append(feature)
    try:
        text = json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: properties are not JSON: {str(error).splitlines()[0]}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return len(features)
