"""Where and in which precision a network runs: the one place device and dtype are decided."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .convert import FullyConvNet

__all__ = ["EmulatedPrecisionWarning", "Float32Head", "native_bfloat16", "prepare", "resolve", "resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"`` or None picks CUDA when available, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return device


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run natively: CUDA, or a CPU with AVX512-BF16 or AMX (oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class EmulatedPrecisionWarning(RuntimeWarning):
    """bfloat16 asked for on a CPU that emulates it: slower than float32."""

    once_per_run = True


_EMULATED = {"said": False}  # the emulation notice is given once per process


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A torch dtype from a name; float16 only where the device computes it (CUDA).

    bfloat16 on a CPU without native support (no AVX512-BF16 or AMX) gives one RuntimeWarning
    per process: oneDNN then emulates it, slower than float32.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"expected a dtype in {sorted(_DTYPES)} but got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 convolutions are slow or missing on the CPU; use bfloat16")
    if dtype == torch.bfloat16 and device.type == "cpu" and not _EMULATED["said"] \
            and not native_bfloat16(device):
        _EMULATED["said"] = True
        warnings.warn("bfloat16 is emulated on this CPU (no AVX512-BF16 or AMX): slower than "
                      "float32, not faster", EmulatedPrecisionWarning, stacklevel=2)
    return dtype


class Float32Head(nn.Sequential):
    """A head's layers in float32 whatever the body's dtype: its input is cast up first.

    The head decides the answer (the window's pooling, the classifier, the logits that softmax and
    argmax read); bfloat16's 8-bit mantissa there ties and swaps close classes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


def prepare(fcn: nn.Module, *, device: torch.device, dtype: torch.dtype,
            channels_last: bool | None = None) -> tuple[nn.Module, bool]:
    """``fcn`` on ``device`` in ``dtype``, and the memory format to use.

    The network is copied when its device or dtype differs, so that a bfloat16 run never rounds the
    caller's float32 weights; move it yourself (``fcn.to(device, dtype)``) to avoid the copy.
    In bfloat16 or float16 the copy of a :class:`FullyConvNet` runs its body in that dtype and its
    head in float32 (:class:`Float32Head`, copied from the caller's weights, not rounded ones), so
    the logits are float32.
    channels_last (None: on) is faster with oneDNN on the CPU and with cuDNN on tensor cores.
    """
    if not isinstance(fcn, nn.Module):  # another runtime (onnx_runtime.OnnxNet): NCHW, as it is
        return fcn.prepared(device, dtype), False
    channels_last = True if channels_last is None else channels_last
    param = next(fcn.parameters())
    if param.device.type != device.type or param.dtype != dtype:
        head = fcn.head if isinstance(fcn, FullyConvNet) and dtype.itemsize < 4 else None
        # a float32 head is copied on its own: leave it out of the copy in ``dtype``
        fcn = copy.deepcopy(fcn, {} if head is None else {id(head): nn.Sequential()})
        fcn = fcn.to(device=device, dtype=dtype)
        if head is not None:
            fcn.head = Float32Head(*copy.deepcopy(head)).to(device=device, dtype=torch.float32)
    fcn = fcn.eval()
    if channels_last:
        fcn = fcn.to(memory_format=torch.channels_last)
    return fcn, channels_last


def resolve(device: str | torch.device | None = None,
            dtype: str | torch.dtype | None = None) -> tuple[torch.device, torch.dtype]:
    """``(device, dtype)`` from the user's words: the one place both are decided."""
    device = resolve_device(device)
    return device, resolve_dtype(dtype, device)
