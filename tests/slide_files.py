"""Synthetic slides for the tests: pyramidal tiled TIFFs written with tifffile from an in-memory image.

``from slide_files import write_test_slide`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["pyramid_levels", "write_test_slide"]


def pyramid_levels(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Level k: the image shrunk by 2**k with cv2.INTER_AREA (``round`` of each side, at least 1)."""
    height, width = image.shape[:2]
    out = [image]
    for k in range(1, levels):
        size = (max(1, round(width / 2**k)), max(1, round(height / 2**k)))
        out.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0],
                                                                               *image.shape[2:]))
    return out


def write_test_slide(path: str | os.PathLike, image: np.ndarray, *, levels: int = 3, tile: int = 256,
                     mpp: float | None = 0.25, bigtiff: bool = False, pyramid: bool = True,
                     compression: str | None = "zlib", layout: str = "subifds",
                     planar: bool = False) -> list[np.ndarray]:
    """Writes ``image`` as a tiled TIFF and returns the arrays written, level 0 first.

    Args:
        path: The file.
        image: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (unassociated alpha), uint8 or uint16.
        levels: Pyramid levels (each half the one before, cv2.INTER_AREA); 1 when ``pyramid`` is False.
        tile: Tile side in pixels (a multiple of 16).
        mpp: Microns per level-0 pixel, written as OME ``PhysicalSizeX`` (``layout="subifds"``) and as
            the resolution tags in pixels per centimetre; None: neither.
        bigtiff: Write a BigTIFF.
        pyramid: False: one level (a plain tiled TIFF).
        compression: ``"zlib"``, ``"jpeg"`` (lossy, RGB/grey uint8 only) or None.
        layout: ``"subifds"``: an OME-TIFF with the reduced levels in SubIFDs of the first page;
            ``"pages"``: a generic TIFF, one page per level (NewSubfileType 1 for the reduced ones),
            the layout that OpenSlide reads as a generic tiled TIFF.
        planar: Store the samples as separate planes (PlanarConfiguration 2).
    """
    import tifffile

    arrays = pyramid_levels(image, levels if pyramid else 1)
    photometric = "minisblack" if image.ndim == 2 else "rgb"
    extrasamples = ("unassalpha",) if image.ndim == 3 and image.shape[2] == 4 else None
    common = dict(tile=(tile, tile), compression=compression, photometric=photometric,
                  planarconfig="separate" if planar else "contig", extrasamples=extrasamples)
    ome = layout == "subifds"
    with tifffile.TiffWriter(path, bigtiff=bigtiff, ome=ome) as tiff:
        for k, array in enumerate(arrays):
            data = np.moveaxis(array, -1, 0) if planar and array.ndim == 3 else array  # (S, H, W)
            resolution = {}
            if mpp is not None:
                per_cm = 1e4 / (mpp * 2**k)
                resolution = dict(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            if ome and k == 0:
                axes = "YX" if image.ndim == 2 else ("SYX" if planar else "YXS")
                metadata = {"axes": axes, **({"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if mpp else {})}
                tiff.write(data, subifds=len(arrays) - 1, metadata=metadata, **resolution, **common)
            else:
                tiff.write(data, subfiletype=1 if k else 0, metadata=None, **resolution, **common)
    return arrays
