"""torch.fx machinery: trace a model, find its flatten -> Linear boundary, walk the grid of each layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .geometry import SizeOp


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; a model fx cannot trace gets a ValueError."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx ({first}); "
            "data-dependent control flow in forward() is not supported"
        ) from e


def make_traceable(model: nn.Module) -> nn.Module:
    """Replace, in place, forwards that torch.fx cannot trace but whose traced meaning is known.

    timm's VGG ``ConvMlp`` (``pre_logits``: fc6 as a 7x7 convolution, fc7 as 1x1) first pools an
    input smaller than its kernel up to 7x7; a converted network refuses inputs smaller than one
    window anyway, so that guard is dropped. Call it on a copy.
    """
    for m in model.modules():
        if type(m).__name__ == "ConvMlp" and all(
                hasattr(m, a) for a in ("input_kernel_size", "fc1", "act1", "drop", "fc2", "act2")):
            m.forward = _conv_mlp_forward.__get__(m)
    return model


def _conv_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


def propagate_shapes(gm: fx.GraphModule, size: int) -> None:
    """Record every node's output shape for a ``1 x 3 x size x size`` input in ``node.meta``.

    A layer that fails on that input gets a ValueError naming it.
    """
    param = next(gm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    with torch.inference_mode():
        _NamingShapeProp(gm).propagate(torch.zeros(1, 3, size, size, dtype=dtype))


class _NamingShapeProp(ShapeProp):
    def run_node(self, n: fx.Node):
        try:
            return super().run_node(n)
        except ValueError:
            raise
        except Exception as e:
            cause = e.__cause__ or e
            reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            size = "x".join(str(d) for d in self.module.graph_input_shape)
            raise ValueError(f"{describe(self.module, n)} fails on a {size} input: {reason}") from e

    def propagate(self, *args):
        self.module.graph_input_shape = tuple(args[0].shape)
        return super().propagate(*args)


def shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """A node as a user knows it: the module path and type, or the function name."""
    if node.op == "call_module":
        return f"'{node.target}' ({type(gm.get_submodule(node.target)).__name__})"
    name = getattr(node.target, "__name__", str(node.target))
    return f"'{node.name}' ({name})"


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if shape(a) is not None]


def truncate(gm: fx.GraphModule, last: fx.Node) -> fx.GraphModule:
    """A GraphModule computing ``gm`` up to ``last`` (unused nodes removed)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node is last:
            break
    graph.output(env[last])
    out = fx.GraphModule(gm, graph)
    out.graph.eliminate_dead_code()
    out.recompile()
    out.delete_all_unused_submodules()
    return out


# ---------------------------------------------------------------------------------------------
# Grid walk: for every node, the sampling grid of its output along one axis (both axes are walked
# separately and must agree).


@dataclass(frozen=True)
class Grid:
    jump: int  # input pixels between neighbouring outputs
    center: float  # pixel-index coordinate of output 0's receptive-field centre
    rf: int  # receptive-field size in pixels
    ops: tuple[SizeOp, ...]
    global_context: bool = False

    def then(self, op: SizeOp) -> "Grid":
        span = op.dilation * (op.kernel - 1)
        return Grid(
            jump=self.jump * op.stride,
            center=self.center + (span / 2 - op.pad_before) * self.jump,
            rf=self.rf + span * self.jump,
            ops=self.ops + (op,),
            global_context=self.global_context,
        )


GLOBAL = "global"  # marker for a node pooled over the whole image

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.Identity, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d,
    nn.SyncBatchNorm, nn.Flatten,
)
_GLOBAL_CONTEXT_MODULES = (nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


def _pair(v, axis: int) -> int:
    return int(v[axis]) if isinstance(v, (tuple, list)) else int(v)


def _arg(node: fx.Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def conv_op(kernel, stride, padding, dilation, axis: int) -> SizeOp:
    k, s, d = _pair(kernel, axis), _pair(stride, axis), _pair(dilation, axis)
    if isinstance(padding, str):
        total = d * (k - 1) if padding == "same" else 0
        return SizeOp(k, s, d, total // 2, total - total // 2)
    p = _pair(padding, axis)
    return SizeOp(k, s, d, p, p)


def pool_op(kernel, stride, padding, dilation, ceil_mode, axis: int) -> SizeOp:
    k = _pair(kernel, axis)
    s = _pair(stride, axis) if stride not in (None, ()) else k
    p, d = _pair(padding, axis), _pair(dilation, axis)
    return SizeOp(k, s, d, p, p, bool(ceil_mode))


def _pad_op(pad, axis: int) -> SizeOp:
    # F.pad order: (left, right, top, bottom); axis 0 is height
    pad = list(pad) + [0] * (4 - len(pad))
    before, after = (pad[2], pad[3]) if axis == 0 else (pad[0], pad[1])
    return SizeOp(pad_before=int(before), pad_after=int(after))


def _layer_op(gm: fx.GraphModule, node: fx.Node, axis: int) -> SizeOp | str | None:
    """The SizeOp of a spatial layer, GLOBAL for a global pooling, None for a pointwise op."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            return conv_op(m.kernel_size, m.stride, m.padding, m.dilation, axis)
        if isinstance(m, nn.MaxPool2d):
            return pool_op(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, axis)
        if isinstance(m, nn.AvgPool2d):
            return pool_op(m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, axis)
        if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
            return _pad_op(m.padding, axis)
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            out = m.output_size
            if all(o == 1 for o in (out if isinstance(out, tuple) else (out,))):
                return GLOBAL
            raise ValueError(f"{describe(gm, node)}: adaptive pooling to {out} has no fixed grid")
        if isinstance(m, _GLOBAL_CONTEXT_MODULES):
            return "context"
        if isinstance(m, _POINTWISE_MODULES):
            return None
        return "unknown"
    if node.op == "call_function":
        f = node.target
        if f in (F.conv2d, torch.conv2d):
            weight = node.args[1]
            k = shape(weight) if isinstance(weight, fx.Node) else None
            if k is None:
                raise ValueError(f"{describe(gm, node)}: cannot read the kernel size")
            return conv_op(k[2:], _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                            _arg(node, 5, "dilation", 1), axis)
        if f in (F.max_pool2d, torch.max_pool2d):
            return pool_op(_arg(node, 1, "kernel_size", 1), _arg(node, 2, "stride", None),
                            _arg(node, 3, "padding", 0), _arg(node, 4, "dilation", 1),
                            _arg(node, 5, "ceil_mode", False), axis)
        if f is F.avg_pool2d:
            return pool_op(_arg(node, 1, "kernel_size", 1), _arg(node, 2, "stride", None),
                            _arg(node, 3, "padding", 0), 1, _arg(node, 4, "ceil_mode", False), axis)
        if f is F.pad:
            return _pad_op(_arg(node, 1, "pad", ()), axis)
        if f in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.adaptive_avg_pool1d):
            return GLOBAL
        if f in (F.interpolate, F.grid_sample, F.pixel_shuffle, F.unfold, F.fold):
            raise ValueError(f"{describe(gm, node)}: resampling layers are not supported")
        return "unknown"
    if node.op == "call_method":
        if node.target == "mean" and _reduces_space(node):
            return GLOBAL
        return "unknown"
    return None


def _reduces_space(node: fx.Node) -> bool:
    dims = _arg(node, 1, "dim", None)
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return {d % 4 for d in dims if isinstance(d, int)} >= {2, 3}


def walk_grid(gm: fx.GraphModule, axis: int) -> Grid:
    """The grid of ``gm``'s output along ``axis`` (0: height, 1: width).

    Shapes must have been propagated (:func:`propagate_shapes`) so that an unknown op can be told
    pointwise (it keeps the spatial size) from spatial (it changes it: an error). Layout changes
    are followed: a ``permute`` to channels-last and back (ConvNeXt's LayerNorm), a ``view`` to
    five dimensions with height and width last (ShuffleNet's channel shuffle), ``chunk``/``split``
    of a map into maps.
    """
    grids: dict[fx.Node, Grid | str] = {}
    dims: dict[fx.Node, tuple[int, int]] = {}  # where height and width sit in a node's shape
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            grids[node] = Grid(jump=1, center=0.0, rf=1, ops=())
            dims[node] = (2, 3)
            continue
        if node.op == "output":
            out = grids.get(node.args[0])
            if not isinstance(out, Grid) or dims.get(node.args[0]) != (2, 3):
                raise ValueError("the network output has no spatial grid")
            return out
        inputs = [grids[a] for a in node.all_input_nodes if a in grids]
        if not inputs:
            continue  # constants, get_attr, shapes
        local_nodes = [a for a in node.all_input_nodes if isinstance(grids.get(a), Grid)]
        local = [grids[a] for a in local_nodes]
        if not local:
            grids[node] = GLOBAL
            continue
        op = _layer_op(gm, node, axis)
        meta = node.meta.get("tensor_meta")
        if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):  # chunk, split of a map
            first = local_nodes[0]
            hw = _spatial(shape(first), dims[first])
            if op in (None, "unknown") and all(_spatial(m.shape, dims[first]) == hw
                                               for m in meta if hasattr(m, "shape")):
                grids[node] = _merge(gm, node, local, has_global=len(local) < len(inputs))
                dims[node] = dims[first]
            continue
        out_shape = shape(node)
        if op == GLOBAL:
            grids[node] = GLOBAL
            continue
        if out_shape is None:
            continue
        if isinstance(op, SizeOp) or op == "context":
            if len(out_shape) != 4:
                continue
            merged = _merge(gm, node, local, has_global=len(local) < len(inputs))
            grids[node] = merged.then(op) if isinstance(op, SizeOp) else Grid(
                merged.jump, merged.center, merged.rf, merged.ops, True)
            dims[node] = (2, 3)
            continue
        new_dims = _follow_dims(node, local_nodes, dims)
        if new_dims is None:
            if op == "unknown" and len(out_shape) == 4:
                raise ValueError(f"{describe(gm, node)} changes the spatial size and is not supported")
            continue  # sizes, flattened vectors: not on the grid
        grids[node] = _merge(gm, node, local, has_global=len(local) < len(inputs))
        dims[node] = new_dims
    raise ValueError("graph has no output")


def _spatial(s, d: tuple[int, int]) -> tuple[int, int] | None:
    if s is None or len(s) <= max(d):
        return None
    return int(s[d[0]]), int(s[d[1]])


def _follow_dims(node: fx.Node, inputs: list[fx.Node], dims) -> tuple[int, int] | None:
    """Where height and width sit in ``node``'s output, or None when it is not a map any more."""
    out = shape(node)
    src = inputs[0]
    d = dims[src]
    src_shape = shape(src) if shape(src) is not None else _tuple_shape(src)
    hw = _spatial(src_shape, d)
    if out is None or hw is None:
        return None
    new: tuple[int, int] | None = None
    if _is_call(node, "permute"):
        perm = node.args[1:] if node.op == "call_method" else (_arg(node, 1, "dims", None),)
        perm = tuple(perm[0]) if len(perm) == 1 and isinstance(perm[0], (tuple, list)) else tuple(perm)
        perm = tuple(int(p) % len(out) for p in perm)
        new = (perm.index(d[0]), perm.index(d[1]))
    elif _is_call(node, "transpose") or _is_call(node, "swapaxes"):
        a, b = (int(v) % len(out) for v in node.args[1:3])
        swap = {a: b, b: a}
        new = (swap.get(d[0], d[0]), swap.get(d[1], d[1]))
    elif len(out) == len(src_shape) and _spatial(out, d) == hw:
        new = d
    elif d == (len(src_shape) - 2, len(src_shape) - 1) and len(out) >= 3 and tuple(out[-2:]) == hw:
        new = (len(out) - 2, len(out) - 1)  # a view that keeps height and width last
    return new if new is not None and _spatial(out, new) == hw else None


def _tuple_shape(node: fx.Node):
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape") and meta and hasattr(
            meta[0], "shape"):
        return tuple(meta[0].shape)
    return None


def _is_call(node: fx.Node, name: str) -> bool:
    if node.op == "call_method":
        return node.target == name
    return node.op == "call_function" and getattr(node.target, "__name__", None) == name


def _merge(gm: fx.GraphModule, node: fx.Node, grids: list[Grid], has_global: bool) -> Grid:
    first = grids[0]
    if any(g.jump != first.jump for g in grids):
        raise ValueError(f"{describe(gm, node)} combines inputs of different strides")
    lo = min(g.center - (g.rf - 1) / 2 for g in grids)
    hi = max(g.center + (g.rf - 1) / 2 for g in grids)
    longest = max(grids, key=lambda g: len(g.ops))
    context = has_global or any(g.global_context for g in grids)
    if len(grids) == 1:
        return Grid(first.jump, first.center, first.rf, first.ops, context)
    return Grid(first.jump, (lo + hi) / 2, int(round(hi - lo + 1)), longest.ops, context)

