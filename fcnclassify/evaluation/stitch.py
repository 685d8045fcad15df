"""Finer output stride: shift-and-stitch (FCN) and offset max-pooling (OverFeat).

Shift-and-stitch evaluates the network on ``k * k`` copies of the input, shifted up and left by
multiples of ``d = stride / k`` pixels (the copy for shift ``(a, b)`` is ``x[..., a*d:, b*d:]``), and
interleaves the maps: cell ``(i, j)`` of copy ``(a, b)`` becomes cell ``(i*k + a, j*k + b)``. The
stitched map is a map at stride ``d`` whose every cell *is* a cell of a dense evaluation (of a shifted
input), at ``k * k`` times the cost. For VGG16 its size is ``floor((H - 224) / d) + 1``.

Offset max-pooling computes the layers before the network's last pooling once, and applies that
pooling and everything after it at the ``k * k`` offsets of the pooling's grid: the same map at a
fraction of the cost, equal to shift-and-stitch wherever the shifted input's zero padding does not
reach (everywhere for a network without padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from ..network import _fx
from ..network.convert import FullyConvNet
from .dense import run
from ..network.geometry import Geometry, SizeOp
from .scoremap import ScoreMap

__all__ = ["interleave", "offset_pooling", "shift_and_stitch", "stitched_evaluate", "stitched_geometry"]


def stitched_geometry(geometry: Geometry, factor: int) -> Geometry:
    """The grid of a map stitched from ``factor x factor`` shifts: stride ``stride / factor``."""
    step = _check_factor(geometry.stride, factor) // factor
    # one more cell per `step` pixels: out(n) = floor((n - min_input) / step) + 1
    ops = (SizeOp(kernel=geometry.min_input, stride=step),)
    return dataclasses.replace(geometry, stride=step, size_ops=ops)


def interleave(maps: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """``maps[a][b]`` of shape ``(..., h_a, w_b)`` -> one map with cell ``(i*k + a, j*k + b)``.

    Row counts must not increase with ``a`` and drop by at most one from the first (likewise columns
    with ``b``): the shifted copies of one input always satisfy this.
    """
    k = len(maps)
    rows = [maps[a][0].shape[-2] for a in range(k)]
    cols = [maps[0][b].shape[-1] for b in range(k)]
    for counts in (rows, cols):
        if min(counts) < counts[0] - 1 or counts != sorted(counts, reverse=True):
            raise ValueError(f"expected map sizes that shrink by at most one cell but got {counts}")
    first = maps[0][0]
    out = first.new_empty(*first.shape[:-2], sum(rows), sum(cols))
    for a in range(k):
        for b in range(k):
            m = maps[a][b]
            if tuple(m.shape[-2:]) != (rows[a], cols[b]):
                raise ValueError(f"expected map ({a}, {b}) of {(rows[a], cols[b])} "
                                 f"but got {tuple(m.shape[-2:])}")
            out[..., a::k, b::k] = m
    return out


def shift_and_stitch(fcn: FullyConvNet, x: torch.Tensor, *, factor: int,
                     max_memory: int | None = None, channels_last: bool = True) -> torch.Tensor:
    """Logits at stride ``stride / factor`` from ``factor**2`` shifted evaluations (module docstring).

    Args:
        fcn: The network, on the device and in the dtype of ``x``.
        x: Normalised input ``(N, 3, H, W)``, at least ``min_input + (factor - 1) * stride / factor``
            pixels on each side, so that every shifted copy holds one window.
        factor: Shifts per axis; must divide the network's stride (2 and 4 give 16 and 8 from 32).
        max_memory: Passed on to :func:`fcnclassify.evaluation.dense.run`: each shifted copy is tiled exactly.
        channels_last: NHWC memory format.

    Returns:
        Logits ``(N, classes, h', w')``, float32 on the CPU.
    """
    step = _check_factor(fcn.geometry.stride, factor) // factor
    _check_size(fcn.geometry, x, factor, step)
    with torch.inference_mode():
        maps = [[run(fcn, x[..., a * step:, b * step:], channels_last=channels_last,
                     max_memory=max_memory) for b in range(factor)] for a in range(factor)]
    return interleave(maps)


def offset_pooling(fcn: FullyConvNet, x: torch.Tensor, *, factor: int | None = None) -> torch.Tensor:
    """Logits at a finer stride by OverFeat's offset max-pooling at the network's last pooling layer.

    Args:
        fcn: The network, on the device and in the dtype of ``x``; all its later layers must go
            through one pooling layer (VGG, AlexNet: the last max-pool).
        x: Normalised input ``(N, 3, H, W)``.
        factor: Offsets per axis; must divide that pooling's stride. Default: the pooling's stride.

    Returns:
        Logits ``(N, classes, h', w')`` at stride ``stride / factor``, float32 on the CPU.
    """
    before, after, pool_stride = _split_at_last_pool(fcn)
    factor = pool_stride if factor is None else factor
    step = _check_factor(pool_stride, factor) // factor
    _check_size(fcn.geometry, x, factor, fcn.geometry.stride // factor)
    with torch.inference_mode():
        features = before(x)
        maps = [[after(features[..., a * step:, b * step:]).float().cpu() for b in range(factor)]
                for a in range(factor)]
    return interleave(maps)


def stitched_evaluate(fcn: FullyConvNet, images: torch.Tensor, *, factor: int,
                      method: str = "shift", **options) -> list[list[ScoreMap]]:
    """:func:`fcnclassify.evaluation.dense.dense_evaluate` with maps at stride ``stride / factor``.

    Args:
        images: Normalised images ``(N, 3, H, W)`` or one ``(3, H, W)``.
        factor: Shifts per axis (1: the plain dense map).
        method: ``"shift"`` (shift-and-stitch, exact) or ``"offset_pool"`` (OverFeat, cheaper).
        options: ``scales``, ``sizes``, ``flip``, ``device``, ``dtype``, ``max_memory`` (``"shift"``
            only), ... as in :func:`~fcnclassify.evaluation.dense.dense_evaluate`.

    Returns:
        For each image, for each scale the map and then (with ``flip``) the flipped one.
    """
    from .dense import dense_evaluate

    return dense_evaluate(fcn, images, stride_factor=factor, method=method, **options)


def _check_factor(stride: int, factor: int) -> int:
    if not isinstance(factor, int) or factor < 1 or stride % factor:
        raise ValueError(f"expected a factor that divides the stride {stride} but got {factor}")
    return stride


def _check_size(geometry: Geometry, x: torch.Tensor, factor: int, step: int) -> None:
    low = geometry.min_input + (factor - 1) * step
    if min(x.shape[-2:]) < low:
        raise ValueError(f"expected an input of at least {low}x{low} pixels for {factor}x{factor} "
                         f"shifts but got {x.shape[-2]}x{x.shape[-1]}")


_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _split_at_last_pool(fcn: FullyConvNet) -> tuple[nn.Module, nn.Module, int]:
    """``(layers before the last pooling, that pooling and all after it, its stride)``."""
    gm = _fx.trace(nn.Sequential(fcn.body, fcn.head))
    nodes = list(gm.graph.nodes)
    pools = [i for i, n in enumerate(nodes) if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), _POOLS) and n.target.startswith("0.")]
    for index in reversed(pools):
        pool = nodes[index]
        later = nodes[index + 1:]
        # the pooling must be the only way from the earlier layers to the output
        if len(pool.all_input_nodes) == 1 and all(
                a is pool or a in later for n in later for a in n.all_input_nodes):
            module = gm.get_submodule(pool.target)
            stride = module.stride if isinstance(module.stride, int) else module.stride[0]
            return _fx.truncate(gm, pool.all_input_nodes[0]), _from_node(gm, pool), int(stride)
    raise ValueError(f"{type(fcn.body).__name__}: expected a pooling layer that all later layers "
                     "go through (VGG, AlexNet) but found none; use shift-and-stitch")


def _from_node(gm: fx.GraphModule, first: fx.Node) -> fx.GraphModule:
    """A GraphModule computing ``gm`` from ``first`` (whose input becomes the placeholder) on."""
    graph = fx.Graph()
    (source,) = first.all_input_nodes
    env = {source: graph.placeholder("features")}
    started = False
    for node in gm.graph.nodes:
        started = started or node is first
        if started:
            env[node] = graph.node_copy(node, lambda n: env[n])
    out = fx.GraphModule(gm, graph)
    out.graph.eliminate_dead_code()
    out.recompile()
    out.delete_all_unused_submodules()
    return out
