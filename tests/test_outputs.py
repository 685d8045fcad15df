"""Output files: names that never collide, each image's set written whole or not at all, the manifest,
and the image formats, checked by decoding what was written."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from skimage import data

from fcnclassify.io.images import write_image
from fcnclassify.outputs import files as files_module
from fcnclassify.outputs.files import MANIFEST, Job, OutputFolder, output_key, output_names, outputs_of, slug

MAGIC = {"jpg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "webp": b"RIFF"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_write_image_formats_and_quality(tmp_path):
    photo = data.chelsea()
    for name, quality in [("q90.jpg", 90), ("q50.jpg", 50), ("q90.webp", 90), ("lossless.png", None)]:
        write_image(tmp_path / name, photo, quality=quality)
    decoded = {p.name: cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, ::-1] for p in tmp_path.iterdir()}
    for name in decoded:
        assert (tmp_path / name).read_bytes().startswith(MAGIC[name.rsplit(".", 1)[1]]), name
    np.testing.assert_array_equal(decoded["lossless.png"], photo)  # PNG stays lossless
    assert psnr(decoded["q90.jpg"], photo) > 35 > psnr(decoded["q50.jpg"], photo) > 28
    assert psnr(decoded["q90.webp"], photo) > 30
    size = {name: (tmp_path / name).stat().st_size for name in decoded}
    assert size["q50.jpg"] < size["q90.jpg"] < size["lossless.png"] / 2
    assert (tmp_path / "q90.webp").read_bytes()[8:12] == b"WEBP"
    with pytest.raises(ValueError, match="no quality for the lossless .png but got 90"):
        write_image(tmp_path / "x.png", photo, quality=90)
    with pytest.raises(ValueError, match="quality in 1..100 but got 0"):
        write_image(tmp_path / "x.jpg", photo, quality=0)


def test_names_keep_the_extension_so_that_one_folders_inputs_never_collide():
    assert output_key("photos/chelsea.jpg") == "chelsea-jpg"
    assert output_key("photos/chelsea.png") == "chelsea-png"
    assert output_key("a.b.JPG") == "a.b-JPG" and output_key("a-b.jpg") == "a-b-jpg"
    assert output_key("README") == "README"
    assert output_names("chelsea-jpg", ["tabby", "Egyptian cat"], format="webp", npz=True) == [
        "chelsea-jpg_1_tabby.webp", "chelsea-jpg_2_egyptian-cat.webp", "chelsea-jpg_grid.webp",
        "chelsea-jpg_maps.npz"]
    assert slug("Grid") == "grid-class" and slug("Egyptian cat") == "egyptian-cat"
    with pytest.raises(ValueError, match="'gif'"):
        output_names("a", [], format="gif")


def test_outputs_of_takes_every_rank_and_format_but_not_another_images_grid():
    names = ["a-png_1_grid.jpg",  # the grid of the image "a-png_1", not an overlay of "a-png"
             "a-png_2_tabby.jpg", "a-png_12_egyptian-cat.webp", "a-png_grid.png", "a-png_maps.npz",
             "a-png_x_tabby.jpg", "a-png_2_tabby.gif", "a-png-2_1_tabby.jpg", "b-png_1_tabby.jpg", "a-png.jpg"]
    assert outputs_of("a-png", names) == ["a-png_12_egyptian-cat.webp", "a-png_2_tabby.jpg", "a-png_grid.png",
                                          "a-png_maps.npz"]


def test_same_names_in_two_folders_are_numbered_and_said_once(tmp_path):
    sources = [tmp_path / "a" / "chelsea.jpg", tmp_path / "b" / "chelsea.jpg", tmp_path / "a" / "chelsea.png",
               tmp_path / "c" / "Chelsea.jpg"]
    folder = OutputFolder(tmp_path / "out")
    assert [job.key for job in folder.plan(sources)] == ["chelsea-jpg", "chelsea-jpg-2", "chelsea-png",
                                                         "Chelsea-jpg-3"]
    assert folder.notes == [f"2 input(s) share a file name with another; their outputs are numbered: "
                            f"{sources[1]} -> chelsea-jpg-2_*, {sources[3]} -> Chelsea-jpg-3_*"]


def writers(contents: dict[str, bytes], *, fail_at: str | None = None):
    def writer(name, content):
        def write(path):
            if name == fail_at:
                path.write_bytes(content[:3])  # half a file, then Ctrl-C
                raise KeyboardInterrupt
            path.write_bytes(content)
        return write
    return {name: writer(name, content) for name, content in contents.items()}


def listing(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_interrupted_set_leaves_the_earlier_set_whole(tmp_path):
    source = tmp_path / "a.png"
    source.write_bytes(b"input")
    folder = OutputFolder(tmp_path / "out", options={"topk": 2})
    (job,) = folder.plan([source])
    folder.write(job, writers({"a-png_1_tabby.jpg": b"old 1", "a-png_2_lynx.jpg": b"old 2",
                               "a-png_grid.jpg": b"old grid"}), document={"image": "a"})
    before = listing(folder.path)
    entry = json.loads(before[MANIFEST])["images"]["a-png"]
    assert entry == {"input": str(source.resolve()), "bytes": 5, "mtime_ns": source.stat().st_mtime_ns,
                     "options": {"topk": 2}, "files": ["a-png_1_tabby.jpg", "a-png_2_lynx.jpg", "a-png_grid.jpg"],
                     "complete": True, "document": {"image": "a"}}

    forced = OutputFolder(tmp_path / "out", options={"topk": 1}, force=True)
    (job,) = forced.plan([source])
    with pytest.raises(KeyboardInterrupt):
        forced.write(job, writers({"a-png_1_cat.jpg": b"new 1", "a-png_grid.jpg": b"new grid"},
                                  fail_at="a-png_grid.jpg"))
    assert listing(folder.path) == before  # no temporary, no half file, the manifest as it was


def test_rename_interrupted_midway_is_redone_by_resume(tmp_path, monkeypatch):
    source = tmp_path / "a.png"
    source.write_bytes(b"input")
    first = OutputFolder(tmp_path / "out")
    (job,) = first.plan([source])
    first.write(job, writers({"a-png_1_tabby.jpg": b"old 1", "a-png_2_lynx.jpg": b"old 2", "a-png_grid.jpg": b"g"}))

    calls = []
    real_replace = os.replace

    def replace(src, dst):  # 1st: the manifest (incomplete), 2nd: the first file, 3rd: Ctrl-C
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_replace(src, dst)

    forced = OutputFolder(tmp_path / "out", force=True)
    (job,) = forced.plan([source])
    monkeypatch.setattr(files_module.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        forced.write(job, writers({"a-png_1_cat.jpg": b"new 1", "a-png_grid.jpg": b"new grid"}))
    monkeypatch.setattr(files_module.os, "replace", real_replace)
    state = listing(forced.path)
    assert set(state) == {MANIFEST, "a-png_1_cat.jpg", "a-png_1_tabby.jpg", "a-png_2_lynx.jpg", "a-png_grid.jpg"}
    assert state["a-png_grid.jpg"] == b"g"  # the old grid, whole; no temporary file left
    entry = json.loads(state[MANIFEST])["images"]["a-png"]
    assert not entry["complete"] and entry["files"] == sorted(set(state) - {MANIFEST})  # every file it may own

    with pytest.raises(FileExistsError, match="pass --resume to skip finished images, or --force"):
        OutputFolder(tmp_path / "out").plan([source])
    resumed = OutputFolder(tmp_path / "out", resume=True)
    (job,) = resumed.plan([source])
    assert job.finished is None and resumed.notes == [f"{source}: its earlier run was interrupted, written again"]
    resumed.write(job, writers({"a-png_1_cat.jpg": b"new 1", "a-png_grid.jpg": b"new grid"}))
    assert listing(resumed.path).keys() == {MANIFEST, "a-png_1_cat.jpg", "a-png_grid.jpg"}

    # now complete: resume skips it, until the input or the options change
    (job,) = OutputFolder(tmp_path / "out", resume=True).plan([source])
    assert job.finished["files"] == ["a-png_1_cat.jpg", "a-png_grid.jpg"]
    (job,) = OutputFolder(tmp_path / "out", resume=True, options={"topk": 5}).plan([source])
    assert job.finished is None and job.redo == "its outputs were written with other options"
    source.write_bytes(b"another input")
    (job,) = OutputFolder(tmp_path / "out", resume=True).plan([source])
    assert job.finished is None and job.redo == "the input changed since its outputs were written"


def test_force_replaces_one_images_set_and_leaves_the_others(tmp_path):
    sources = [tmp_path / "a.png", tmp_path / "b.png"]
    for source in sources:
        source.write_bytes(b"input")
    folder = OutputFolder(tmp_path / "out")
    for job in folder.plan(sources):
        folder.write(job, writers({f"{job.key}_1_x.jpg": b"1", f"{job.key}_2_y.jpg": b"2",
                                   f"{job.key}_maps.npz": b"m"}))
    forced = OutputFolder(tmp_path / "out", force=True)
    job = forced.plan(sources)[0]
    forced.write(job, writers({"a-png_1_z.png": b"z"}))
    assert set(listing(forced.path)) == {MANIFEST, "a-png_1_z.png", "b-png_1_x.jpg", "b-png_2_y.jpg",
                                         "b-png_maps.npz"}


def test_a_damaged_manifest_is_one_error_naming_it(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match=f"{MANIFEST}: expected a manifest of fcnclassify"):
        OutputFolder(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        OutputFolder(tmp_path / "file")


def test_a_job_with_extra_names_refuses_them_too(tmp_path):
    (tmp_path / "scene.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"scene.png: already exists \(pass --force to overwrite it\)"):
        OutputFolder(tmp_path, resumable=False).check([Job("scene", also=("scene.png",))])
