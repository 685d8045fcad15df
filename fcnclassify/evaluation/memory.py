"""Memory of a dense forward pass: estimate it from the layers, read a budget, find what is available.

The estimate replays the network's graph on meta tensors (shapes only, nothing computed) and adds up
the activations that are alive at each step: an output is allocated when its node runs and freed after
its last user; an in-place activation allocates nothing. A convolution also needs a transient copy of its
weights (oneDNN reorders them into its blocked layout on every call: 392 MiB for VGG16's fc6). The peak
of that sum is the estimate, in bytes, of the pass's working memory: the weights themselves and the
caller's whole input and output are not counted.
"""

from __future__ import annotations

import copy
import math
import os
import re
import weakref

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..network import _fx
from ..network.convert import FullyConvNet

__all__ = ["MemorySize", "activation_memory", "available_memory", "bytes_per_pixel", "format_bytes",
           "parse_memory"]

# allocator slack: peak RSS was 1.02x the raw estimate for VGG16 on the CPU (benchmarks/huge_image.py)
SAFETY = 1.1

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DECIMAL = ("B", "kB", "MB", "GB", "TB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB")


class MemorySize(int):
    """A number of bytes that remembers the unit it was written in (``"MB"``, ``"MiB"``, ``"B"``), so
    that messages about it speak the user's units."""

    unit: str

    def __new__(cls, value: int, unit: str = "B") -> MemorySize:
        self = super().__new__(cls, value)
        self.unit = unit
        return self


def parse_memory(text: str | int) -> MemorySize:
    """Bytes from ``"2GB"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes.

    Decimal units (kB, MB, GB, TB; one letter too) are powers of 1000, binary ones (KiB, MiB, GiB,
    TiB) powers of 1024. The result is an int that keeps the unit for messages (:class:`MemorySize`).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = int(text), getattr(text, "unit", "B")
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"expected a memory size like '2GB', '512MiB' or a number of bytes "
                             f"but got {text!r}")
        value = int(float(match.group(1)) * _UNITS[unit])
        unit = _unit_name(unit)
    if value <= 0:
        raise ValueError(f"expected a positive memory size but got {text!r}")
    return MemorySize(value, unit)


def _unit_name(lower: str) -> str:
    """``"mb"``, ``"m"`` -> ``"MB"``; ``"mib"`` -> ``"MiB"``; ``""`` -> ``"B"``."""
    if lower in ("", "b"):
        return "B"
    if lower.endswith("ib"):
        return lower[0].upper() + "iB"
    return "kB" if lower[0] == "k" else lower[0].upper() + "B"


def format_bytes(n: float, *, like: str | int | None = None, up: bool = False) -> str:
    """``1536 * 2**20 -> '1.50 GiB'``; with ``like``, in the style of a unit or a :class:`MemorySize`.

    ``like="MB"`` (or a size parsed from ``"170MB"``) writes decimal units, the one given when the
    value is at least one of it (``'37 MB'``, ``'1200 MB'``), a smaller one of the same family
    otherwise; whole units from 10 on, one decimal below, rounded up with ``up`` (for "at least" figures).
    """
    if like is None:
        for unit in ("B", "KiB", "MiB", "GiB"):
            if abs(n) < 1024:
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
            n /= 1024
        return f"{n:.2f} TiB"
    unit = like if isinstance(like, str) else getattr(like, "unit", "B")
    family = _DECIMAL if unit in _DECIMAL[1:] else _BINARY
    base = 1000 if family is _DECIMAL else 1024
    if unit == "B":  # a plain number of bytes: the largest binary unit that keeps it >= 1
        unit = next(u for u in reversed(family) if n >= base ** family.index(u) or u == "B")
    index = family.index(unit)
    while index > 0 and n < base**index:
        index -= 1
    value = n / base**index
    digits = 0 if value >= 10 else 1 if value >= 1 else 2
    step = 10.0**-digits
    value = math.ceil(value / step - 1e-9) * step if up else round(value, digits)
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return f"{text} {family[index]}"


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes the process can still allocate: free CUDA memory, or the system's available RAM.

    On Linux the RAM figure is ``MemAvailable`` from ``/proc/meminfo`` (free plus reclaimable cache);
    elsewhere the free pages that ``os.sysconf`` reports.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def activation_memory(fcn: FullyConvNet, size: tuple[int, int], *, batch: int = 1,
                      dtype: torch.dtype | None = None) -> int:
    """Estimated peak activation memory, in bytes, of ``fcn`` on a ``batch x 3 x H x W`` input.

    Includes the input itself, every intermediate activation alive at the worst moment, and the
    output; multiplied by :data:`SAFETY` to cover what the convolution libraries add.

    Args:
        fcn: The network.
        size: The input ``(height, width)`` in pixels.
        batch: Images run together.
        dtype: The compute dtype; default that of the network's weights (whose copy in this dtype
            the estimate then assumes).
    """
    if not isinstance(fcn, nn.Module):  # another runtime estimates its own graph (OnnxNet)
        return fcn.activation_memory(size, batch=batch, dtype=dtype)
    height, width = size
    if height < 1 or width < 1 or batch < 1:
        raise ValueError(f"expected a positive size and batch but got {size} x {batch}")
    param = next(fcn.parameters())
    weights = param.dtype
    # tile searches ask for the same crops again and again (per scale, flip, batch): replay once
    key = (height, width, batch, weights, param.device)
    cache = _ESTIMATES.setdefault(fcn, {})
    if key not in cache:
        gm = _graph(fcn)
        with torch.no_grad():  # on the meta device: shapes only, ~3 ms for VGG16
            ShapeProp(gm).propagate(torch.empty(batch, 3, height, width, dtype=weights, device="meta"))
        cache[key] = _peak_live_bytes(gm)
    # every tensor scales with the element size when the network runs in another dtype
    ratio = 1.0 if dtype is None else _itemsize(dtype) / _itemsize(weights)
    return int(cache[key] * ratio * SAFETY)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def bytes_per_pixel(fcn: FullyConvNet, *, dtype: torch.dtype | None = None) -> float:
    """Activation bytes per input pixel of one image (at 1024 x 1024), for quick checks.

    Activations grow with the pixel count, so ``bytes_per_pixel * batch * H * W`` approximates
    :func:`activation_memory` on large inputs without replaying the graph; cached per network.
    """
    if dtype is None:
        dtype = next(fcn.parameters()).dtype if isinstance(fcn, nn.Module) else torch.float32
    per_dtype = _PER_PIXEL.setdefault(fcn, {})
    if dtype not in per_dtype:
        side = max(1024, fcn.geometry.min_input)
        per_dtype[dtype] = activation_memory(fcn, (side, side), dtype=dtype) / side**2
    return per_dtype[dtype]


# per network object, dropped with it (a network copied per device or dtype must not leak)
_PER_PIXEL: weakref.WeakKeyDictionary[FullyConvNet, dict[torch.dtype, float]] = weakref.WeakKeyDictionary()
_GRAPHS: weakref.WeakKeyDictionary[FullyConvNet, fx.GraphModule] = weakref.WeakKeyDictionary()
_ESTIMATES: weakref.WeakKeyDictionary[FullyConvNet, dict[tuple, int]] = weakref.WeakKeyDictionary()


def _graph(fcn: FullyConvNet) -> fx.GraphModule:
    """``fcn`` as one traced graph (body then head) on the meta device, cached per network object."""
    if fcn not in _GRAPHS:
        gm = _fx.trace(nn.Sequential(fcn.body, fcn.head))
        # a shape-only copy: weights and buffers as meta tensors, nothing of the real ones copied
        memo = {id(t): (nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False)
                        if isinstance(t, nn.Parameter) else torch.empty_like(t, device="meta"))
                for t in [*gm.parameters(), *gm.buffers()]}
        _GRAPHS[fcn] = copy.deepcopy(gm, memo)
    return _GRAPHS[fcn]


def _peak_live_bytes(gm: fx.GraphModule) -> int:
    nodes = list(gm.graph.nodes)
    last_use = {}
    for index, node in enumerate(nodes):
        for arg in node.all_input_nodes:
            last_use[arg] = index
    owner: dict[fx.Node, fx.Node] = {}  # node -> the node whose storage it uses
    sizes: dict[fx.Node, int] = {}
    live = peak = 0
    for index, node in enumerate(nodes):
        nbytes = _nbytes(node)
        if nbytes and _in_place(gm, node):
            owner[node] = owner.get(node.all_input_nodes[0], node.all_input_nodes[0])
            keeper = owner[node]
            last_use[keeper] = max(last_use.get(keeper, index), last_use.get(node, index))
        elif nbytes:
            sizes[node] = nbytes
            live += nbytes
            peak = max(peak, live + _scratch(gm, node))
        for arg in node.all_input_nodes:  # free what no later node reads
            storage = owner.get(arg, arg)
            if storage in sizes and last_use.get(storage, -1) <= index and node.op != "output":
                live -= sizes.pop(storage)
    return peak


def _scratch(gm: fx.GraphModule, node: fx.Node) -> int:
    """Transient bytes of a layer: oneDNN copies a convolution's weights into its own layout."""
    if node.op != "call_module":
        return 0
    module = gm.get_submodule(node.target)
    if not isinstance(module, nn.Conv2d):
        return 0
    meta = node.meta["tensor_meta"]
    return module.weight.numel() * torch.empty((), dtype=meta.dtype).element_size()


def _nbytes(node: fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return 0
    return int(torch.Size(meta.shape).numel()) * torch.empty((), dtype=meta.dtype).element_size()


def _in_place(gm: fx.GraphModule, node: fx.Node) -> bool:
    if not node.all_input_nodes:
        return False
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        return bool(node.kwargs.get("inplace", False))
    if node.op == "call_method":
        return isinstance(node.target, str) and node.target.endswith("_") and not node.target.startswith("_")
    return False
