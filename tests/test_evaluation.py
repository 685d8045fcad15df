"""Accuracy evaluation: labelled sets (ImageFolder, CSV), protocols, top-1/top-5 on a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
import torchvision.transforms as T
from torch import nn

from conftest import randomize, vgg_features
from fcnclassify.cli import main
from fcnclassify.network.convert import convert
from fcnclassify.evaluation.protocols import (default_sizes, evaluate, image_probabilities, read_samples)
from fcnclassify.io.images import write_image
from fcnclassify.models.registry import IMAGENET, LoadedModel, load_model


@pytest.fixture(scope="module")
def lite() -> LoadedModel:
    return load_model("efficientnet_lite0")  # real ImageNet weights, shipped offline


# efficientnet_lite0 on these photos (checked by hand): centre crop -> chelsea 'tiger cat' (its
# label 'Egyptian cat' second), coffee 'espresso', rocket 'missile'; dense at Q=256 -> chelsea
# 'Egyptian cat', coffee 'espresso', rocket 'drilling platform' ('missile' second)
PHOTOS = {"chelsea": "Egyptian_cat", "coffee": "967", "rocket": "missile"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    for photo, label in PHOTOS.items():
        (root / label).mkdir()
        write_image(root / label / f"{photo}.png", getattr(skimage.data, photo)())
    return root


def test_image_folder_centre_crop_top1_top5_and_torchvision_reference(lite, folder):
    samples = read_samples(folder, lite)
    assert [(s.path.stem, s.label) for s in samples] == [
        ("coffee", 967), ("chelsea", 285), ("rocket", 657)]  # folders sorted: '967' < 'E' < 'm'
    result = evaluate(lite, samples, protocol="center")
    assert (result.images, result.top1, result.top5) == (3, pytest.approx(2 / 3), 1.0)
    assert [p[2][0] for p in result.predictions] == [967, 282, 657]
    # reference: torchvision's pipeline on the original model
    chelsea = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float() / 255
    x = T.Compose([T.Resize(256), T.CenterCrop(224),
                   T.Normalize(lite.normalization.mean, lite.normalization.std)])(chelsea)
    with torch.no_grad():
        ref = lite.original(x[None])[0].softmax(0)
    got = image_probabilities(lite, skimage.data.chelsea(), protocol="center")
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)
    assert result.predictions[1][2] == ref.topk(5).indices.tolist()


def test_csv_dense_protocol_and_command_line(lite, folder, tmp_path, capsys):
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\n{folder}/967/coffee.png,espresso\n"
                   f"{folder}/Egyptian_cat/chelsea.png,285\n\n"
                   f"{folder}/missile/rocket.png, Missile\n")
    samples = read_samples(csv, lite)
    assert [s.label for s in samples] == [967, 285, 657]
    result = evaluate(lite, samples, protocol="dense", sizes=(256,))
    # every cell is a 224 window: the rocket is a missile (with class-activation cells: drilling platform)
    assert [p[2][0] for p in result.predictions] == [967, 285, 657]
    assert (result.top1, result.top5) == (1.0, 1.0)
    code = main(["evaluate", str(csv), "--model", "efficientnet_lite0", "--protocol", "dense",
                 "--sizes", "256", "--limit", "1", "--json", "--quiet"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["images"], doc["top1"], doc["top5"]) == (1, 1.0, 1.0)
    assert doc["predictions"][0]["top5"] == result.predictions[0][2]


def test_bad_labels_are_one_clear_error(lite, tmp_path, capsys):
    (tmp_path / "tabby").mkdir()
    (tmp_path / "not_a_class").mkdir()
    with pytest.raises(ValueError, match="not_a_class.*unknown class 'not_a_class'"):
        read_samples(tmp_path, lite)
    csv = tmp_path / "set.csv"
    csv.write_text("a.png,tabby\nb.png,1000\n")
    with pytest.raises(ValueError, match=r"set\.csv:2: expected a class id in 0\.\.999"):
        read_samples(csv, lite)
    csv.write_text("a.png\n")
    with pytest.raises(ValueError, match=r"set\.csv:1: expected 'path,label'"):
        read_samples(csv, lite)
    with pytest.raises(ValueError, match="protocol"):
        evaluate(lite, [], protocol="5crop")
    assert main(["evaluate", str(csv), "--model", "efficientnet_lite0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected 'path,label'" in err


class SmallVGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = vgg_features([6, "M", 8, 8, "M", 12, "M"])
        self.classifier = nn.Sequential(nn.Linear(12 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def test_protocols_on_a_small_model_against_torchvision_views(rng):
    original = randomize(SmallVGG(), seed=7)
    model = LoadedModel("small", convert(original, input_size=48), original,
                        [str(i) for i in range(10)], IMAGENET, 48)
    assert default_sizes("10crop", 48) == (55,) and default_sizes("dense", 48) == (55, 82, 110)
    image = (torch.rand(61, 75, 3, generator=rng) * 255).to(torch.uint8).numpy()
    x = model.normalization(image)

    def mean_softmax(views):
        with torch.no_grad():
            return original(torch.stack(list(views))).softmax(1).mean(0)

    ten = image_probabilities(model, image, protocol="10crop")
    torch.testing.assert_close(ten, mean_softmax(T.TenCrop(48)(T.Resize(55)(x))), rtol=1e-4,
                               atol=1e-6)
    multi = image_probabilities(model, image, protocol="multicrop", sizes=(55,))
    # 25 positions on 55 x 67: tops 0, 2, 4, 5, 7 (7/4 steps, rounded), lefts 0, 5, 10, 14, 19
    r = T.Resize(55)(x)
    views = [v for t in (0, 2, 4, 5, 7) for l in (0, 5, 10, 14, 19)
             for v in (r[:, t:t + 48, l:l + 48], r[:, t:t + 48, l:l + 48].flip(-1))]
    torch.testing.assert_close(multi, mean_softmax(views), rtol=1e-4, atol=1e-6)
    dense = image_probabilities(model, image, protocol="dense", sizes=(55,))
    both = image_probabilities(model, image, protocol="dense+multicrop", sizes=(55,))
    torch.testing.assert_close(both, (dense + multi) / 2, rtol=1e-5, atol=1e-7)
    # dense at one window-sized input is the original model on it
    square = (torch.rand(48, 48, 3, generator=rng) * 255).to(torch.uint8).numpy()
    got = image_probabilities(model, square, protocol="dense", sizes=(48,))
    xs = model.normalization(square)
    ref = (mean_softmax([xs]) + mean_softmax([xs.flip(-1)])) / 2
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    assert np.isclose(float(got.sum()), 1.0)


def test_missing_data_fails_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import fcnclassify.commands._options as options

    def no_model(args):
        raise AssertionError("the data must be checked before any model is loaded")

    monkeypatch.setattr(options, "load_from_args", no_model)
    monkeypatch.setattr("fcnclassify.commands.evaluate.load_from_args", no_model, raising=False)
    code = main(["evaluate", str(tmp_path / "nowhere"), "--model", "vgg16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nowhere: no such folder or CSV file" in err
