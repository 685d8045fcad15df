"""ONNX out and the onnxruntime runtime: logits against PyTorch, metadata, the commands, bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torchvision

from conftest import build
from fcnclassify.cli import main
from fcnclassify.evaluation.dense import dense_evaluate
from fcnclassify.evaluation.tiling import smallest_budget, tiled_forward
from fcnclassify.network.export import FORMAT, VERIFY_SIZES, export_onnx
from fcnclassify.network.onnx_runtime import OnnxNet, read_metadata

SIZES = ((224, 224), (333, 517), (480, 640))  # square, odd, landscape
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox"]


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, *needles):
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("fcnclassify "), err
    for needle in needles:
        assert needle in err, err


def tolerance(reference: torch.Tensor) -> dict:
    """float32 sums in another order: relative to the logits' scale."""
    return dict(rtol=1e-4, atol=1e-4 * max(1.0, float(reference.abs().max())))


@pytest.fixture(scope="module")
def narrow(vgg_fcn, tmp_path_factory):
    """The narrow VGG16 (fc head, 6 classes) exported through the Python API."""
    path = tmp_path_factory.mktemp("narrow") / "narrow.onnx"
    report = export_onnx(vgg_fcn, path, name="narrow-vgg16", categories=LABELS,
                         mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    return path, report


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A seeded ResNet-18 (pooled head, 10 classes) as a weights file, exported by the command,
    and two photos."""
    root = tmp_path_factory.mktemp("resnet")
    model = build(torchvision.models.resnet18, 3, num_classes=10)
    torch.save(model.state_dict(), root / "r18.pth")
    cv2.imwrite(str(root / "chelsea.png"), skimage.data.chelsea()[..., ::-1])
    cv2.imwrite(str(root / "coffee.png"), skimage.data.coffee()[::2, ::2, ::-1].copy())
    model_args = ["-m", "resnet18", "--weights", root / "r18.pth", "--num-classes", "10"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([str(a) for a in ["export", *model_args, "--onnx", root / "r18.onnx"]])
    assert code == 0
    return {"root": root, "model": model, "args": model_args, "onnx": root / "r18.onnx",
            "images": [root / "chelsea.png", root / "coffee.png"], "stdout": printed.getvalue()}


def test_onnx_logits_match_pytorch_at_three_sizes(vgg_fcn, narrow):
    path, report = narrow
    assert [size for size, _ in report.differences] == list(VERIFY_SIZES)
    assert all(d <= report.tolerance for _, d in report.differences)
    net = OnnxNet(path)
    g = torch.Generator().manual_seed(5)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w, generator=g)  # batch 2: the batch is dynamic too
        with torch.inference_mode():
            reference = vgg_fcn(x)
        logits = net(x)
        assert tuple(logits.shape) == (2, 6, *vgg_fcn.geometry.output_size(h, w))
        torch.testing.assert_close(logits, reference, **tolerance(reference))


def test_ceil_mode_pooling_exports_with_dynamic_sizes(tmp_path):
    """SqueezeNet's ceil-mode max pools: named Dims with ranges fail in torch.export (sympy cannot
    solve the floor guards); the export must still take any size, odd ones included."""
    from fcnclassify.network.convert import convert

    fcn = convert(build(torchvision.models.squeezenet1_0, 4, num_classes=5))
    export_onnx(fcn, tmp_path / "squeeze.onnx", verify=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    net = OnnxNet(tmp_path / "squeeze.onnx")
    g = torch.Generator().manual_seed(6)
    for h, w in ((net.geometry.min_input, 231), (301, 257), (450, 333)):
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.inference_mode():
            reference = fcn(x)
        assert tuple(reference.shape[-2:]) == fcn.geometry.output_size(h, w)
        torch.testing.assert_close(net(x), reference, **tolerance(reference))
        assert net.activation_memory((h, w)) > x.numel() * 4  # the graph's shapes are all known


def test_metadata_round_trip(vgg_fcn, narrow):
    path, _ = narrow
    meta = read_metadata(path)
    assert meta["geometry"] == vgg_fcn.geometry  # window, stride, offset, field, size rules
    assert (meta["name"], meta["cells"], meta["input_size"]) == ("narrow-vgg16", "window", 224)
    assert meta["labels"] == LABELS
    assert meta["mean"] == (0.5, 0.4, 0.3) and meta["std"] == (0.2, 0.25, 0.3)
    net = OnnxNet(path)
    assert (net.num_classes, net.categories, net.geometry.min_input) == (6, LABELS, 224)
    assert (net.geometry.window, net.geometry.stride, net.geometry.receptive_field) == (224, 32, 404)


@pytest.mark.filterwarnings("ignore::fcnclassify.evaluation.tiling.SlowTilingWarning")
def test_tiles_and_budget_through_onnxruntime_match_untiled_pytorch(vgg_fcn, narrow):
    net = OnnxNet(narrow[0])
    x = torch.randn(1, 3, 600, 700, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        reference = vgg_fcn(x)
    torch.testing.assert_close(tiled_forward(net, x, tile=(2, 3)), reference, **tolerance(reference))
    # a budget just above the smallest that works: many tiles, chosen from the ONNX graph's memory
    fixed, tile = smallest_budget(net, x)
    budget = int((fixed + tile) * 1.3)
    maps = dense_evaluate(net, x, max_memory=budget)[0]
    torch.testing.assert_close(maps[0].logits, reference[0], **tolerance(reference))
    with pytest.raises(ValueError, match="expected max_memory of at least"):
        dense_evaluate(net, x, max_memory=fixed)


def test_export_command_prints_three_verified_sizes(resnet):
    out = resnet["stdout"]
    lines = [line for line in out.splitlines() if "onnxruntime vs PyTorch" in line]
    assert [line.split(" at ")[1].split()[0] for line in lines] == ["224x224", "333x517", "480x640"]
    assert all(float(line.rsplit(" ", 1)[1]) < 1e-3 for line in lines), out
    assert "window 224, stride 32" in out
    meta = read_metadata(resnet["onnx"])
    assert meta["name"] == "resnet18" and len(meta["labels"]) == 10
    assert not list(resnet["root"].glob(".*tmp")), "a temporary file was left behind"
    with open(resnet["onnx"], "rb") as f:
        import onnx

        props = {p.key: p.value for p in onnx.load_model(f, load_external_data=False).metadata_props}
    assert props["format"] == FORMAT and json.loads(props["geometry"])["stride"] == 32


def test_classify_with_onnxruntime_gives_the_same_topk(resnet, capsys):
    common = [*resnet["images"], "--json", "--topk", "5", "-q", "--sizes", "224,288"]
    code, out, err = cli(capsys, "classify", *resnet["args"], *common)
    assert code == 0, err
    torch_doc = json.loads(out)
    code, out, err = cli(capsys, "classify", "--onnx", resnet["onnx"], *common)
    assert code == 0, err
    onnx_doc = json.loads(out)
    assert onnx_doc["model"] == "resnet18" and onnx_doc["weights"] == str(resnet["onnx"])
    for a, b in zip(torch_doc["images"], onnx_doc["images"], strict=True):
        assert a["maps"] == b["maps"]
        assert [c["id"] for c in a["classes"]] == [c["id"] for c in b["classes"]]
        np.testing.assert_allclose([c["score"] for c in a["classes"]],
                                   [c["score"] for c in b["classes"]], atol=1e-5)


def test_heatmap_with_onnxruntime_gives_the_same_maps(resnet, tmp_path, capsys):
    common = [resnet["images"][0], "--save-npz", "-q", "--topk", "2"]
    code, _, err = cli(capsys, "heatmap", *resnet["args"], *common, "--out", tmp_path / "torch")
    assert code == 0, err
    # no --onnx: the model options exported on the fly, for this run
    code, _, err = cli(capsys, "heatmap", *resnet["args"], "--runtime", "onnxruntime", *common,
                       "--out", tmp_path / "onnx")
    assert code == 0 and "exported to ONNX for this run" in err, err
    with np.load(tmp_path / "torch" / "chelsea-png_maps.npz") as a, \
            np.load(tmp_path / "onnx" / "chelsea-png_maps.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        logits = [k for k in a.files if a[k].dtype.kind == "f" and a[k].ndim == 3]
        assert logits
        for key in a.files:
            if key in logits:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-4,
                                           atol=1e-4 * max(1.0, float(np.abs(a[key]).max())))
            else:
                np.testing.assert_array_equal(b[key], a[key])
    overlays = sorted(p.name for p in (tmp_path / "torch").glob("chelsea-png_*.jpg"))
    assert overlays == sorted(p.name for p in (tmp_path / "onnx").glob("chelsea-png_*.jpg"))


def test_existing_file_is_refused_without_force_and_replaced_with_it(resnet, vgg_fcn, tmp_path,
                                                                    capsys):
    target = tmp_path / "taken.onnx"
    target.write_bytes(b"keep me")
    one_line_error(*cli(capsys, "export", *resnet["args"], "--onnx", target), "exists", "--force")
    assert target.read_bytes() == b"keep me"
    with pytest.raises(FileExistsError, match="exists"):
        export_onnx(vgg_fcn, target, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert target.read_bytes() == b"keep me"
    export_onnx(vgg_fcn, target, force=True, verify=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert read_metadata(target)["geometry"] == vgg_fcn.geometry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]  # no temporary left


@pytest.mark.parametrize("where", ["missing/folder/out.onnx", "afile/out.onnx", "."])
def test_unwritable_path_exits_2(resnet, tmp_path, capsys, where):
    (tmp_path / "afile").write_text("a file, not a folder")
    one_line_error(*cli(capsys, "export", *resnet["args"], "--onnx", tmp_path / where), "out.onnx"
                   if where != "." else "folder")


def test_missing_extra_exits_2(resnet, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees without it
    one_line_error(*cli(capsys, "export", *resnet["args"], "--onnx", tmp_path / "x.onnx"),
                   "fcnclassify[onnx]")
    assert not (tmp_path / "x.onnx").exists()
    one_line_error(*cli(capsys, "classify", "--onnx", resnet["onnx"], resnet["images"][0], "-q"),
                   "fcnclassify[onnx]")


@pytest.mark.parametrize("content", [b"not an onnx model at all", None])
def test_non_onnx_file_exits_2(resnet, tmp_path, capsys, content):
    path = tmp_path / "model.onnx"
    if content is None:  # a real ONNX file that fcnclassify did not write: no metadata
        import onnx

        proto = onnx.load(str(resnet["onnx"]))
        del proto.metadata_props[:]
        onnx.save(proto, str(path))
        needle = "no fcnclassify metadata"
    else:
        path.write_bytes(content)
        needle = "is not an ONNX model"
    one_line_error(*cli(capsys, "classify", "--onnx", path, resnet["images"][0], "-q"), needle)


@pytest.mark.parametrize("options, needle", [
    (["--runtime", "torch"], "--runtime onnxruntime"),
    (["-m", "resnet18"], "expected no --model"),
    (["--dtype", "bfloat16"], "expected dtype float32"),
])
def test_contradicting_options_exit_2(resnet, capsys, options, needle):
    one_line_error(*cli(capsys, "classify", "--onnx", resnet["onnx"], *options,
                        resnet["images"][0], "-q"), needle)
