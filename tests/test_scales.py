"""Sizes in the model's terms: the VGG Q, the heatmap pyramid, and the command line's one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcnclassify import cli
from fcnclassify.io.images import write_image
from fcnclassify.evaluation.scales import pyramid_sizes, scale_factors, vgg_sizes


def test_vgg_sizes_scale_with_the_training_size():
    assert vgg_sizes() == (256, 384, 512)
    assert vgg_sizes(384) == (439, 658, 878)  # round(Q * 384 / 224)


def test_pyramid_of_a_phone_photo_by_hand():
    # 224 * sqrt(2)**k up to 4 windows (896) on a 2667-pixel shorter side
    assert pyramid_sizes((2667, 4000), 224) == (224, 317, 448, 634, 896)
    assert pyramid_sizes((2667, 4000), 224, max_windows=8) == (224, 317, 448, 634, 896, 1267, 1792)
    assert pyramid_sizes((3000, 4000), 224) == pyramid_sizes((2667, 4000), 224)  # capped alike


def test_pyramid_reaches_the_shorter_side_in_equal_steps():
    sizes = pyramid_sizes((700, 1000), 224)
    # ceil(log(700 / 224) / log(sqrt 2)) = 4 steps of (700 / 224) ** (1 / 4) = 1.3296
    assert sizes == (224, 298, 396, 526, 700)
    ratios = np.array(sizes[1:]) / np.array(sizes[:-1])
    assert ratios.max() <= math.sqrt(2) and ratios.max() / ratios.min() < 1.01


def test_pyramid_of_a_small_image_is_one_window():
    assert pyramid_sizes((100, 150), 224) == (224,)
    assert pyramid_sizes((224, 500), 224) == (224,)
    with pytest.raises(ValueError, match="step above 1"):
        pyramid_sizes((500, 500), 224, step=1.0)


def test_scale_factors_from_sizes_or_scales():
    assert scale_factors((300, 451), sizes=(150, 600)) == (0.5, 2.0)  # Q / shorter side
    assert scale_factors((300, 451), scales=(0.5, 1)) == (0.5, 1.0)
    assert scale_factors((300, 451)) == (1.0,)
    with pytest.raises(ValueError, match="not both"):
        scale_factors((300, 451), sizes=(256,), scales=(1.0,))
    with pytest.raises(ValueError, match="positive scales"):
        scale_factors((300, 451), scales=(0.0,))
    with pytest.raises(ValueError, match="sizes of at least 1 pixel"):
        scale_factors((300, 451), sizes=())


@pytest.mark.parametrize("option,message", [
    (["--sizes", "100,256"], "expected sizes of at least the network's window (224 pixels) but got 100"),
    (["--scales", "0.1"], "scale 0.1 makes the image's shorter side 30 pixels"),
])
def test_command_line_refuses_inputs_below_one_window_in_one_line(tmp_path, capsys, option, message):
    path = tmp_path / "photo.png"
    write_image(path, np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8))
    code = cli.main(["classify", str(path), "--model", "efficientnet_lite0", "--quiet", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_sizes_below_the_window_are_refused_once_for_all_images(tmp_path, capsys):
    paths = [tmp_path / f"photo{k}.png" for k in range(3)]
    for k, path in enumerate(paths):
        write_image(path, np.random.default_rng(k).integers(0, 256, (300, 451, 3), dtype=np.uint8))
    for command in (["classify"], ["heatmap", "--out", str(tmp_path / "out")]):
        code = cli.main([*command, *map(str, paths), "-m", "efficientnet_lite0", "--quiet", "--sizes", "100"])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == "", captured
        assert captured.err == (f"fcnclassify {command[0]}: error: expected sizes of at least the "
                                f"network's window (224 pixels) but got 100\n")
    assert not (tmp_path / "out").exists()  # nothing written


def test_command_line_parses_sizes(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["classify", "x.jpg", "--sizes", "big"])
    assert exit_.value.code == 2 and "'pyramid'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["classify", "x.jpg", "--sizes", "256", "--scales", "1"])
    assert "not allowed with argument" in capsys.readouterr().err
