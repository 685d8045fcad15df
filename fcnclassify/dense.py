"""Dense evaluation: run a fully-convolutional network over whole images, at several scales and flips."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .convert import FullyConvNet
from .scoremap import ScoreMap

__all__ = ["dense_evaluate", "resolve_device", "resolve_dtype", "prepare"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"`` or None picks CUDA when available, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return device


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A torch dtype from a name; float16 only where the device computes it (CUDA)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"expected a dtype in {sorted(_DTYPES)} but got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 convolutions are slow or missing on the CPU; use bfloat16")
    return dtype


def prepare(fcn: nn.Module, *, device: torch.device, dtype: torch.dtype,
            channels_last: bool | None = None) -> tuple[nn.Module, bool]:
    """``fcn`` on ``device`` in ``dtype``, and the memory format to use.

    The network is copied when its device or dtype differs, so that a bfloat16 run never rounds the
    caller's float32 weights; move it yourself (``fcn.to(device, dtype)``) to avoid the copy.
    channels_last (None: on) is faster with oneDNN on the CPU and with cuDNN on tensor cores.
    """
    channels_last = True if channels_last is None else channels_last
    param = next(fcn.parameters())
    if param.device.type != device.type or param.dtype != dtype:
        fcn = copy.deepcopy(fcn).to(device=device, dtype=dtype)
    fcn = fcn.eval()
    if channels_last:
        fcn = fcn.to(memory_format=torch.channels_last)
    return fcn, channels_last


def dense_evaluate(
    fcn: FullyConvNet,
    images: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool | None = None,
    pad: bool = False,
    max_memory: int | None = None,
    progress: bool = False,
) -> list[list[ScoreMap]]:
    """Score maps of a batch of images at every scale, and flipped if asked.

    Args:
        images: normalised images, ``(N, 3, H, W)`` or one ``(3, H, W)``.
        scales: resize factors; each image is resized (antialiased when shrinking) to
            ``round(H * s) x round(W * s)``.
        flip: also evaluate the horizontally flipped images (the VGG protocol).
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``/None.
        dtype: float32 (default), bfloat16, or float16 (CUDA only).
        channels_last: NHWC memory format (default on).
        pad: zero-pad (bottom and right) an input smaller than one window instead of raising.
        max_memory: activation-memory budget in bytes; larger inputs are evaluated in exact tiles
            (:mod:`fcnclassify.tiling`). None: tiles only an input whose untiled pass would take
            more than half of the device's available memory.

    Returns:
        For each image, its maps: for each scale, the map and then (with ``flip``) the flipped one.
        Logits are returned as float32 on the CPU.
    """
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W) but got {tuple(images.shape)}")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    fcn, nhwc = prepare(fcn, device=device, dtype=dtype, channels_last=channels_last)
    height, width = images.shape[-2:]
    out: list[list[ScoreMap]] = [[] for _ in range(len(images))]
    with torch.inference_mode():
        for scale in scales:
            x = rescale(images.to(device=device, dtype=torch.float32), scale).to(dtype)
            size = tuple(x.shape[-2:])
            for flipped in (False, True) if flip else (False,):
                inp = x.flip(-1) if flipped else x
                logits = run(fcn, inp, pad=pad, channels_last=nhwc, max_memory=max_memory,
                             progress=progress)
                if flipped:
                    logits = logits.flip(-1)
                for n in range(len(images)):
                    out[n].append(ScoreMap(logits[n], fcn.geometry, (height, width), size, flipped))
    return out


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` by ``scale`` (bilinear, antialiased when shrinking)."""
    if scale <= 0:
        raise ValueError(f"expected a positive scale but got {scale}")
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                         antialias=scale < 1.0)


def run(fcn: FullyConvNet, x: torch.Tensor, *, pad: bool = False,
        channels_last: bool = True, max_memory: int | None = None,
        progress: bool = False) -> torch.Tensor:
    """Logits ``(N, classes, h, w)`` as float32 on the CPU for a prepared input batch."""
    low = fcn.geometry.min_input
    h, w = x.shape[-2:]
    if pad and (h < low or w < low):
        x = F.pad(x, (0, max(0, low - w), 0, max(0, low - h)))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    from .tiling import needs_tiling, tiled_forward

    if max_memory is not None or needs_tiling(fcn, x):  # None: tiles only what does not fit
        return tiled_forward(fcn, x, max_memory=max_memory, progress=progress)
    return fcn(x).float().cpu().contiguous()
