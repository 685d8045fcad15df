"""Fuzzing the readers: every mutated image or weights file loads correctly or raises the documented error.

Small valid files are made here, then mutated with a seeded generator: bit flips, byte overwrites with
boundary values, truncation, insertion, deletion, duplicated slices, an empty file, and per format the
header fields that size an image (width, height, TIFF tags of every integer type) and duplicated chunks.
A case passes when it loads (an ``(H, W, 3)`` uint8 array within ``max_pixels``; a state dict of tensors)
or raises the documented error with one line naming the file: ``ImageError`` from ``read_image``,
``ValueError`` from ``load_state_dict`` / ``read_metadata`` / ``load_model``. Any other exception, a case
over its time budget, or a peak memory growth over its budget fails the test with the case named.
Pickled code must never run. The counts per format are printed (``pytest -s``) for the README.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import faulthandler
import io
import json
import os
import pickle
import random
import struct
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fcnclassify.io.checkpoint import load_state_dict, read_metadata
from fcnclassify.network.convert import convert
from fcnclassify.io import images
from fcnclassify.io.images import ImageError, ImageWarning, read_image
from fcnclassify.models.registry import LoadedModel, build_original, load_model

MAX_PIXELS = 1 << 18  # 341x bigger than the 24x32 seed: a declared size above it must be refused unread
CASE_SECONDS = 2.0  # one read of a file of a few kB
CASE_BYTES = 64 << 20  # peak memory growth of one case; a decoded image within MAX_PIXELS needs < 10 MiB
HANG_SECONDS = 300  # a decoder stuck in C cannot be interrupted: end the run with a traceback instead


# --- the harness --------------------------------------------------------------------------------------

def _peak_rss() -> int | None:
    """The process's peak resident memory in bytes since the last reset (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")


@dataclasses.dataclass
class Tally:
    """Cases per format: loaded, refused with the documented error, failed (with the case named)."""

    loaded: dict[str, int] = dataclasses.field(default_factory=dict)
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)

    def run(self, kind: str, label: str, path: Path, load: Callable[[Path], None], error: type[Exception], *,
            seconds: float = CASE_SECONDS, memory: int = CASE_BYTES, names_file: bool = True) -> None:
        """Runs ``load(path)``, which checks what it loaded; records the outcome under ``kind``.

        The error must be one line, starting with the file where ``names_file``.
        """
        _reset_peak()
        before, start = _peak_rss(), time.perf_counter()
        try:
            load(path)
            self.loaded[kind] = self.loaded.get(kind, 0) + 1
        except error as err:
            message = str(err)
            if (message.startswith(str(path)) or not names_file) and "\n" not in message:
                self.refused[kind] = self.refused.get(kind, 0) + 1
            else:
                self.failures.append(f"{kind} {label}: {type(err).__name__} is not one line naming the file: "
                                     f"{message[:300]!r}")
        except Exception as err:  # noqa: BLE001  (any other type is the bug this test looks for)
            self.failures.append(f"{kind} {label}: {type(err).__name__}: {str(err)[:300]}")
        elapsed, after = time.perf_counter() - start, _peak_rss()
        if elapsed > seconds:
            self.failures.append(f"{kind} {label}: took {elapsed:.2f} s (budget {seconds} s)")
        if before is not None and after is not None and after - before > memory:
            self.failures.append(f"{kind} {label}: peak memory grew by {(after - before) >> 20} MiB "
                                 f"(budget {memory >> 20} MiB)")

    def report(self, title: str) -> str:
        kinds = sorted({*self.loaded, *self.refused})
        rows = [f"{kind}: {self.loaded.get(kind, 0) + self.refused.get(kind, 0)} tried, "
                f"{self.loaded.get(kind, 0)} loaded, {self.refused.get(kind, 0)} refused" for kind in kinds]
        return "\n".join([f"{title} ({len(self.failures)} failed)", *rows])

    def check(self, title: str) -> None:
        print("\n" + self.report(title))
        assert not self.failures, f"{len(self.failures)} cases failed:\n" + "\n".join(self.failures[:30])


@contextlib.contextmanager
def _watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# --- mutations ----------------------------------------------------------------------------------------

BOUNDARY = [b"\x00", b"\xff", b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\x00\x00\x00\x00",
            b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00"]


def mutations(data: bytes, rng: random.Random, count: int, *, head: int | None = None) -> Iterator[tuple[str, bytes]]:
    """``count`` seeded byte-level mutations of ``data``; ``head``: positions only in the first bytes."""
    for _ in range(count):
        b = bytearray(data)
        where = rng.randrange(min(head or len(b), len(b)))
        op = rng.choice(["flip", "overwrite", "boundary", "truncate", "insert", "delete", "duplicate"])
        if op == "flip":
            for _ in range(rng.randint(1, 8)):
                b[where] ^= 1 << rng.randrange(8)
                where = rng.randrange(min(head or len(b), len(b)))
        elif op == "overwrite":
            n = rng.randint(1, 16)
            b[where:where + n] = rng.randbytes(n)
        elif op == "boundary":
            value = rng.choice(BOUNDARY)
            b[where:where + len(value)] = value
        elif op == "truncate":
            del b[where:]
        elif op == "insert":
            b[where:where] = rng.randbytes(rng.randint(1, 64))
        elif op == "delete":
            del b[where:where + rng.randint(1, 64)]
        else:
            b[where:where] = b[where:where + rng.randint(1, 256)]
        yield f"{op}@{where}", bytes(b)


# --- images -------------------------------------------------------------------------------------------

IMAGE = np.zeros((24, 32, 3), np.uint8)
IMAGE[..., 0] = np.arange(32)[None] * 8
IMAGE[..., 1] = np.arange(24)[:, None] * 10
IMAGE[4:12, 6:20] = (250, 30, 60)
PER_SEED = 40


def _encode(extension: str, *params: int) -> bytes:
    ok, buffer = cv2.imencode(extension, np.ascontiguousarray(IMAGE[..., ::-1]), list(params))
    assert ok
    return buffer.tobytes()


def _pillow(format: str, **options) -> bytes:
    image = pytest.importorskip("PIL.Image", reason="GIF files are made with Pillow, which is not installed")
    buffer = io.BytesIO()
    picture = image.fromarray(IMAGE)
    (picture.quantize(16) if options.pop("palette", False) else picture).save(buffer, format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_chunks(png: bytes) -> Iterator[tuple[bytes, int, int]]:
    position = 8
    while position < len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        yield kind, position, position + 12 + length
        position += 12 + length


def _jpeg_segments(jpeg: bytes) -> Iterator[tuple[int, int, int]]:
    position = 2
    while jpeg[position] == 0xFF and jpeg[position + 1] != 0xDA:
        length, = struct.unpack_from(">H", jpeg, position + 2)
        yield jpeg[position + 1], position, position + 2 + length
        position += 2 + length


def _sizes() -> list[tuple[int, int]]:
    return [(0, 0), (1, 1), (24, 0x7FFF), (0xFFFF, 0xFFFF), (0x8000, 24), (32, 0xFFFF)]


def _jpeg_fields(jpeg: bytes) -> Iterator[tuple[str, bytes]]:
    for marker, start, end in _jpeg_segments(jpeg):
        if marker in (0xC0, 0xC1, 0xC2):  # baseline, extended, progressive start of frame
            for height, width in _sizes():
                b = bytearray(jpeg)
                struct.pack_into(">HH", b, start + 5, height, width)
                yield f"SOF {width}x{height}", bytes(b)
            big = bytearray(jpeg[start:end])
            struct.pack_into(">HH", big, 5, 0xFFFF, 0xFFFF)
            yield "a second, huge SOF after the first", jpeg[:end] + bytes(big) + jpeg[end:]
            yield "a huge SOF before the first", jpeg[:start] + bytes(big) + jpeg[start:]
        yield f"duplicated segment {marker:02X}", jpeg[:end] + jpeg[start:end] + jpeg[end:]


def _png_fields(png: bytes) -> Iterator[tuple[str, bytes]]:
    header = png[16:29]
    for width, height in [(0, 0), (1, 1), (1 << 31, 1), (999_999, 999_999), (0xFFFFFFFF, 0xFFFFFFFF),
                          (32, 100_000)]:
        ihdr = _png_chunk(b"IHDR", struct.pack(">II", width, height) + header[8:])  # a valid CRC
        yield f"IHDR {width}x{height}", png[:8] + ihdr + png[33:]
        yield f"IHDR {width}x{height} and the original after it", png[:8] + ihdr + png[8:]
    for depth, color in [(16, 2), (1, 2), (8, 7), (8, 3)]:  # invalid and valid bit depth / colour type
        ihdr = _png_chunk(b"IHDR", header[:8] + bytes([depth, color]) + header[10:])
        yield f"IHDR depth {depth} colour {color}", png[:8] + ihdr + png[33:]
    for kind, start, end in _png_chunks(png):
        yield f"duplicated {kind.decode('latin-1')}", png[:end] + png[start:end] + png[end:]


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _webp_fields(webp: bytes) -> Iterator[tuple[str, bytes]]:
    for width, height in [(1, 1), (33, 24), (16384, 16384), (1 << 24, 1 << 24)]:
        vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4)
        vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        yield f"VP8X canvas {width}x{height}", _riff(vp8x + webp[12:])
    for width, height in [(16383, 16383), (32, 16383), (1, 1)]:  # the bitstream's own frame size
        b = bytearray(webp)
        if webp[12:16] == b"VP8 ":
            struct.pack_into("<HH", b, 26, width, height)
        else:  # VP8L: 14 bits each, minus one, after the signature byte
            bits, = struct.unpack_from("<I", b, 21)
            struct.pack_into("<I", b, 21, bits & ~0xFFFFFFF | (width - 1) | (height - 1) << 14)
        yield f"frame {width}x{height}", bytes(b)
    yield "duplicated image chunk", _riff(webp[12:] + webp[12:])


def _tiff_fields(tiff: bytes) -> Iterator[tuple[str, bytes]]:
    order = "<" if tiff[:2] == b"II" else ">"
    offset, = struct.unpack_from(order + "I", tiff, 4)
    count, = struct.unpack_from(order + "H", tiff, offset)
    entries = [offset + 2 + 12 * i for i in range(count)]
    for entry in entries:
        tag, = struct.unpack_from(order + "H", tiff, entry)
        if tag not in (256, 257, 278):  # width, height, rows per strip
            continue
        for kind, value in [(3, 0), (3, 0xFFFF), (4, 0xFFFFFFFF), (4, 100_000), (9, 1_000_000), (8, 30_000),
                            (1, 255), (16, 1)]:  # SHORT, LONG, SLONG, SSHORT, BYTE, LONG8 (not inline)
            b = bytearray(tiff)
            struct.pack_into(order + "HI", b, entry + 2, kind, 1)
            struct.pack_into(order + ("H" if kind in (3, 8) else "B" if kind == 1 else "I"), b, entry + 8,
                             value & 0xFFFF if kind == 8 else value)
            yield f"tag {tag} type {kind} = {value}", bytes(b)
    # a second IFD at the end holding the width twice, the first over the limit: libtiff reads the first
    width = next(e for e in entries if struct.unpack_from(order + "H", tiff, e)[0] == 256)
    huge = bytearray(tiff[width:width + 12])
    struct.pack_into(order + "HI", huge, 2, 4, 1)
    struct.pack_into(order + "I", huge, 8, 100_000)
    ifd = [tiff[e:e + 12] for e in entries]
    ifd.insert(entries.index(width), bytes(huge))
    body = bytearray(tiff)
    struct.pack_into(order + "I", body, 4, len(tiff))
    yield "width tag twice, the first huge", bytes(body) + struct.pack(order + "H", count + 1) + b"".join(ifd) + bytes(4)


def _bmp_fields(bmp: bytes) -> Iterator[tuple[str, bytes]]:
    for width, height in [(0, 24), (32, -24), (-32, 24), (0x7FFFFFFF, 1), (100_000, 100_000),
                          (32, -0x80000000)]:
        b = bytearray(bmp)
        struct.pack_into("<ii", b, 18, width, height)
        yield f"size {width}x{height}", bytes(b)
    for offset, form, value in [(14, "<I", 12), (14, "<I", 124), (14, "<I", 0xFFFFFFFF), (28, "<H", 0),
                                (28, "<H", 0xFFFF), (30, "<I", 3), (30, "<I", 0xFFFFFFFF), (10, "<I", 0xFFFFFFFF),
                                (46, "<I", 0xFFFFFFFF)]:  # header size, bits, compression, data offset, colours
        b = bytearray(bmp)
        struct.pack_into(form, b, offset, value)
        yield f"field @{offset} = {value}", bytes(b)


def _gif_fields(gif: bytes) -> Iterator[tuple[str, bytes]]:
    flags = gif[10]
    position = 13 + (3 << (flags & 7) + 1 if flags & 0x80 else 0)
    while gif[position] == 0x21:  # skip extension blocks up to the image descriptor
        position += 2
        while gif[position]:
            position += gif[position] + 1
        position += 1
    for width, height in [(0, 0), (1, 1), (0xFFFF, 0xFFFF), (33, 25)]:
        for name, field in [("screen", 6), ("frame", position + 5), ("frame offset", position + 1)]:
            b = bytearray(gif)
            struct.pack_into("<HH", b, field, width, height)
            yield f"{name} {width}x{height}", bytes(b)
    end = gif.rindex(b"\x3b")
    yield "duplicated image", gif[:end] + gif[position:end] + gif[end:]


def _image_seeds() -> list[tuple[str, str, bytes, Callable[[bytes], Iterator[tuple[str, bytes]]]]]:
    """(format, variant, file, header-field mutations) for every format."""
    seeds = [
        ("JPEG", "baseline", _encode(".jpg", cv2.IMWRITE_JPEG_QUALITY, 90), _jpeg_fields),
        ("JPEG", "progressive", _encode(".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1), _jpeg_fields),
        ("PNG", "RGB", _encode(".png"), _png_fields),
        ("WebP", "lossy", _encode(".webp", cv2.IMWRITE_WEBP_QUALITY, 80), _webp_fields),
        ("WebP", "lossless", _encode(".webp", cv2.IMWRITE_WEBP_QUALITY, 101), _webp_fields),
        ("TIFF", "LZW", _encode(".tif"), _tiff_fields),
        ("BMP", "24-bit", _encode(".bmp"), _bmp_fields),
    ]
    with contextlib.suppress(pytest.skip.Exception):  # without Pillow: GIF alone is skipped, below
        seeds.append(("PNG", "palette", _pillow("PNG", palette=True), _png_fields))
        seeds.append(("GIF", "palette", _pillow("GIF"), _gif_fields))
    return seeds


def _check_image(path: Path) -> None:
    image = read_image(path, max_pixels=MAX_PIXELS)
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 1 and image.shape[1] >= 1
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS, image.shape


def test_seed_images_decode_as_made():
    """The harness's own files are valid: otherwise every mutation would be 'refused' for nothing."""
    for kind, variant, data, _ in _image_seeds():
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape == IMAGE.shape, (kind, variant)
    lossless = {variant: data for kind, variant, data, _ in _image_seeds() if variant in ("RGB", "lossless", "LZW")}
    for data in lossless.values():
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1], IMAGE)


def _decode_within_limit(decode: Callable) -> Callable:
    """OpenCV's imdecode, failing on an image over MAX_PIXELS: all six formats' headers are read first."""
    def checked(*args, **kwargs):
        image = decode(*args, **kwargs)
        if image is not None and image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise AssertionError(f"decoded {image.shape[1]}x{image.shape[0]} pixels although the limit is "
                                 f"{MAX_PIXELS}: the header check missed the declared size")
        return image
    return checked


def test_mutated_images_load_or_raise_image_error(tmp_path, monkeypatch):
    monkeypatch.setattr(images.cv2, "imdecode", _decode_within_limit(cv2.imdecode))
    seeds = _image_seeds()
    if "GIF" not in {kind for kind, *_ in seeds}:
        warnings.warn("Pillow is not installed: GIF files are not fuzzed", stacklevel=1)
    tally = Tally()
    started = time.perf_counter()
    with _watchdog(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kind, variant, data, fields in seeds:
            rng = random.Random(f"{kind} {variant}")
            cases = [("unchanged", data), ("empty", b""), *fields(data), *mutations(data, rng, PER_SEED)]
            for number, (label, mutated) in enumerate(cases):
                path = tmp_path / f"{kind}-{variant}-{number}"
                path.write_bytes(mutated)
                tally.run(kind, f"{variant} {label}", path, _check_image, ImageError)
                path.unlink()
    tally.check("images")
    # a damaged file that still decodes says so once, as an ImageWarning naming the file
    for w in caught:
        assert w.category is ImageWarning and str(w.message).startswith(str(tmp_path)), w
    assert time.perf_counter() - started < 30


# --- weights files ------------------------------------------------------------------------------------

class Evil:
    """Unpickling this would create ``marker``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path, how: str = "open"):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        if self.how == "exec":
            return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)
        return builtins.open, (str(self.marker), "w")


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    return {k: v.contiguous() for k, v in model.state_dict().items()}  # float32 and BN's int64 counter


def _saved(save: Callable[[object, io.BytesIO], None], obj: object) -> bytes:
    buffer = io.BytesIO()
    save(obj, buffer)
    return buffer.getvalue()


def _safetensors(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save(state, metadata=metadata)


def _safetensors_fields(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Edits of the JSON header: dtype, shape, offsets, names, metadata; and its length field."""
    length, = struct.unpack_from("<Q", data)
    header, payload = json.loads(data[8:8 + length]), data[8 + length:]

    def file(edit: Callable[[dict], None]) -> bytes:
        new = json.loads(json.dumps(header))
        edit(new)
        text = json.dumps(new).encode()
        return struct.pack("<Q", len(text)) + text + payload

    first = next(k for k in header if k != "__metadata__")
    yield "dtype F16", file(lambda h: h[first].update(dtype="F16"))
    yield "dtype BOOL", file(lambda h: h[first].update(dtype="BOOL"))
    yield "dtype unknown", file(lambda h: h[first].update(dtype="Q99"))
    yield "shape huge", file(lambda h: h[first].update(shape=[1 << 31, 1 << 31]))
    yield "shape negative", file(lambda h: h[first].update(shape=[-1, 3]))
    yield "shape scalar", file(lambda h: h[first].update(shape=[]))
    yield "offsets past the end", file(lambda h: h[first].update(data_offsets=[0, 1 << 40]))
    yield "offsets reversed", file(lambda h: h[first].update(data_offsets=h[first]["data_offsets"][::-1]))
    yield "tensor is a string", file(lambda h: h.update({first: "x"}))
    yield "metadata not strings", file(lambda h: h.update(__metadata__={"model": 5}))
    yield "metadata nested 100000 deep", file(lambda h: h.update(__metadata__={"model": "[" * 100_000}))
    yield "metadata not JSON", file(lambda h: h.update(__metadata__={"model": "{"}))
    for value in [0, 7, 1 << 27, 1 << 63, (1 << 64) - 1]:
        yield f"header length {value}", struct.pack("<Q", value) + data[8:]


def _check_state(path: Path) -> None:
    state = load_state_dict(path)
    assert isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in state.items())
    assert isinstance(read_metadata(path), dict)


def test_mutated_weights_load_or_raise_value_error(tmp_path):
    state = _tiny_state()
    seeds = [
        ("safetensors", ".safetensors", _safetensors(state, {"model": json.dumps("alexnet")}), _safetensors_fields),
        ("torch zip", ".pt", _saved(torch.save, state), None),
        ("torch pickle", ".pth", _saved(lambda o, f: torch.save(o, f, _use_new_zipfile_serialization=False), state),
         None),
        ("pickle", ".pkl", pickle.dumps({k: v.numpy() for k, v in state.items()}, protocol=4), None),
    ]
    tally = Tally()
    started = time.perf_counter()
    with _watchdog(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about odd pickle protocols of mutated files
        for kind, suffix, data, fields in seeds:
            rng = random.Random(kind)
            cases = [("unchanged", data), ("empty", b""), *(fields(data) if fields else []),
                     *mutations(data, rng, PER_SEED // 2), *mutations(data, rng, PER_SEED // 2, head=512)]
            for number, (label, mutated) in enumerate(cases):
                path = tmp_path / f"{kind.replace(' ', '-')}-{number}{suffix}"
                path.write_bytes(mutated)
                tally.run(kind, label, path, _check_state, ValueError)
                path.unlink()
    tally.check("weights files")
    assert tally.loaded["safetensors"] >= 1 and tally.loaded["torch zip"] >= 1  # the unchanged files at least
    assert time.perf_counter() - started < 30


def test_malicious_pickles_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "ran"
    save_legacy = lambda o, f: torch.save(o, f, _use_new_zipfile_serialization=False)  # noqa: E731
    tally = Tally()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for how in ["open", "system", "exec"]:
            for wrap in ["tensor", "state_dict", "whole file"]:
                evil = Evil(marker, how)
                obj = evil if wrap == "whole file" else {"w": evil, "b": torch.zeros(2)}
                obj = {"state_dict": obj} if wrap == "state_dict" else obj
                for kind, save in [("torch zip", torch.save), ("torch pickle", save_legacy),
                                   ("pickle", lambda o, f: pickle.dump(o, f, protocol=2))]:
                    data = _saved(save, obj)
                    path = tmp_path / f"evil-{how}-{wrap.replace(' ', '-')}-{kind.replace(' ', '-')}.pth"
                    path.write_bytes(data)
                    with pytest.raises(ValueError, match="refused: it holds objects other than tensors"):
                        load_state_dict(path)
                    rng = random.Random(f"{how} {wrap} {kind}")
                    for number, (label, mutated) in enumerate(mutations(data, rng, 4)):
                        path.write_bytes(mutated)
                        tally.run(f"malicious {kind}", f"{how} in {wrap}: {label}", path, _check_state, ValueError)
                    assert not marker.exists(), f"{path.name} ran its code when loaded"
    tally.check("malicious pickles")


def test_metadata_nested_too_deep_is_kept_as_written(tmp_path):
    """json.loads raises RecursionError (not JSONDecodeError) on deep nesting: read_metadata let it out."""
    path = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(2)}, path, metadata={"model": "[" * 100_000, "input_size": "224"})
    assert read_metadata(path) == {"model": "[" * 100_000, "input_size": 224}


# --- load_model from a weights file -------------------------------------------------------------------

MODEL = "resnet18"  # the smallest registered network built without a download
MODEL_SECONDS = 15.0  # conversion traces the network


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory) -> dict[str, bytes]:
    """A 3-class resnet18 as a safetensors state dict and a torch zip, and as a converted file."""
    from fcnclassify.io.checkpoint import save_weights

    original = build_original(MODEL, num_classes=3).eval()
    state = {k: v.contiguous() for k, v in original.state_dict().items()}
    folder = tmp_path_factory.mktemp("resnet")
    save_weights(convert(original), folder / "c.safetensors", metadata={"model": MODEL, "input_size": 224})
    return {"state .safetensors": _safetensors(state), "state .pt": _saved(torch.save, state),
            "converted .safetensors": (folder / "c.safetensors").read_bytes()}


def _model_fields(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Header edits that keep the file readable but change what the model gets: names, shapes, dtypes."""
    length, = struct.unpack_from("<Q", data)
    header, payload = json.loads(data[8:8 + length]), data[8 + length:]

    def file(edit: Callable[[dict], None]) -> bytes:
        new = json.loads(json.dumps(header))
        edit(new)
        text = json.dumps(new).encode()
        return struct.pack("<Q", len(text)) + text + payload

    head = next(k for k in header if k.endswith("fc.weight") or (k.startswith("head.") and k.endswith("weight")))
    rows, *rest = header[head]["shape"]
    yield "head renamed", file(lambda h: h.update({head + "x": h.pop(head)}))
    yield "head flattened", file(lambda h: h[head].update(shape=[rows * int(np.prod(rest))]))
    yield "head F16, twice as wide", file(lambda h: h[head].update(dtype="F16", shape=[rows, rest[0] * 2, *rest[1:]]))
    yield "head int32", file(lambda h: h[head].update(dtype="I32"))
    yield "model name unknown", file(lambda h: h.setdefault("__metadata__", {}).update(model='"resnet19"'))


def _check_model(path: Path) -> None:
    loaded = load_model(None if "converted" in path.name else MODEL, weights=path)
    assert isinstance(loaded, LoadedModel) and loaded.fcn.num_classes == 3


def test_mutated_weights_through_load_model(resnet_files, tmp_path):
    tally = Tally()
    with _watchdog(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, data in resnet_files.items():
            rng = random.Random(kind)
            fields = _model_fields(data) if kind.endswith("safetensors") else iter([])
            cases = [*fields, *mutations(data, rng, 4, head=512)]
            for number, (label, mutated) in enumerate(cases):
                path = tmp_path / f"{kind.split()[0]}-{number}{kind.split()[1]}"
                path.write_bytes(mutated)
                tally.run(f"load_model {kind}", label, path, _check_model, ValueError, seconds=MODEL_SECONDS,
                          memory=1 << 30, names_file=False)  # an unknown model in the file names the model
                path.unlink()
    tally.check("load_model")


@pytest.mark.parametrize("key, value", [("normalization", "{"), ("categories", "5"), ("input_size", "[1]"),
                                        ("input_size", "1e9")])
def test_converted_metadata_of_the_wrong_type_is_a_value_error(resnet_files, tmp_path, key, value):
    data = resnet_files["converted .safetensors"]
    length, = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + length])
    header["__metadata__"][key] = value  # one flipped bit turns '{"mean": ...}' into text that is not JSON
    text = json.dumps(header).encode()
    path = tmp_path / "converted.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    with pytest.raises(ValueError, match="converted.safetensors"):
        load_model(None, weights=path)
