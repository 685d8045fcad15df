"""The convert, inspect and classify commands: outputs checked against the models, every bad input."""

from __future__ import annotations

import json
import time
import urllib.error

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from torch import nn

from conftest import build
from fcnclassify.cli import main
from fcnclassify.commands.convert import default_output
from fcnclassify.network.convert import convert
from fcnclassify.models.registry import IMAGENET, load_model
from fcnclassify.network.summary import layer_table

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A seeded AlexNet checkpoint, a 3-class fine-tuned one with labels, and test images."""
    root = tmp_path_factory.mktemp("cli")
    model = build(torchvision.models.alexnet, 5)
    torch.save(model.state_dict(), root / "alexnet.pth")
    three = build(torchvision.models.alexnet, 6, num_classes=3)
    torch.save({"model": three.state_dict()}, root / "alexnet3.pth")
    (root / "labels.txt").write_text("cat\ndog\nbird\n")
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "square.png"), rgb[..., ::-1])
    cv2.imwrite(str(root / "chelsea.png"), skimage.data.chelsea()[..., ::-1])
    (root / "text.jpg").write_text("not an image")
    return {"root": root, "alexnet": model, "three": three, "rgb": rgb}


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, *needles):
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fcnclassify "), err
    for needle in needles:
        assert needle in err, err


def test_convert_round_trip_is_exact(files, capsys):
    root = files["root"]
    out = root / "alexnet-fcn.safetensors"
    code, stdout, _ = cli(capsys, "convert", "--model", "alexnet", "--weights", root / "alexnet.pth",
                          "--out", out)
    assert code == 0 and stdout.startswith(f"wrote {out}") and stdout.count("\n") == 1
    loaded = load_model(None, weights=out)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = files["alexnet"](x)
        torch.testing.assert_close(loaded.fcn(x)[..., 0, 0], want, **TOL)
        torch.testing.assert_close(loaded.original(x), want, rtol=0, atol=0)
        big = torch.randn(1, 3, 256, 320)  # the file holds the converted network bit for bit
        torch.testing.assert_close(loaded.fcn(big), convert(files["alexnet"])(big), rtol=0, atol=0)
    with pytest.raises(ValueError, match="converted alexnet network but --model vgg16"):
        load_model("vgg16", weights=out)
    before = out.stat().st_mtime_ns
    one_line_error(*cli(capsys, "convert", "--model", "alexnet", "--weights", root / "alexnet.pth",
                        "--out", out), "exists", "--force")
    assert out.stat().st_mtime_ns == before


def test_default_output_folder(tmp_path):
    assert default_output("vgg16", cwd=tmp_path) == tmp_path / "vgg16-fcn.safetensors"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "registry.json").write_text("{}")
    assert default_output("vgg16", cwd=tmp_path) == tmp_path / "weights" / "vgg16-fcn.safetensors"
    # registry names with a folder or a weights tag become one file name in that folder
    assert default_output("timm/convnext_tiny", cwd=tmp_path) == \
        tmp_path / "weights" / "timm-convnext_tiny-fcn.safetensors"
    assert default_output("resnet50:IMAGENET1K_V2", cwd=tmp_path).name == \
        "resnet50-IMAGENET1K_V2-fcn.safetensors"


def test_classify_json_fine_tuned_head(files, capsys):
    root = files["root"]
    code, out, err = cli(capsys, "classify", root / "square.png", "--model", "alexnet", "--weights",
                         root / "alexnet3.pth", "--labels", root / "labels.txt", "--json", "--flip",
                         "--topk", "3", "--sizes", "224")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["model"] == "alexnet" and doc["flip"] is True and (doc["sizes"], doc["scales"]) == ([224], None)
    (image,) = doc["images"]
    assert image["image"] == str(root / "square.png")
    assert (image["width"], image["height"]) == (224, 224)
    assert image["maps"] == [{"size": 224, "scale": 1.0, "flipped": f, "cells": [1, 1]} for f in (False, True)]
    assert [sorted(c) for c in image["classes"]] == [["id", "label", "score"]] * 3
    # reference: the original network on the image and its mirror, posteriors averaged
    x = IMAGENET(files["rgb"])[None]
    with torch.no_grad():
        probs = (files["three"](x).softmax(1) + files["three"](x.flip(-1)).softmax(1))[0] / 2
    order = probs.argsort(descending=True).tolist()
    assert [c["id"] for c in image["classes"]] == order
    assert [c["label"] for c in image["classes"]] == [["cat", "dog", "bird"][i] for i in order]
    torch.testing.assert_close(torch.tensor([c["score"] for c in image["classes"]]),
                               probs[order], rtol=0, atol=2e-6)


def test_classify_lite0_chelsea_table(files, capsys):
    code, out, err = cli(capsys, "classify", files["root"] / "chelsea.png", "--model",
                         "efficientnet_lite0", "--topk", "3")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{files['root'] / 'chelsea.png'} (451x300, 6 maps, Q=256,384,512)"  # VGG protocol
    assert any(cat in out for cat in ("tabby", "tiger cat", "Egyptian cat")), out


def test_classify_reports_a_bad_image_and_goes_on(files, capsys):
    root = files["root"]
    code, out, err = cli(capsys, "classify", root / "missing.jpg", root / "text.jpg",
                         root / "square.png", "--model", "alexnet", "--weights",
                         root / "alexnet3.pth", "--json")
    assert code == 2
    assert [json.loads(out)["images"][0]["image"]] == [str(root / "square.png")]
    lines = err.splitlines()
    assert len(lines) == 2 and "missing.jpg" in lines[0] and "text.jpg" in lines[1]


@pytest.mark.parametrize("argv, needles", [
    (["--model", "vgg17"], ["unknown model 'vgg17'"]),
    (["--model", "alexnet", "--weights", "{root}/alexnet3.pth", "--num-classes", "5"],
     ["has shape (3, 4096)", "(5, 4096)"]),
    (["--model", "resnet18", "--weights", "{root}/alexnet3.pth"], ["no 'fc.weight'"]),
    (["--model", "alexnet", "--weights", "{root}/alexnet3.pth", "--labels", "{root}/missing.txt"],
     ["missing.txt"]),
    (["--model", "alexnet", "--weights", "{root}/nothing.pth"], ["no such weights file"]),
])
def test_classify_bad_model_options(files, capsys, argv, needles):
    argv = [a.format(root=files["root"]) for a in argv]
    one_line_error(*cli(capsys, "classify", files["root"] / "square.png", *argv), *needles)


def test_missing_image_fails_before_loading(files, capsys):
    start = time.perf_counter()
    one_line_error(*cli(capsys, "classify", files["root"] / "nope.jpg", "--model", "vgg16"),
                   "nope.jpg")
    assert time.perf_counter() - start < 5


def test_pickled_code_is_refused(files, capsys, tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    torch.save({"features.0.weight": Evil()}, tmp_path / "evil.pth")
    one_line_error(*cli(capsys, "classify", files["root"] / "square.png", "--model", "alexnet",
                        "--weights", tmp_path / "evil.pth"), "evil.pth", "refused")
    assert not marker.exists()


def test_download_failure_is_one_line(files, capsys, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        start = time.perf_counter()
        result = cli(capsys, "classify", files["root"] / "square.png", "--model", "alexnet", "--json")
        assert time.perf_counter() - start < 10
    finally:
        torch.hub.set_dir(previous)
    one_line_error(*result, "cannot download alexnet weights", "--weights FILE",
                   "--model efficientnet_lite0")


def test_inspect_vgg16_400(capsys):
    code, out, err = cli(capsys, "inspect", "--model", "vgg16", "--size", "400x400")
    assert code == 0 and err == ""
    # hand-computed: floor((400 - 224) / 32) + 1 = 6 windows a side; 400 / 32 -> 12x12 features
    assert "score map 6x6 (36 cells) for 400x400" in out
    assert "window 224 px, stride 32 px, offset 0 px, receptive field 404 px" in out
    assert "resamples 12x12 -> 7x7" in out and "ONE prediction" in out
    assert "random weights" in out
    head = [line.split() for line in out.splitlines() if line.startswith("head.")]
    assert [row[2] for row in head] == ["4096x6x6", "4096x6x6", "4096x6x6", "4096x6x6", "1000x6x6"]
    assert head[0][3] == f"{512 * 7 * 7 * 4096 + 4096:,}"  # fc6 as a 7x7 convolution


def test_inspect_resnet18_map_size(capsys):
    code, out, _ = cli(capsys, "inspect", "--model", "resnet18", "--size", "600x400")  # WxH
    assert code == 0
    # height 400 -> 200 (conv1) -> 100 (maxpool) -> 100, 50, 25, 13 (layers); width 600 -> ... -> 19;
    # then 7x7 windows at stride 1: 13 - 6 = 7, 19 - 6 = 13
    assert "score map 7x13 (91 cells) for 600x400" in out
    assert out.startswith("resnet18 at 600x400 pixels")
    assert "(input 1x3x400x600)" in out and "64x200x300" in out  # NCHW: conv1 halves 400x600
    assert "window 224 px, stride 32 px, offset 0 px" in out
    assert "averages the whole 13x19 feature map to 1x1" in out


def test_layer_table_reports_the_failing_linear():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(32),
                        nn.Flatten(), nn.Linear(4 * 7 * 7, 5))
    rows = layer_table(net, (224, 224))
    assert rows[-1].output_shape == (5,) and rows[-1].params == 4 * 49 * 5 + 5
    assert rows[0].memory_mib == pytest.approx(4 * 224 * 224 * 4 / 2**20)
    rows = layer_table(net, (400, 400))
    assert rows[-1].name == "4" and rows[-1].type == "Linear" and rows[-1].output_shape is None
    assert rows[-1].note.startswith("fails:") and "196" in rows[-1].note  # 4 x 7 x 7 expected
    assert rows[-2].output_shape == (4 * 12 * 12,)


def test_layer_table_counts_a_conv_with_a_padding_child():
    class PaddedConv(nn.Conv2d):  # as efficientnet-lite's Conv2dStaticSamePadding
        def __init__(self):
            super().__init__(3, 8, 3, stride=2)
            self.pad = nn.ZeroPad2d((0, 1, 0, 1))

        def forward(self, x):
            return super().forward(self.pad(x))

    net = nn.Sequential(PaddedConv(), nn.ReLU())
    rows = layer_table(net, (32, 32))
    assert [(r.name, r.output_shape, r.params) for r in rows] == [
        ("0.pad", (3, 33, 33), 0), ("0", (8, 16, 16), 8 * 3 * 9 + 8), ("1", (8, 16, 16), 0)]
    assert sum(r.params for r in rows) == sum(p.numel() for p in net.parameters())


def test_classify_memory_budget_and_stride_factor(files, capsys):
    """--max-memory reaches the tiler (same scores within budget, one line when too small);
    --stride-factor 2 halves the stride of the maps."""
    base = ["classify", files["root"] / "chelsea.png", "--model", "efficientnet_lite0", "--json",
            "--topk", "3"]
    code, out, _ = cli(capsys, *base)
    plain = json.loads(out)["images"][0]
    code_budget, out, _ = cli(capsys, *base, "--max-memory", "2GB")
    budget = json.loads(out)["images"][0]
    assert code == code_budget == 0
    assert [c["id"] for c in budget["classes"]] == [c["id"] for c in plain["classes"]]
    for a, b in zip(budget["classes"], plain["classes"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    code, out, err = cli(capsys, *base, "--max-memory", "2MiB")
    assert code == 2 and "expected max_memory of at least" in err and err.count("\n") == 1
    code, out, _ = cli(capsys, *base, "--stride-factor", "2", "--scales", "1", "--no-flip")
    # 300x451 at stride 16: floor((n - 224) / 16) + 1 cells (224: the smallest input of one window)
    assert code == 0 and json.loads(out)["images"][0]["maps"][0]["cells"] == [5, 15]
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in base] + ["--max-memory", "lots"])
    assert exit_.value.code == 2
    assert "expected a memory size like '2GB'" in capsys.readouterr().err
