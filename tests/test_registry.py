"""The registry as data: torchvision and timm models by name against their own weights enums and
pretrained_cfg, weights from anywhere (DataParallel, timm checkpoints, the Hugging Face cache),
duplicates, and every bad input as one line with exit code 2."""

from __future__ import annotations

import argparse
import sys
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from conftest import build
from fcnclassify.cli import main
from fcnclassify.models import registry
from fcnclassify.models.registry import Family, load_model, model_spec

TOL = dict(rtol=1e-4, atol=1e-4)


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, *needles):
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("fcnclassify "), err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """A seeded torchvision ResNet-18 and its state dict as safetensors."""
    model = build(torchvision.models.resnet18, 11)
    path = tmp_path_factory.mktemp("tv") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


@pytest.fixture
def image(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), rgb)
    return path


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache in tmp_path, HF_HUB_OFFLINE=1 (no network attempt at all), and
    ``put(repo, files)`` to lay files out the way huggingface_hub caches a download."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def put(repo: str, files: dict[str, bytes]) -> None:
        commit = "0123456789abcdef0123456789abcdef01234567"
        root = cache / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(commit)
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for name, data in files.items():
            (snapshot / name).write_bytes(data)

    return put


def _safetensors_bytes(state: dict[str, torch.Tensor], tmp_path: Path) -> bytes:
    path = tmp_path / "tmp.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.read_bytes()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_model_has_its_weights_enums_transforms_and_categories(name):
    weights = torchvision.models.get_model_weights(name).DEFAULT
    reference = weights.transforms()  # torchvision's own evaluation transform
    loaded = load_model(name, weights=None)
    assert loaded.normalization.mean == pytest.approx(reference.mean)
    assert loaded.normalization.std == pytest.approx(reference.std)
    assert loaded.input_size == reference.crop_size[0]
    assert loaded.crop_pct == pytest.approx(reference.crop_size[0] / reference.resize_size[0], abs=1e-4)
    assert loaded.interpolation == reference.interpolation.value
    assert loaded.categories == weights.meta["categories"]
    assert loaded.weights == "random"


def test_weights_tags_pick_the_enum_entry_and_inception_is_299():
    for tag in ("IMAGENET1K_V1", "IMAGENET1K_V2"):
        reference = torchvision.models.ResNet50_Weights[tag].transforms()
        spec = model_spec(f"resnet50:{tag}")
        assert spec.weights == tag
        assert spec.crop_pct == pytest.approx(reference.crop_size[0] / reference.resize_size[0],
                                              abs=1e-4)
    # DEFAULT is V2 for resnet50 (resize 232), V1 is the classic 256
    assert model_spec("resnet50").crop_pct == pytest.approx(224 / 232, abs=1e-4)
    assert model_spec("resnet50:DEFAULT").weights == torchvision.models.ResNet50_Weights.DEFAULT.name
    assert model_spec("inception_v3").input_size == 299
    assert model_spec("efficientnet_b3").input_size == \
        torchvision.models.EfficientNet_B3_Weights.DEFAULT.transforms().crop_size[0]
    with pytest.raises(ValueError, match="unknown weights tag 'V3' for resnet50: expected one of "
                                         "DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        model_spec("resnet50:V3")


def test_every_torchvision_classifier_is_listed():
    names = torchvision.models.list_models(module=torchvision.models)
    assert set(names) <= set(registry.available_models())
    assert "efficientnet_lite0" in registry.available_models()
    assert len(registry.available_models()) == len(set(registry.available_models()))


def test_tagged_default_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    """resnet50:IMAGENET1K_V1 reads the V1 file (by its URL's name) from torch.hub's cache."""
    refused = []
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: refused.append(a) or
                        (_ for _ in ()).throw(urllib.error.URLError("offline")))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        model = build(torchvision.models.resnet18, 3)
        url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
        cache = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        cache.parent.mkdir(parents=True)
        torch.save(model.state_dict(), cache)
        loaded = load_model("resnet18:IMAGENET1K_V1")
    finally:
        torch.hub.set_dir(previous)
    assert not refused and loaded.weights == "IMAGENET1K_V1"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.original(x), model(x), rtol=0, atol=0)


def test_dataparallel_checkpoint_gives_the_plain_state_dicts_logits(resnet18, tmp_path):
    model, plain = resnet18
    wrapped = tmp_path / "dp.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               wrapped)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = model(x)  # the reference: the seeded network itself
        a = load_model("resnet18", weights=plain).fcn(x)[..., 0, 0]
        b = load_model("resnet18", weights=wrapped).fcn(x)[..., 0, 0]
    torch.testing.assert_close(a, want, **TOL)
    torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_wrong_file_names_the_mismatch(resnet18):
    _, path = resnet18
    with pytest.raises(ValueError, match=r"keys do not match the model \(\d+ missing, e\.g\. "
                                         r"\['layer1\.0\.conv3\.weight'") as info:
        load_model("resnet50", weights=path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"'fc\.weight' has shape \(1000, 512\) but the model "
                                         r"expects \(10, 512\)"):
        load_model("resnet18", weights=path, num_classes=10)


def test_timm_training_checkpoint_loads_and_code_is_refused(resnet18, tmp_path):
    model, _ = resnet18
    ckpt = tmp_path / "model_best.pth.tar"  # what timm's train.py writes
    torch.save({"epoch": 9, "arch": "resnet18", "state_dict": model.state_dict(),
                "args": argparse.Namespace(lr=0.1, model="resnet18"), "metric": 71.5}, ckpt)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(load_model("resnet18", weights=ckpt).original(x), model(x),
                                   rtol=0, atol=0)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": model.state_dict(), "args": Evil()}, evil)
    with pytest.raises(ValueError, match="refused: it holds objects other than tensors"):
        load_model("resnet18", weights=evil)
    assert not marker.exists()


def test_duplicate_names_raise():
    families = registry.families()
    with pytest.raises(ValueError, match="family named 'torchvision' is registered already"):
        registry.register(families["torchvision"])
    copy = Family(name="mine", claims=lambda n: n == "resnet18", check=lambda n: None,
                  names=lambda: ["resnet18"], build=None, spec=None, weights=None)
    with pytest.raises(ValueError, match="'resnet18' of family 'mine' is a duplicate: family "
                                         "'torchvision' has it already"):
        registry.register(copy)
    assert "mine" not in registry.families()
    # a family that lists nothing but claims a taken name: caught when the name is used
    sneaky = Family(name="sneaky", claims=lambda n: n == "vgg16", check=lambda n: None,
                    names=lambda: [], build=None, spec=None, weights=None)
    registry.register(sneaky)
    try:
        with pytest.raises(ValueError, match="'vgg16' is a duplicate: families torchvision, sneaky"):
            registry.resolve("vgg16")
    finally:
        del registry.families()["sneaky"]


def test_a_new_family_is_one_record():
    from fcnclassify.models.loaded import IMAGENET
    from fcnclassify.models.registry import ModelSpec

    tiny = Family(name="tiny", claims=lambda n: n == "tiny_net", check=lambda n: None,
                  names=lambda: ["tiny_net"],
                  build=lambda n, k: torchvision.models.resnet18(num_classes=k),
                  spec=lambda n: ModelSpec(IMAGENET, 96, ("a", "b"), 2),
                  weights=lambda n, p: build(torchvision.models.resnet18, 5,
                                             num_classes=2).state_dict())
    registry.register(tiny)
    try:
        assert "tiny_net" in registry.available_models()
        loaded = load_model("tiny_net")
        assert (loaded.categories, loaded.input_size, loaded.num_classes) == (["a", "b"], 96, 2)
    finally:
        del registry.families()["tiny"]


# timm ---------------------------------------------------------------------------------------------

timm = pytest.importorskip("timm")


def test_timm_model_has_its_pretrained_cfg(hf_cache):
    for name in ("resnet18", "resnet18.a1_in1k", "test_efficientnet"):
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg  # the reference
        loaded = load_model(f"timm/{name}", weights=None)
        assert loaded.normalization.mean == pytest.approx(cfg["mean"])
        assert loaded.normalization.std == pytest.approx(cfg["std"])
        assert loaded.input_size == cfg["input_size"][-1]
        assert loaded.crop_pct == pytest.approx(cfg["crop_pct"])
        assert loaded.interpolation == cfg["interpolation"]
        assert loaded.num_classes == cfg["num_classes"]


def test_timm_default_weights_from_the_hugging_face_cache_offline(hf_cache, tmp_path):
    model = build(lambda: timm.create_model("resnet18", pretrained=False), 7)
    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    with pytest.raises(ValueError, match=r"model\.safetensors or pytorch_model\.bin is not in the "
                                         r"Hugging Face cache .*HF_HUB_OFFLINE is set") as info:
        load_model("timm/resnet18")
    assert "\n" not in str(info.value)
    hf_cache(repo, {"model.safetensors": _safetensors_bytes(model.state_dict(), tmp_path)})
    loaded = load_model("timm/resnet18")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(loaded.original(x), want, rtol=0, atol=0)
        torch.testing.assert_close(loaded.fcn(x)[..., 0, 0], want, **TOL)


def test_hf_hub_reference_names_its_architecture_classes_and_labels(hf_cache, tmp_path):
    import json

    model = build(lambda: timm.create_model("resnet18", pretrained=False, num_classes=3), 8)
    config = {"architecture": "resnet18", "num_classes": 3, "label_names": ["cat", "dog", "bird"],
              "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                                 "input_size": [3, 160, 160]}}
    hf_cache("someone/pets", {"model.safetensors": _safetensors_bytes(model.state_dict(), tmp_path),
                              "config.json": json.dumps(config).encode()})
    loaded = load_model(None, weights="hf-hub:someone/pets")
    assert loaded.name == "timm/resnet18" and loaded.weights == "hf-hub:someone/pets"
    assert loaded.categories == ["cat", "dog", "bird"] and loaded.input_size == 160
    assert loaded.normalization.mean == (0.5, 0.5, 0.5)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded.fcn(x)[..., 0, 0], model(x), **TOL)
    with pytest.raises(ValueError, match="hf-hub:someone/missing: model.safetensors or "
                                         "pytorch_model.bin is not in the Hugging Face cache"):
        load_model(None, weights="hf-hub:someone/missing")
    with pytest.raises(ValueError, match="expected a Hugging Face Hub reference like"):
        load_model(None, weights="hf-hub:no-slash")


# the command line ----------------------------------------------------------------------------------

def test_bad_models_are_one_line_with_exit_code_2(image, capsys, monkeypatch):
    one_line_error(*cli(capsys, "classify", image, "-m", "resnet19"),
                   "unknown model 'resnet19' (did you mean", "'resnet18'")
    one_line_error(*cli(capsys, "classify", image, "-m", "resnet50:IMAGENET1K_V9"),
                   "unknown weights tag 'IMAGENET1K_V9' for resnet50",
                   "DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2")
    one_line_error(*cli(capsys, "classify", image, "-m", "vit_b_16", "--weights", "none.pth"),
                   "no such weights file")
    one_line_error(*cli(capsys, "inspect", "-m", "vit_b_16"), "cannot be converted")
    one_line_error(*cli(capsys, "classify", image, "-m", "timm/resnt18"),
                   "unknown timm model 'resnt18'", "timm/resnet18")
    monkeypatch.setitem(sys.modules, "timm", None)  # timm not installed
    one_line_error(*cli(capsys, "classify", image, "-m", "timm/resnet18"),
                   "timm models need the 'timm' extra: pip install 'fcnclassify[timm]'")


def test_default_model_offline_error_says_how_to_get_its_weights(image, capsys, monkeypatch,
                                                                  tmp_path):
    """The default VGG16 without network: one line with the cache folder, the URL, --weights FILE
    and the offline model (the download is faked: tests never download)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        code, out, err = cli(capsys, "classify", image)
    finally:
        torch.hub.set_dir(previous)
    url = torchvision.models.VGG16_Weights.DEFAULT.url
    one_line_error(code, out, err, "cannot download vgg16 weights", url, "--weights FILE",
                   str(tmp_path / "hub" / "checkpoints"), "--model efficientnet_lite0")
    assert attempts, "the download went through torch.hub (faked)"


def test_hub_unreachable_is_one_fast_line_without_retries(hf_cache, monkeypatch):
    """Online mode with no route to the Hub: one connection attempt, no huggingface_hub retries
    (which take ~25 s), one line."""
    import socket

    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    tried = []
    real = huggingface_hub.hf_hub_download

    def cache_only(*args, **kwargs):  # the cache lookup may run; a download must not
        assert kwargs.get("local_files_only"), "a download was attempted"
        return real(*args, **kwargs)

    def refuse(address, timeout=None):
        tried.append((address, timeout))
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ValueError, match=r"hf-hub:someone/pets: not in the Hugging Face cache and "
                                         r"huggingface\.co cannot be reached \(Name or service not "
                                         r"known\): run once online, or pass --weights FILE"):
        load_model(None, weights="hf-hub:someone/pets")
    assert len(tried) == 1 and tried[0][1] == 10.0


def test_an_unconvertible_model_is_refused_before_any_download(monkeypatch, tmp_path):
    attempts = []
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: attempts.append(a))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(ValueError, match="VisionTransformer cannot be converted: attention"):
            load_model("vit_b_16")
    finally:
        torch.hub.set_dir(previous)
    assert not attempts
