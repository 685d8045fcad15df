"""Measuring one thing honestly: median time after warm-up, FLOPs, peak memory, and the models.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes only,
no compute): it counts a multiply-add as 2 FLOPs, so FLOPs = 2 x MACs.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fcnclassify.network.seeded import randomize


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; the CPU has none queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], *, device: torch.device, repeats: int = 3,
                warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time in seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls.

    On CUDA the device is synchronised inside the timed region, so the time is the GPU's.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def count_flops(module: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs (2 per multiply-add) of one forward pass of ``module`` on an input of ``shape``."""
    meta = copy.deepcopy(module).float().to("meta")  # FLOPs do not depend on the dtype
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


class PeakMemory:
    """Peak memory of a region: process RSS on the CPU, ``max_memory_allocated`` on CUDA.

    On Linux the kernel's RSS high-water mark (``VmHWM``) is reset at the start of the region
    (``/proc/self/clear_refs``), so the peak is that of the region, not of the process's lifetime;
    elsewhere it falls back to ``ru_maxrss`` (lifetime peak, an upper bound).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None
        self.exact = True

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.exact = False
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.exact:
            self.peak_bytes = _status_kib("VmHWM") * 1024
        else:
            import resource

            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise ValueError(f"expected {key} in /proc/self/status")


def build(name: str) -> nn.Module:
    """A registry model with seeded random weights (nothing to download); lite0 with its real ones."""
    from fcnclassify.models.registry import build_original, load_model

    if name == "efficientnet_lite0":
        return load_model(name).original
    return randomize(build_original(name))


def timm_vgg16(original: nn.Module) -> nn.Module:
    """timm's ``vgg16`` (ConvMlp pre-logits: fc6 as a 7x7 conv, then global average pooling) with
    the weights of torchvision's ``original``, mapped as timm's ``_filter_fn`` does."""
    import timm

    model = timm.create_model("vgg16", pretrained=False)
    state = original.state_dict()
    mapped = {k: v for k, v in state.items() if k.startswith("features.")}
    mapped["pre_logits.fc1.weight"] = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    mapped["pre_logits.fc1.bias"] = state["classifier.0.bias"]
    mapped["pre_logits.fc2.weight"] = state["classifier.3.weight"].reshape(4096, 4096, 1, 1)
    mapped["pre_logits.fc2.bias"] = state["classifier.3.bias"]
    mapped["head.fc.weight"] = state["classifier.6.weight"]
    mapped["head.fc.bias"] = state["classifier.6.bias"]
    model.load_state_dict(mapped)
    return model.eval()


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run natively (AVX512-BF16/AMX on the CPU; CUDA)."""
    from fcnclassify.network.device import native_bfloat16 as native

    return native(device)
