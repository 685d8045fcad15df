"""Small slips of issue 10 item 9: file modes of written weights, RGBA input without warnings."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from conftest import build

from fcnclassify.io.checkpoint import load_state_dict, save_weights
from fcnclassify.io.images import read_image
from fcnclassify.models.registry import IMAGENET, LITE


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_saved_weights_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    net = nn.Conv2d(3, 2, 1)
    path = save_weights(net, tmp_path / "net.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # what open(path, "w") gives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors"]  # no temporary left
    state = load_state_dict(path)
    torch.testing.assert_close(state["weight"], net.weight.detach(), rtol=0, atol=0)


def test_convert_command_writes_a_file_readable_as_the_umask_allows(tmp_path, umask):
    from fcnclassify.cli import main

    umask(0o022)
    weights = tmp_path / "alexnet.pth"
    torch.save(build(torchvision.models.alexnet, 3).state_dict(), weights)
    out = tmp_path / "alexnet-fcn.safetensors"
    assert main(["convert", "--model", "alexnet", "--weights", str(weights), "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.name, out.name])


def _reference(rgb: np.ndarray, norm) -> torch.Tensor:
    """The normalisation in float64, from the definition."""
    x = torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1) / 255
    mean = torch.tensor(norm.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float64).view(3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("norm", [IMAGENET, LITE])
@pytest.mark.parametrize("view", ["read-only", "reversed channels", "contiguous"])
def test_normalization_of_any_array_layout(norm, view):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if view == "read-only":
        array = np.broadcast_to(rgb, rgb.shape)  # what read_image gives for an RGBA image
    elif view == "reversed channels":
        array = np.ascontiguousarray(rgb[..., ::-1])[..., ::-1]  # negative strides, as a BGR view
    else:
        array = rgb.copy()
    before = array.copy()
    x = norm(array)
    assert x.dtype == torch.float32 and x.shape == (3, 5, 7)
    torch.testing.assert_close(x.double(), _reference(rgb, norm), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(array, before)  # the input is left as it was


def test_rgba_image_normalizes_without_a_warning(tmp_path):
    """torch warns once per process, so the check runs in a fresh interpreter with warnings as errors."""
    rgb = np.random.default_rng(2).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    alpha = np.full((6, 9), 255, np.uint8)
    alpha[:2] = 0  # transparent rows come out white
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), np.dstack([rgb[..., ::-1], alpha]))
    expected = rgb.copy()
    expected[:2] = 255
    np.save(tmp_path / "expected.npy", _reference(expected, IMAGENET).numpy())
    code = (
        "import sys, numpy as np, torch\n"
        "from fcnclassify.io.images import read_image\n"
        "from fcnclassify.models.registry import IMAGENET\n"
        "folder = sys.argv[1]\n"
        "x = IMAGENET(read_image(folder + '/rgba.png'))\n"
        "want = torch.from_numpy(np.load(folder + '/expected.npy'))\n"
        "torch.testing.assert_close(x.double(), want, rtol=0, atol=1e-6)\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not read_image(path).flags.writeable  # the case the fix is for: a read-only view


def test_a_run_says_slow_tiles_and_emulated_bfloat16_once_and_each_damaged_image(capsys):
    """Per-run notices (a budget that forces slow tiles, emulated bfloat16) once per command, whatever
    the number of images and sizes; a damaged image's warning once per image."""
    import warnings

    from fcnclassify.cli import _one_line_warnings
    from fcnclassify.evaluation.tiling import SlowTilingWarning
    from fcnclassify.io.images import ImageWarning
    from fcnclassify.network.device import EmulatedPrecisionWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with _one_line_warnings("heatmap"):
            for n in range(3):
                warnings.warn(SlowTilingWarning(f"tiles of {n}x{n} cells"))
                warnings.warn(EmulatedPrecisionWarning("bfloat16 is emulated"))
                warnings.warn(ImageWarning(f"a{n}.jpg: corrupt JPEG data, decoded anyway"))
    assert capsys.readouterr().err.splitlines() == [
        "fcnclassify heatmap: warning: tiles of 0x0 cells",
        "fcnclassify heatmap: warning: bfloat16 is emulated",
        *[f"fcnclassify heatmap: warning: a{n}.jpg: corrupt JPEG data, decoded anyway" for n in range(3)]]
