"""The CUDA path of the timing and memory helpers, exercised on the CPU with fakes of torch.cuda.

No GPU is needed: torch.cuda's synchronize, peak-memory and availability calls are replaced by
recorders, and a fake clock shows what falls inside the timed region.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fcnclassify.network import device as network_device
from fcnclassify.commands.bench import suite_root

sys.path.insert(0, str(suite_root()))  # the suite ships with the checkout, not the package

from benchmarks import measure  # noqa: E402

CUDA = torch.device("cuda", 0)


class Clock:
    """A fake ``time.perf_counter``: time moves only when the fake GPU works or the host does."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[str] = []

    def __call__(self) -> float:
        self.events.append("clock")
        return self.now


@pytest.fixture
def gpu(monkeypatch):
    """A fake CUDA device whose queued work takes 5 s, paid when the host synchronises."""
    clock = Clock()
    state = {"queued": 0.0}

    def fn():  # launching is instant on the host; the kernel's time is queued
        clock.events.append("fn")
        clock.now += 0.25
        state["queued"] += 5.0

    def synchronize(device=None):
        assert torch.device(device) == CUDA
        clock.events.append("sync")
        clock.now += state["queued"]
        state["queued"] = 0.0

    monkeypatch.setattr(measure.time, "perf_counter", clock)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    return clock, fn


def test_sync_waits_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    measure.sync(torch.device("cpu"))
    assert calls == []
    measure.sync(CUDA)
    assert calls == [CUDA]


def test_time_median_counts_the_device_work_inside_the_timed_region(gpu):
    clock, fn = gpu
    median, times = measure.time_median(fn, device=CUDA, repeats=3, warmup=2)
    # the kernels' 5 s are in every repeat: the sync is between the start and the stop
    assert times == [5.25, 5.25, 5.25]
    assert median == 5.25
    # warm-up, then its queue drained before the first start; each repeat is start, fn, sync, stop
    assert clock.events == ["fn", "fn", "sync"] + ["clock", "fn", "sync", "clock"] * 3


def test_time_median_on_the_cpu_never_synchronises(gpu):
    clock, fn = gpu
    _, times = measure.time_median(fn, device=torch.device("cpu"), repeats=2, warmup=0)
    assert "sync" not in clock.events
    assert times == [0.25, 0.25]  # without a sync the asynchronous work is not seen: hence the sync


def test_peak_memory_on_cuda_resets_then_reads_the_device_peak(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: events.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device=None: events.append(("peak", device)) or 123_456_789)
    with measure.PeakMemory(CUDA) as peak:
        assert events == [("reset", CUDA)]
        events.append(("work", None))
    assert events == [("reset", CUDA), ("work", None), ("peak", CUDA)]
    assert peak.peak_bytes == 123_456_789


def test_peak_memory_on_the_cpu_is_the_region_peak():
    with measure.PeakMemory(torch.device("cpu")) as first:
        big = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
        del big
    with measure.PeakMemory(torch.device("cpu")) as second:
        small = np.ones(40 * 2**20 // 8)
        del small
    assert first.peak_bytes >= 400 * 2**20
    if not second.exact:
        pytest.skip("no /proc/self/clear_refs: the peak is the process's lifetime peak")
    # reset at the start of the region: the earlier 400 MiB do not count in the second peak
    assert second.peak_bytes < first.peak_bytes - 300 * 2**20


def test_resolve_device_with_and_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert network_device.resolve_device("auto") == torch.device("cuda")
    assert network_device.resolve_device(None) == torch.device("cuda")
    assert network_device.resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert network_device.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        network_device.resolve_device("cuda")


def test_float16_is_allowed_on_cuda_only():
    assert network_device.resolve_dtype("float16", CUDA) == torch.float16
    with pytest.raises(ValueError, match="float16"):
        network_device.resolve_dtype("float16", torch.device("cpu"))


def test_native_bfloat16_asks_cuda_on_cuda_and_onednn_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert measure.native_bfloat16(CUDA) is False
    assert measure.native_bfloat16(torch.device("cpu")) is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert measure.native_bfloat16(CUDA) is True
    assert measure.native_bfloat16(torch.device("cpu")) is False
