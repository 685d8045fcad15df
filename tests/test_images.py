"""Tests for fcnclassify.io.images: decoding against OpenCV / hand-made references, errors, resize, writing."""

import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from fcnclassify.io import images
from fcnclassify.io.images import ImageError, list_images, read_image, resize, scaled_size, write_image

CAT = skimage.data.chelsea()  # (300, 451, 3) RGB photo


def _encode(extension: str, rgb: np.ndarray, *params: int) -> bytes:
    """Encodes with OpenCV directly (BGR in), independent of write_image."""
    bgr = rgb.copy()
    if rgb.ndim == 3:
        bgr[..., :3] = rgb[..., 2::-1]
    ok, buffer = cv2.imencode(extension, bgr, list(params))
    assert ok
    return buffer.tobytes()


def _save(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, color_type: int, rows: bytes, *chunks: bytes, bit_depth: int = 8) -> bytes:
    """A PNG written by hand: `rows` are the raw scanlines (filter bytes added here)."""
    stride = len(rows) // height
    raw = b"".join(b"\0" + rows[i * stride:(i + 1) * stride] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + b"".join(chunks)
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def _exif(orientation: int, order: str = ">") -> bytes:
    """A TIFF block with one IFD entry: Orientation (0x0112), SHORT, count 1."""
    magic = b"MM\0*" if order == ">" else b"II*\0"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return magic + struct.pack(order + "IH", 8, 1) + entry + struct.pack(order + "I", 0)


def _jpeg_with_exif(jpeg: bytes, tiff: bytes) -> bytes:
    body = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def _webp_with_exif(webp: bytes, tiff: bytes, width: int, height: int) -> bytes:
    """Turns a simple WebP into the extended format (VP8X, EXIF flag) with an EXIF chunk."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    exif = b"EXIF" + struct.pack("<I", len(tiff)) + tiff + b"\0" * (len(tiff) & 1)
    chunks = vp8x + webp[12:] + exif
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _marked(height: int = 20, width: int = 40) -> np.ndarray:
    """White, with a red 8x8 block in the top-left corner."""
    rgb = np.full((height, width, 3), 255, np.uint8)
    rgb[:8, :8] = (255, 0, 0)
    return rgb


# --- decoding ---------------------------------------------------------------------------------------

def test_png_round_trip_is_bit_exact_and_rgb(tmp_path):
    path = _save(tmp_path / "chât 猫.png", _encode(".png", CAT))  # non-ASCII name too
    image = read_image(path)
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, CAT)

    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[0, 0], bgr[0, 1], bgr[1, 0], bgr[1, 1] = (0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)
    cv2.imwrite(str(tmp_path / "colours.png"), bgr)
    expected = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]]  # red, green / blue, yellow
    assert read_image(tmp_path / "colours.png").tolist() == expected


@pytest.mark.parametrize("extension, params", [
    (".bmp", ()), (".tif", ()), (".tiff", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # >100: lossless
])
def test_lossless_formats_round_trip(tmp_path, extension, params):
    path = _save(tmp_path / f"cat{extension}", _encode(extension, CAT, *params))
    np.testing.assert_array_equal(read_image(path), CAT)


def test_jpeg_matches_opencv_decoder(tmp_path):
    data = _encode(".jpg", CAT)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(read_image(_save(tmp_path / "cat.jpg", data)), reference)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = skimage.data.camera()
    image = read_image(_save(tmp_path / "camera.png", _encode(".png", gray)))
    assert image.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_alpha_is_composited_over_white(tmp_path):
    rgb = skimage.data.astronaut()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:100] = 0
    alpha[100:200] = 77
    image = read_image(_save(tmp_path / "rgba.png", _encode(".png", np.dstack([rgb, alpha]))))
    assert (image[:100] == 255).all()
    np.testing.assert_array_equal(image[200:], rgb[200:])
    a = 77 / 255
    reference = rgb[100:200].astype(np.float64) * a + 255 * (1 - a)
    np.testing.assert_allclose(image[100:200], reference, atol=0.5 + 1e-3)


def test_gray_alpha_png(tmp_path):
    rows = bytes([100, 255, 100, 0, 40, 128])  # 3 pixels of (gray, alpha)
    image = read_image(_save(tmp_path / "la.png", _png(3, 1, 4, rows)))
    expected = [100, 255, round(40 * 128 / 255 + 255 * 127 / 255)]
    assert image[0, :, 0].tolist() == expected
    assert (image == image[..., :1]).all()


def test_palette_png_and_its_transparency(tmp_path):
    palette = _png_chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]))
    indices = bytes([0, 1, 2, 3])  # 2x2, one byte per index
    image = read_image(_save(tmp_path / "p.png", _png(2, 2, 3, indices, palette)))
    assert image.tolist() == [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]]

    transparent_green = _png_chunk(b"tRNS", bytes([255, 0]))
    image = read_image(_save(tmp_path / "pt.png", _png(2, 2, 3, indices, palette, transparent_green)))
    assert image.tolist() == [[[255, 0, 0], [255, 255, 255]], [[0, 0, 255], [10, 20, 30]]]


def test_16_bit_png_is_divided_by_257_and_rounded(tmp_path):
    values = np.array([0, 128, 129, 385, 386, 32768, 65407, 65535], np.uint16)
    rng = np.random.default_rng(0)
    rgb = np.concatenate([np.repeat(values[:, None], 3, 1)[None], rng.integers(0, 65536, (1, 8, 3), np.uint16)])
    image = read_image(_save(tmp_path / "deep.png", _encode(".png", rgb)))
    np.testing.assert_array_equal(image, np.round(rgb / 257.0).astype(np.uint8))


def test_float_tiff_is_clipped_and_scaled(tmp_path):
    rgb = np.linspace(-0.5, 1.5, 6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)
    image = read_image(_save(tmp_path / "float.tif", _encode(".tif", rgb)))
    np.testing.assert_array_equal(image, np.rint(np.clip(rgb.astype(np.float64), 0, 1) * 255).astype(np.uint8))


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    jpeg = _jpeg_with_exif(_encode(".jpg", _marked(), cv2.IMWRITE_JPEG_QUALITY, 100), _exif(6))
    image = read_image(_save(tmp_path / "rotated.jpg", jpeg))
    assert image.shape == (40, 20, 3)
    # the red top-left corner of the stored image is shown at the top right
    np.testing.assert_allclose(image[1:7, 13:19], np.broadcast_to([255, 0, 0], (6, 6, 3)), atol=8)
    np.testing.assert_allclose(image[1:7, 1:7], 255, atol=8)
    np.testing.assert_allclose(image[33:39, 13:19], 255, atol=8)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("container", ["jpeg-MM", "jpeg-II", "png", "webp"])
def test_exif_orientation_matches_opencv(tmp_path, orientation, container):
    """OpenCV applies EXIF orientation itself when decoding to BGR: that is the reference."""
    marked = _marked(12, 20)
    marked[-3:, -5:] = (0, 0, 255)  # a second marker, so that flips are not symmetric
    if container.startswith("jpeg"):
        data = _jpeg_with_exif(_encode(".jpg", marked), _exif(orientation, ">" if container == "jpeg-MM" else "<"))
    elif container == "png":
        data = _encode(".png", marked)
        data = data[:33] + _png_chunk(b"eXIf", _exif(orientation)) + data[33:]  # after IHDR
    else:
        data = _webp_with_exif(_encode(".webp", marked, cv2.IMWRITE_WEBP_QUALITY, 101), _exif(orientation), 20, 12)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(read_image(_save(tmp_path / "oriented", data)), reference)


# --- errors -----------------------------------------------------------------------------------------

def _raises(path, match: str, **options) -> None:
    with pytest.raises(ImageError, match=match) as info:
        read_image(path, **options)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_bad_files_raise_one_line_naming_the_file(tmp_path):
    _raises(tmp_path / "missing.jpg", "no such file")
    _raises(tmp_path, "is a directory")
    _raises(_save(tmp_path / "empty.jpg", b""), "file is empty")
    _raises(_save(tmp_path / "notes.jpg", b"shopping list: milk, eggs\n" * 20), r"not an image file \(cannot decode\)")
    jpeg = _encode(".jpg", CAT)
    _raises(_save(tmp_path / "cut.jpg", jpeg[:int(len(jpeg) * 0.6)]), "truncated JPEG")
    _raises(_save(tmp_path / "cut-header.jpg", jpeg[:300]), "truncated JPEG")
    png = _encode(".png", CAT)
    _raises(_save(tmp_path / "cut.png", png[:int(len(png) * 0.6)]), "truncated PNG")
    _raises(_save(tmp_path / "small.png", _encode(".png", CAT[:20, :20])),
            r"400 pixels exceeds the limit of 100 \(--max-pixels\)", max_pixels=100)


@pytest.mark.parametrize("extension, params", [
    (".png", ()), (".jpg", ()), (".bmp", ()), (".tif", ()), (".gif", ()),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 90)), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
])
def test_pixel_limit_is_checked_on_the_header_before_decoding(tmp_path, monkeypatch, extension, params):
    path = _save(tmp_path / f"small{extension}", _encode(extension, CAT[:20, :30], *params))
    assert read_image(path, max_pixels=600).shape == (20, 30, 3)  # exactly at the limit: fine

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although the header is over the limit")
    monkeypatch.setattr(images.cv2, "imdecode", refuse)
    _raises(path, "600 pixels exceeds the limit of 599", max_pixels=599)


def test_png_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded a 10**10-pixel image")
    monkeypatch.setattr(images.cv2, "imdecode", refuse)
    bomb = _png(100_000, 100_000, 0, b"\0" * 100_000)[:33] + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1001))
    bomb += _png_chunk(b"IEND", b"")
    _raises(_save(tmp_path / "bomb.png", bomb), "10000000000 pixels exceeds the limit of 178956970")


def _tiff(width: int, height: int, rgb: bytes, *, kinds: tuple[int, int] = (4, 4), big: bool = False,
          extra: tuple[tuple[int, int, int], ...] = ()) -> bytes:
    """An uncompressed RGB TIFF (or BigTIFF) written by hand, its width and height tags of the given types.

    `extra` entries (tag, type, value) come first among entries of the same tag.
    """
    codes = {1: "B", 3: "H", 4: "I", 8: "h", 9: "i"}
    entry, inline = ("<HHQ", 8) if big else ("<HHI", 4)  # entries: 20 or 12 bytes
    tags = sorted([*extra, (256, kinds[0], width), (257, kinds[1], height), (259, 3, 1), (262, 3, 2),
                   (273, 4, 0), (277, 3, 3), (278, 4, height), (279, 4, len(rgb))], key=lambda t: t[0])
    header = b"II+\0" + struct.pack("<HHQ", 8, 0, 16) if big else b"II*\0" + struct.pack("<I", 8)
    tail = b"" if big else struct.pack("<HHHH", 8, 8, 8, 0)  # classic: BitsPerSample does not fit inline
    tail_at = len(header) + (8 if big else 2) + (len(tags) + 1) * (4 + 2 * inline) + inline
    start = tail_at + len(tail)  # the pixels
    bits = struct.pack(entry, 258, 3, 3) + (struct.pack("<HHHH", 8, 8, 8, 0) if big else struct.pack("<I", tail_at))
    entries = [struct.pack(entry, tag, kind, 1)
               + struct.pack("<" + codes[kind], start if tag == 273 else value).ljust(inline, b"\0")
               for tag, kind, value in tags]
    entries.insert(next(i for i, t in enumerate(tags) if t[0] > 258), bits)
    data = header + struct.pack("<Q" if big else "<H", len(entries)) + b"".join(entries) + bytes(inline) + tail
    assert len(data) == start
    return data + rgb


@pytest.mark.parametrize("big", [False, True], ids=["TIFF", "BigTIFF"])
@pytest.mark.parametrize("kinds", [(4, 4), (3, 3), (9, 9), (8, 8), (1, 1)], ids=["LONG", "SHORT", "SLONG", "SSHORT", "BYTE"])
def test_tiff_size_of_any_integer_type_is_checked_before_decoding(tmp_path, monkeypatch, kinds, big):
    """libtiff takes a width or height of any integer type; the header check read only SHORT and LONG."""
    rgb = CAT[:20, :30]
    path = _save(tmp_path / "small.tif", _tiff(30, 20, rgb.tobytes(), kinds=kinds, big=big))
    np.testing.assert_array_equal(read_image(path), rgb)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although the header is over the limit")
    monkeypatch.setattr(images.cv2, "imdecode", refuse)
    _raises(path, "600 pixels exceeds the limit of 599", max_pixels=599)


def test_tiff_tag_given_twice_counts_once_as_libtiff_reads_it(tmp_path, monkeypatch):
    """libtiff keeps the first of a repeated tag: a huge first width must not hide behind a small second."""
    rgb = CAT[:20, :30]
    data = _tiff(30, 20, rgb.tobytes(), extra=((256, 4, 30),))
    np.testing.assert_array_equal(read_image(_save(tmp_path / "twice.tif", data)), rgb)
    huge = _tiff(30, 20, rgb.tobytes(), extra=((256, 9, 1_000_000),))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although the header is over the limit")
    monkeypatch.setattr(images.cv2, "imdecode", refuse)
    _raises(_save(tmp_path / "huge.tif", huge), "20000000 pixels exceeds the limit of 1000000", max_pixels=1_000_000)


def test_pixel_limit_is_checked_after_decoding_unparsed_formats(tmp_path):
    ppm = b"P6\n30 20\n255\n" + CAT[:20, :30].tobytes()  # PNM: no header parser here, OpenCV decodes it
    path = _save(tmp_path / "small.ppm", ppm)
    np.testing.assert_array_equal(read_image(path), CAT[:20, :30])
    _raises(path, "600 pixels exceeds the limit of 599", max_pixels=599)


def test_opencv_own_pixel_limit_gives_a_clear_error(tmp_path):
    path = _save(tmp_path / "small.png", _encode(".png", CAT[:20, :20]))
    code = ("import sys\nfrom fcnclassify.io.images import ImageError, read_image\n"
            "try:\n    read_image(sys.argv[1], max_pixels=None)\nexcept ImageError as e:\n    print(e)")
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "100",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                            check=True)
    assert result.stdout.startswith(f"{path}: over OpenCV's pixel limit")
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in result.stdout


def _damaged_jpeg() -> bytes:
    """A JPEG with a restart marker in the middle of its coded data: libjpeg warns and decodes it."""
    data = _encode(".jpg", CAT)
    middle = len(data) // 2  # well inside the scan: the headers are a few hundred bytes
    return data[:middle] + b"\xff\xd3" + data[middle + 2:]


def test_damaged_but_decodable_jpeg_is_one_warning_naming_it(tmp_path, capfd):
    path = _save(tmp_path / "damaged é.jpg", _damaged_jpeg())
    with pytest.warns(images.ImageWarning) as caught:
        image = read_image(path)
    assert image.shape == CAT.shape
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{path}: corrupt JPEG data, decoded anyway (")
    assert "Corrupt JPEG data" in message and "\n" not in message  # libjpeg's words, on one line
    assert capfd.readouterr().err == ""  # nothing of libjpeg's own on stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(_save(tmp_path / "whole.jpg", _encode(".jpg", CAT)))  # an intact file: silence


def test_libpng_warnings_are_collected_too(tmp_path, capfd):
    rows = CAT[:4, :4].tobytes()
    bad_crc = _png_chunk(b"tEXt", b"Comment\0hello")[:-4] + b"\0\0\0\1"  # a wrong checksum
    path = _save(tmp_path / "text.png", _png(4, 4, 2, rows, bad_crc, _png_chunk(b"iCCP", b"x\0\0junk")))
    with pytest.warns(images.ImageWarning, match=r"text.png: corrupt PNG data, decoded anyway "
                                                 r"\(libpng warning: tEXt: CRC error; libpng warning: iCCP"):
        np.testing.assert_array_equal(read_image(path), CAT[:4, :4])
    assert capfd.readouterr().err == ""


def test_other_output_on_stderr_while_decoding_is_passed_on(monkeypatch, capfd):
    """Only whole lines are taken as the decoder's; a partial line (a progress bar) goes through."""
    with images._decoder_messages() as messages:
        os.write(2, b"Corrupt JPEG data: bad Huffman code\n\r 50%|#####")
    assert messages == ["Corrupt JPEG data: bad Huffman code"]
    assert capfd.readouterr().err == "\r 50%|#####"


def test_a_line_said_while_another_thread_decodes_is_not_taken_for_the_decoders(capfd):
    """An error line about one image, written while another image is being decoded, reaches
    stderr and is not blamed on the other image (it was, in about half of the runs of a mixed
    folder, before lines waited for the decode)."""
    import threading

    from fcnclassify.io.stderr import say

    inside, said = threading.Event(), []

    def decode():
        with images._decoder_messages() as messages:
            inside.set()
            threading.Event().wait(0.3)  # a slow decode, during which the other thread writes
        said.extend(messages)

    worker = threading.Thread(target=decode)
    worker.start()
    inside.wait()
    say("fcnclassify classify: error: broken.jpg: not an image file (cannot decode)")
    worker.join()
    assert said == []
    assert capfd.readouterr().err == "fcnclassify classify: error: broken.jpg: not an image file (cannot decode)\n"


def test_classify_says_one_warning_line_per_damaged_image(tmp_path, capfd):
    from fcnclassify.cli import main

    damaged = [_save(tmp_path / f"{name}.jpg", _damaged_jpeg()) for name in ("a", "b")]
    _save(tmp_path / "c.jpg", _encode(".jpg", CAT))
    code = main(["classify", str(tmp_path), "-m", "efficientnet_lite0", "--sizes", "224", "--no-flip",
                 "--quiet", "--topk", "1"])
    out, err = capfd.readouterr()
    assert code == 0 and out.count("efficientnet") == 0 and out.count(".jpg (") == 3, out
    lines = err.splitlines()
    assert len(lines) == 2, err
    # in the order the decoding threads finish them
    for path in damaged:
        prefix = f"fcnclassify classify: warning: {path}: corrupt JPEG data, decoded anyway ("
        assert sum(line.startswith(prefix) for line in lines) == 1, err


# --- resize -----------------------------------------------------------------------------------------

def _block_means(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[0] // factor, image.shape[1] // factor
    return image.astype(np.float64).reshape(height, factor, width, factor, -1).mean(axis=(1, 3))


def test_shrinking_averages_areas():
    board = np.kron([[0, 255], [255, 0]], np.ones((2, 2))).astype(np.uint8)  # 4x4, 2x2 blocks
    board[0, 0] = 100  # a block that is not constant: mean (100 + 3 * 0) / 4 = 25
    assert resize(board, (2, 2)).tolist() == [[25, 255], [255, 0]]

    rng = np.random.default_rng(0)
    maps = rng.random((12, 16, 10), dtype=np.float32)  # 10 channels: more than OpenCV's INTER_AREA takes
    np.testing.assert_allclose(resize(maps, (3, 4)), _block_means(maps, 4), rtol=1e-5, atol=1e-6)

    photo = skimage.data.astronaut()
    np.testing.assert_allclose(resize(photo, (128, 128)), _block_means(photo, 4), atol=0.5 + 1e-6)


def test_enlarging_is_bilinear():
    image = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32)
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])  # pixel centres of a 2x upscale
    np.testing.assert_allclose(resize(image, (4, 4)), weights @ image @ weights.T, atol=1e-5)
    assert resize(image[..., None], (4, 4)).shape == (4, 4, 1)


def test_scaled_size():
    assert scaled_size((300, 451), 0.5) == (150, 226)
    assert scaled_size((3, 5), 0.01) == (1, 1)
    assert scaled_size((224, 224), 2.0) == (448, 448)
    with pytest.raises(ValueError, match="scale > 0"):
        scaled_size((3, 5), 0)


# --- listing and writing ----------------------------------------------------------------------------

def test_list_images(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.webp", "notes.txt", ".hidden.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    loose = _save(tmp_path / "notes.txt", b"x")
    listed = list_images([tmp_path, loose])
    assert listed == [tmp_path / "a.PNG", tmp_path / "b.jpg", tmp_path / "c.webp", loose]
    with pytest.raises(ImageError, match="no such file"):
        list_images([tmp_path / "nope"])


def test_write_image_round_trips_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.png"
    write_image(path, CAT)
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], CAT)  # read back by OpenCV directly

    with pytest.raises(FileExistsError, match="--force"):
        write_image(path, CAT[::-1].copy())
    np.testing.assert_array_equal(read_image(path), CAT)

    write_image(path, CAT[::-1].copy(), overwrite=True)
    np.testing.assert_array_equal(read_image(path), CAT[::-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary file left


def test_write_jpeg(tmp_path):
    write_image(tmp_path / "out.jpg", CAT)
    assert np.abs(read_image(tmp_path / "out.jpg").astype(int) - CAT).mean() < 2.0
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "out.gif", CAT)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        write_image(tmp_path / "gray.png", CAT[..., 0])
