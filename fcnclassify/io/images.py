"""Image I/O: read any photo as RGB uint8, resize, list and write images.

Decoding is OpenCV's (``cv2.imdecode`` with ``IMREAD_UNCHANGED``, so that alpha and 16-bit samples
survive); this module adds what OpenCV leaves to the caller: RGB order, a pixel limit checked on the
header before any pixel is decoded, EXIF orientation, and one clear error per bad file.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2  # the package's __init__ has lifted OpenCV's own pixel limit: `max_pixels` speaks
import numpy as np

from .._constants import DEFAULT_MAX_PIXELS
from .stderr import LOCK as STDERR

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageError", "ImageWarning", "list_images",
           "read_image", "resize", "scaled_size", "write_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame markers; C4/C8/CC are not
_ORIENTATION = 0x0112
# TIFF integer types by code: BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG, LONG8, SLONG8
_TIFF_INTEGERS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}


class ImageError(ValueError):
    """A file that cannot be read as an image; the message is one line, starting with the file."""


class ImageWarning(UserWarning):
    """A damaged file that still decodes; one line, starting with the file, with the decoder's words."""


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as RGB.

    JPEG, PNG, BMP, TIFF and WebP (and whatever else the installed OpenCV decodes). Grayscale and
    palette images become 3 equal or looked-up channels; alpha is composited over white; 16-bit
    samples are divided by 257 and rounded; float samples are clipped to [0, 1] and scaled to 255.
    The EXIF orientation (JPEG, PNG, WebP) is applied, as a viewer shows the photo; OpenCV applies a
    TIFF's own orientation tag itself.

    Args:
        path: The file; any characters in the name are fine.
        max_pixels: Refuse images with more pixels (height * width), checked on the header before
            decoding where the format's header is parsed here, and again after decoding. None: no limit.

    Returns:
        A contiguous ``(height, width, 3)`` uint8 array in RGB order.

    Raises:
        ImageError: The file is missing, empty, not an image, truncated, or over ``max_pixels``.

    Warns:
        ImageWarning: The decoder (libjpeg, libpng) reported damage but gave an image: one warning
            per file, naming it, in place of the library's own lines on stderr.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"expected max_pixels >= 1 or None, but got {max_pixels}")
    name = os.fspath(path)
    try:  # decode bytes, not a path: OpenCV's own file reader fails on non-ASCII names on Windows
        data = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise ImageError(f"{name}: no such file") from err
    except IsADirectoryError as err:
        raise ImageError(f"{name}: is a directory, not an image file") from err
    except OSError as err:
        raise ImageError(f"{name}: cannot read ({err.strerror})") from err
    if not data:
        raise ImageError(f"{name}: file is empty")

    kind, size, exif, truncated = _probe(data)
    if truncated:
        raise ImageError(f"{name}: truncated {kind} (the file ends before the image does)")
    if size is not None:
        _check_pixels(name, size[0] * size[1], max_pixels)
    try:
        with _quiet_opencv(), _decoder_messages(kind in ("JPEG", "PNG")) as messages:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(err):
            raise ImageError(
                f"{name}: over OpenCV's pixel limit (set OPENCV_IO_MAX_IMAGE_PIXELS before importing cv2)"
            ) from err
        raise ImageError(f"{name}: cannot decode ({err.err})") from err
    if image is None:
        raise ImageError(f"{name}: not an image file (cannot decode)")
    if messages:
        distinct = list(dict.fromkeys(messages))  # in order, once each
        more = f"; {len(distinct) - 3} more" if len(distinct) > 3 else ""
        details = "; ".join(distinct[:3])
        warnings.warn(ImageWarning(f"{name}: corrupt {kind} data, decoded anyway ({details}{more})"),
                      stacklevel=2)
    _check_pixels(name, image.shape[0] * image.shape[1], max_pixels)
    if not (image.dtype in (np.uint8, np.uint16) or np.issubdtype(image.dtype, np.floating)):
        raise ImageError(f"{name}: expected 8- or 16-bit unsigned or float samples, but got {image.dtype}")

    orientation = _tiff_tags(exif).get(_ORIENTATION, 1) if exif else 1
    return np.ascontiguousarray(_orient(_to_rgb8(image), orientation))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes an image or a map: area averaging when shrinking, bilinear when enlarging.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, uint8, uint16, int16, float32 or float64; any C.
        size: ``(height, width)`` of the result, in pixels.

    Returns:
        The resized array, with the same dtype and channel axis.
    """
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"expected a size (height, width) of at least 1 pixel, but got {size}")
    if image.ndim not in (2, 3) or image.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        raise ValueError(f"expected an (H, W) or (H, W, C) array of a type OpenCV resizes, but got "
                         f"shape {image.shape} and dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] > 4:  # INTER_AREA takes at most 4 channels at a time
        chunks = [resize(image[:, :, i:i + 4], size) for i in range(0, image.shape[2], 4)]
        return np.concatenate(chunks, axis=2)
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)
    return resized.reshape(height, width, *image.shape[2:])  # cv2 drops a single channel axis


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """Returns ``(round(height * scale), round(width * scale))``, each at least 1."""
    if not scale > 0:
        raise ValueError(f"expected a scale > 0, but got {scale}")
    height, width = size
    return max(1, round(height * scale)), max(1, round(width * scale))


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expands directories to the image files directly inside them, sorted; keeps files as given.

    Inside a directory, a file counts by its extension (``IMAGE_EXTENSIONS``, any case); hidden files
    (such as macOS's ``._name.jpg``) are skipped. Subdirectories are not entered.

    Raises:
        ImageError: A path does not exist.
    """
    images = []
    for path in map(Path, paths):
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                             and not p.name.startswith(".") and p.is_file())
        elif path.exists():
            images.append(path)
        else:
            raise ImageError(f"{path}: no such file or directory")
    return images


def write_image(path: str | os.PathLike, rgb: np.ndarray, *, overwrite: bool = False,
                quality: int | None = None) -> None:
    """Writes an RGB image, in the format of the extension.

    The file appears whole or not at all: it is written beside the target, then renamed over it.

    Args:
        path: the file; its extension chooses the format.
        rgb: ``(H, W, 3)`` uint8.
        overwrite: replace an existing file.
        quality: 1..100 for JPEG (default: OpenCV's 95) and WebP (default: lossless); PNG, TIFF and
            BMP are lossless and take none.

    Raises:
        FileExistsError: The file exists and ``overwrite`` is False.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in IMAGE_EXTENSIONS:
        raise ValueError(f"expected an extension in {IMAGE_EXTENSIONS}, but got {path.name!r}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, but got shape {rgb.shape} and dtype {rgb.dtype}")
    params = []
    if quality is not None:
        flag = {".jpg": cv2.IMWRITE_JPEG_QUALITY, ".jpeg": cv2.IMWRITE_JPEG_QUALITY,
                ".webp": cv2.IMWRITE_WEBP_QUALITY}.get(extension)
        if flag is None:
            raise ValueError(f"expected no quality for the lossless {extension} but got {quality}")
        if not 1 <= quality <= 100:
            raise ValueError(f"expected a quality in 1..100 but got {quality}")
        params = [flag, int(quality)]
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --force to overwrite it)")
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {extension}")
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as file:
            file.write(encoded.tobytes())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_pixels(name: str, pixels: int, max_pixels: int | None) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageError(f"{name}: {pixels} pixels exceeds the limit of {max_pixels} (--max-pixels)")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silences OpenCV's log while decoding: a failure becomes an ImageError, not stderr noise."""
    try:
        previous = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # a build without the logging bindings
        yield
        return
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)




@contextlib.contextmanager
def _decoder_messages(capture: bool = True) -> Iterator[list[str]]:
    """Collects what C libraries print on the process's stderr (fd 2) meanwhile, as lines.

    libjpeg and libpng print their warnings there themselves, out of Python's reach; the lines are
    taken from a temporary file that stands in for fd 2, which is restored however the block ends.
    Output that is not a whole line (a progress bar's update from another thread) is passed on.
    """
    messages: list[str] = []
    if not capture:
        yield messages
        return
    with STDERR, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to redirect
            yield messages
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            rest = []
            for line in text.splitlines(keepends=True):
                if line.endswith("\n") and "\r" not in line and line.strip():
                    messages.append(line.strip())
                else:
                    rest.append(line)
            if rest:
                os.write(2, "".join(rest).encode())


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """OpenCV's gray / gray+alpha / BGR / BGRA, any depth, to RGB uint8 (alpha over white)."""
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    color = image[:, :, 2::-1] if channels >= 3 else image[:, :, :1]
    alpha = image[:, :, -1:] if channels in (2, 4) else None
    if image.dtype == np.uint8 and alpha is None:
        rgb = color
    elif image.dtype == np.uint16 and alpha is None:
        rgb = ((color.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257), exactly
    else:
        top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        rgb = np.clip(color.astype(np.float32) / top, 0, 1)
        if alpha is not None:
            opacity = np.clip(alpha.astype(np.float32) / top, 0, 1)
            rgb = rgb * opacity + (1 - opacity)
        rgb = np.rint(rgb * 255).astype(np.uint8)
    return np.broadcast_to(rgb, (*rgb.shape[:2], 3))


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1-8): transpose for 5-8, then flip rows and/or columns."""
    if orientation in (5, 6, 7, 8):
        image = image.swapaxes(0, 1)
    if orientation in (3, 4, 7, 8):
        image = image[::-1]
    if orientation in (2, 3, 6, 7):
        image = image[:, ::-1]
    return image


def _probe(data: bytes) -> tuple[str, tuple[int, int] | None, bytes | None, bool]:
    """Reads (format, (height, width) or None, EXIF TIFF block or None, truncated) from the bytes."""
    size = exif = None
    truncated = False
    try:
        if data.startswith(b"\xff\xd8"):
            kind = "JPEG"
            size, exif, truncated = _probe_jpeg(data)
        elif data.startswith(b"\x89PNG\r\n\x1a\n"):
            kind = "PNG"
            size, exif, truncated = _probe_png(data)
        elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            kind = "WebP"
            size, exif = _probe_webp(data)
        elif data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):  # TIFF, BigTIFF
            kind = "TIFF"
            tags = _tiff_tags(data)
            size = (tags[257], tags[256]) if 256 in tags and 257 in tags else None
        elif data.startswith(b"BM"):
            kind = "BMP"
            header_size, = struct.unpack_from("<I", data, 14)
            width, height = struct.unpack_from("<HH" if header_size == 12 else "<ii", data, 18)
            size = (abs(height), abs(width))
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            kind = "GIF"
            width, height = struct.unpack_from("<HH", data, 6)
            size = (height, width)
        else:
            kind = "image"
    except struct.error:  # a header too short to parse: the decoder will tell
        pass
    return kind, size, exif, truncated


def _probe_jpeg(data: bytes) -> tuple[tuple[int, int] | None, bytes | None, bool]:
    size = exif = None
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length, = struct.unpack_from(">H", data, position + 2)
        if marker == 0xDA:  # start of scan: no FF D9 can occur in coded data, so the EOI ends it
            return size, exif, data.find(b"\xff\xd9", position) < 0
        segment = data[position + 4:position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\0") and exif is None:
            exif = segment[6:]
        elif marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", segment, 1)
            size = (height, width) if height and width else None  # height 0: given later (DNL)
        position += 2 + length
    return size, exif, position + 4 > len(data)


def _probe_png(data: bytes) -> tuple[tuple[int, int] | None, bytes | None, bool]:
    size = exif = None
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        body = position + 8
        if body + length + 4 > len(data):
            return size, exif, True
        if kind == b"IHDR":
            width, height = struct.unpack_from(">II", data, body)
            size = (height, width)
        elif kind == b"eXIf":
            exif = data[body:body + length]
        elif kind == b"IEND":
            break
        position = body + length + 4
    return size, exif, False


def _probe_webp(data: bytes) -> tuple[tuple[int, int] | None, bytes | None]:
    size = exif = None
    position = 12
    while position + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, position)
        body = position + 8
        if kind == b"VP8X":
            width, height = (int.from_bytes(data[i:i + 3], "little") + 1 for i in (body + 4, body + 7))
            size = (height, width)
        elif kind == b"VP8 " and size is None:
            width, height = struct.unpack_from("<HH", data, body + 6)
            size = (height & 0x3FFF, width & 0x3FFF)
        elif kind == b"VP8L" and size is None:
            bits, = struct.unpack_from("<I", data, body + 1)
            size = ((bits >> 14 & 0x3FFF) + 1, (bits & 0x3FFF) + 1)
        elif kind == b"EXIF":
            exif = data[body:body + length].removeprefix(b"Exif\0\0")
        position = body + length + (length & 1)
    return size, exif


def _tiff_tags(tiff: bytes) -> dict[int, int]:
    """The single integer values in the first IFD of a TIFF structure (TIFF, BigTIFF or EXIF).

    As libtiff reads them: any integer type, and the first entry of a tag that occurs twice.
    """
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    tags: dict[int, int] = {}
    if order is None:
        return tags
    try:
        big = struct.unpack_from(order + "H", tiff, 2)[0] == 43
        # classic: 4-byte offsets, 2-byte entry count, 12-byte entries; BigTIFF: 8, 8, 20
        offset, = struct.unpack_from(order + ("Q" if big else "I"), tiff, 8 if big else 4)
        count, = struct.unpack_from(order + ("Q" if big else "H"), tiff, offset)
        header, size, inline = (order + "HHQ", 20, 8) if big else (order + "HHI", 12, 4)
        first = offset + (8 if big else 2)
        for entry in range(first, first + size * count, size):
            tag, kind, number = struct.unpack_from(header, tiff, entry)
            code = _TIFF_INTEGERS.get(kind)
            if number == 1 and code is not None and struct.calcsize(code) <= inline and tag not in tags:
                tags[tag], = struct.unpack_from(order + code, tiff, entry + size - inline)
    except struct.error:  # a damaged IFD: keep what was read
        pass
    return tags
