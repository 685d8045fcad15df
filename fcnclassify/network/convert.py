"""Turn a classifier with a fully-connected head into a fully-convolutional network.

The flatten -> Linear boundary is found in the traced graph (torch.fx), not from attribute names, so
torchvision models, fine-tuned heads and hand-written VGG-style modules convert alike:

* ``flatten(C x k x k) -> Linear`` (VGG, AlexNet): the first Linear becomes a ``k x k`` convolution,
  the following Linears ``1 x 1`` convolutions, and the head slides over the feature map with the
  stride of the features (kind ``"fc"``).
* ``global pool -> Linear`` (ResNet, MobileNetV2, EfficientNet, DenseNet; kind ``"pooled_linear"``)
  and ``global pool -> MLP`` (MobileNetV3; kind ``"pooled_mlp"``): the global pooling becomes a pooling
  of the feature map over the canonical window (``7 x 7`` cells at stride 1 for a 224 model with
  stride 32, as timm's ``TestTimePoolHead``), and the Linear layers ``1 x 1`` convolutions after it.
  Each cell is then the original classifier on the ``input_size`` window ``geometry.box(i, j)``: the
  same features pooled over the same cells, up to the context beyond the window's borders that the
  dense pass sees (zero padding in a crop, real pixels here). This is ``cells="window"``, the default.

  ``cells="activation"`` keeps the raw class activation map instead (pooled-Linear heads only: the
  Linear as a ``1 x 1`` convolution before any pooling): each cell stands for one stride-sized tile,
  and the spatial mean of the map equals the original logits at any input size. For an MLP head the
  MLP then slides per cell, which does not average to the original output (the MLP is not linear).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import _fx
from .geometry import Geometry

__all__ = ["FullyConvNet", "PerCellHead", "convert", "refuse_attention"]

HeadKind = Literal["fc", "pooled_linear", "pooled_mlp", "pooled_head"]
Cells = Literal["window", "activation"]

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)
_FUNCTIONAL_ACTIVATIONS = {
    F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6, F.gelu: nn.GELU, F.silu: nn.SiLU,
    F.hardswish: nn.Hardswish, F.hardsigmoid: nn.Hardsigmoid, torch.sigmoid: nn.Sigmoid,
    torch.tanh: nn.Tanh, F.sigmoid: nn.Sigmoid, F.tanh: nn.Tanh, F.mish: nn.Mish,
}
_NO_OPS = (nn.Dropout, nn.AlphaDropout, nn.Identity, nn.Flatten)
_FUNCTIONAL_NO_OPS = (F.dropout, torch.flatten, torch.squeeze)
_METHOD_NO_OPS = ("view", "reshape", "flatten", "squeeze", "contiguous")
_ADAPTIVE_POOLS = {
    nn.AdaptiveAvgPool2d: "avg", nn.AdaptiveMaxPool2d: "max",
    F.adaptive_avg_pool2d: "avg", F.adaptive_max_pool2d: "max",
}


class FullyConvNet(nn.Module):
    """A classifier whose head slides over the image: ``(N, 3, H, W) -> (N, classes, h, w)`` logits.

    Attributes:
        body: the original feature extractor (an ``fx.GraphModule`` sharing no weights with the
            original model).
        head: the converted head, convolutions only.
        kind: ``"fc"``, ``"pooled_linear"`` or ``"pooled_mlp"`` (see the module docstring).
        cells: ``"window"`` (every cell is one ``input_size`` window of the image) or
            ``"activation"`` (a pooled head's class activation map: one stride-sized tile a cell).
        pool: the original model's pooling before its head, ``"avg"``, ``"max"`` or None.
        input_size: the canonical input side the model was trained on.
        geometry: where each cell sits in the input (:class:`~fcnclassify.network.geometry.Geometry`).
    """

    def __init__(self, body: nn.Module, head: nn.Sequential, *, kind: HeadKind,
                 pool: str | None, input_size: int, cells: Cells = "window") -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.kind = kind
        self.cells = cells
        self.pool = pool
        self.input_size = input_size
        self.geometry = _geometry(self, cells=cells, input_size=input_size)

    @property
    def num_classes(self) -> int:
        last = next(m for m in reversed(self.head) if isinstance(m, (nn.Conv2d, PerCellHead)))
        return last.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        low = self.geometry.min_input
        if h < low or w < low:
            raise ValueError(
                f"input of {h}x{w} pixels is smaller than one window: expected at least "
                f"{low}x{low} (pass pad=True to the dense evaluation to pad it)"
            )
        return self.head(self.body(x))

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"kind={self.kind!r}, cells={self.cells!r}, window={g.window}, stride={g.stride}, "
                f"receptive_field={g.receptive_field}")


def convert(model: nn.Module, *, input_size: int = 224, cells: Cells = "window") -> FullyConvNet:
    """Convert ``model`` into a :class:`FullyConvNet` with the same weights.

    Args:
        model: a classifier taking ``(N, 3, input_size, input_size)`` images; it is copied, not
            modified.
        input_size: the canonical input side; fixes the kernel of the first converted Linear
            (7 for VGG at 224, 6 for AlexNet), the pooling window of a pooled head, and the window
            of a cell.
        cells: for a globally pooled head, ``"window"`` (default: every cell is the classifier on
            one ``input_size`` window) or ``"activation"`` (the class activation map; see the
            module docstring). A fully-connected head always gives windows.

    Returns:
        The fully-convolutional network, in eval mode.

    Raises:
        ValueError: naming the module and the reason when the model cannot be converted.
    """
    if cells not in ("window", "activation"):
        raise ValueError(f"expected cells 'window' or 'activation' but got {cells!r}")
    refuse_attention(model)
    model = _fx.make_traceable(copy.deepcopy(model).eval())
    gm = _fx.trace(model)
    _fx.propagate_shapes(gm, input_size)
    head_pools = _head_pools(gm)
    if head_pools:
        try:
            return _convert_simple(gm, input_size=input_size, cells=cells, head_pools=head_pools)
        except ValueError:
            return _convert_graph(gm, head_pools, input_size=input_size, cells=cells)
    return _convert_simple(gm, input_size=input_size, cells=cells, head_pools=[])


def _convert_simple(gm: fx.GraphModule, *, input_size: int, cells: Cells,
                    head_pools: list[fx.Node]) -> FullyConvNet:
    """A chain of head layers after the flatten, converted layer by layer into convolutions."""
    flatten = _find_flatten(gm)
    chain = _head_chain(gm, flatten)
    feature, pool, fused_pool = _pooling_before(gm, flatten)
    if head_pools and head_pools != [pool]:
        raise ValueError("the head does not start with its global pooling right before the flatten")
    fshape = _fx.shape(feature)
    _, channels, fh, fw = fshape
    pre: list[nn.Module] = []
    if pool is not None and _is_global(gm, pool, fused_pool):
        kernel, pool_kind = (1, 1), _pool_kind(gm, pool)
        linears = sum(isinstance(m, nn.Linear) for _, m in chain)
        kind: HeadKind = "pooled_linear" if linears == 1 else "pooled_mlp"
        if cells == "window":  # the global pooling, over one canonical window at stride 1
            pre.append(nn.AvgPool2d((fh, fw), 1) if pool_kind == "avg" else nn.MaxPool2d((fh, fw), 1))
    else:
        cells = "window"
        pool_kind = None
        kind = "fc"
        kernel = (fh, fw)
        if pool is not None:
            ph, pw = _fx.shape(pool)[2:]
            kernel = (ph, pw)
            if (ph, pw) != (fh, fw):
                pre.append(_fixed_pool(gm, pool, (fh, fw), (ph, pw)))
    head = _convert_chain(gm, chain, channels, kernel)
    body = _fx.truncate(gm, feature)
    return FullyConvNet(body, nn.Sequential(*pre, *head), kind=kind, pool=pool_kind,
                        input_size=input_size, cells=cells).eval()


def _convert_graph(gm: fx.GraphModule, pools: list[fx.Node], *, input_size: int,
                   cells: Cells) -> FullyConvNet:
    """Any head that sees the features only through global poolings of one feature map: the
    poolings slide over the canonical window (stride 1) and the original head's own graph runs on
    every cell's pooled vectors (LayerNorm, MLPs, avg+max and concatenated poolings alike)."""
    (feature,) = {a for p in pools for a in _fx.tensor_inputs(p) if len(_fx.shape(a) or ()) == 4}
    _, _, fh, fw = _fx.shape(feature)
    windows = []
    keepdim = []
    kinds = []
    for p in pools:
        kind = _pool_kind(gm, p)
        if kind is None:
            raise ValueError(f"{_fx.describe(gm, p)}: global pooling of an unknown kind")
        kinds.append(kind)
        if cells == "window":
            windows.append(nn.AvgPool2d((fh, fw), 1) if kind == "avg" else nn.MaxPool2d((fh, fw), 1))
        else:
            windows.append(nn.Identity())
        keepdim.append(len(_fx.shape(p)) == 4)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    logits = _fx.shape(output.args[0]) if isinstance(output.args[0], fx.Node) else None
    if logits is None or len(logits) != 2:
        raise ValueError(f"expected the model to return (N, classes) logits but got shape {logits}")
    head = PerCellHead(_head_graph(gm, pools), windows, keepdim, out_channels=logits[1])
    body = _fx.truncate(gm, feature)
    pool = kinds[0] if len(set(kinds)) == 1 else "+".join(sorted(set(kinds)))
    return FullyConvNet(body, nn.Sequential(head), kind="pooled_head", pool=pool,
                        input_size=input_size, cells=cells).eval()


class PerCellHead(nn.Module):
    """The original head after its global pooling(s), run on every cell of a map.

    ``pools[k]`` pools the feature map over each cell's window (or is the identity for a class
    activation map); the pooled vectors of all cells go through ``head`` (the original head's
    graph, its placeholders the original pooling outputs: ``(N, C, 1, 1)`` where ``keepdim[k]``,
    else ``(N, C)``) as one batch, and come back as a ``(N, classes, h, w)`` map.
    """

    def __init__(self, head: fx.GraphModule, pools: list[nn.Module], keepdim: list[bool], *,
                 out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels  # the number of classes
        self.head = head
        self.pools = nn.ModuleList(pools)
        self.keepdim = list(keepdim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vectors = []
        pooled = x
        for pool, keep in zip(self.pools, self.keepdim):
            pooled = pool(x)
            v = pooled.permute(0, 2, 3, 1).flatten(0, 2)
            vectors.append(v[:, :, None, None] if keep else v)
        y = self.head(*vectors)
        return y.reshape(pooled.shape[0], pooled.shape[2], pooled.shape[3], -1).permute(0, 3, 1, 2)


def _head_graph(gm: fx.GraphModule, pools: list[fx.Node]) -> fx.GraphModule:
    """The part of ``gm`` after ``pools``, their outputs its inputs."""
    graph = fx.Graph()
    env = {p: graph.placeholder(f"pooled_{i}") for i, p in enumerate(pools)}
    needed = _ancestors_of_output(gm)
    started = False
    for node in gm.graph.nodes:
        if node in env:
            started = True
            continue
        if node.op == "output":
            graph.output(env[node.args[0]])
            break
        if node.op == "placeholder" or node not in needed:
            continue
        if started and all(a in env for a in node.all_input_nodes):
            env[node] = graph.node_copy(node, lambda n: env[n])
        elif not node.all_input_nodes or all(
                a.op == "get_attr" or a in env for a in node.all_input_nodes):
            env[node] = graph.node_copy(node, lambda n: env[n])  # constants of the head
    out = fx.GraphModule(gm, graph)
    out.graph.eliminate_dead_code()
    out.recompile()
    out.delete_all_unused_submodules()
    return out


def _ancestors_of_output(gm: fx.GraphModule) -> set[fx.Node]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    seen: set[fx.Node] = set()
    stack = [out]
    while stack:
        n = stack.pop()
        for a in n.all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def _head_pools(gm: fx.GraphModule) -> list[fx.Node]:
    """The global poolings through which alone the output sees the feature map, in graph order.

    A global pooling whose result flows back into a map (squeeze-and-excitation) is part of the
    body. Empty when the head sees the map otherwise (a flatten of ``C x 7 x 7``, VGG).
    """
    nodes = list(gm.graph.nodes)
    spatial = set()  # nodes that depend on the input
    for n in nodes:
        if n.op == "placeholder" or any(a in spatial for a in n.all_input_nodes):
            spatial.add(n)
    candidates = [n for n in nodes if _is_global_pool(gm, n)]
    users: dict[fx.Node, set[fx.Node]] = {}
    for c in candidates:
        seen, stack = set(), [c]
        while stack:
            for u in stack.pop().users:
                if u not in seen:
                    seen.add(u)
                    stack.append(u)
        users[c] = seen
    changed = True
    while changed:
        changed = False
        region = set(candidates).union(*(users[c] for c in candidates)) if candidates else set()
        for c in list(candidates):
            if any(a in spatial and a not in region for u in users[c] for a in u.all_input_nodes):
                candidates.remove(c)
                changed = True
    output = next(n for n in nodes if n.op == "output")
    if not candidates or not any(output in users[c] for c in candidates):
        return []
    sources = {a for c in candidates for a in _fx.tensor_inputs(c) if len(_fx.shape(a) or ()) == 4}
    if len(sources) != 1:
        return []
    return candidates


def _is_global_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    inputs = [a for a in _fx.tensor_inputs(node) if len(_fx.shape(a) or ()) == 4]
    if len(inputs) != 1:
        return False
    if _is_mean(node) or _is_amax(node):
        dims = _fx._arg(node, 1, "dim", None)
        dims = dims if isinstance(dims, (tuple, list)) else (dims,)
        return {d % 4 for d in dims if isinstance(d, int)} >= {2, 3}
    return _pool_kind(gm, node) is not None and _adaptive_to_one(gm, node)


def _is_amax(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "amax") or (
        node.op == "call_function" and node.target is torch.amax)


_ATTENTION = (nn.MultiheadAttention,)


def refuse_attention(model: nn.Module) -> None:
    """A ValueError for a model with attention over all tokens (ViT, Swin, MaxViT), before tracing.

    Recognised by ``nn.MultiheadAttention`` or a module class named ``*Attention*``.
    """
    for name, m in model.named_modules():
        if isinstance(m, _ATTENTION) or "Attention" in type(m).__name__:
            raise ValueError(
                f"{type(model).__name__} cannot be converted: attention over all tokens "
                f"('{name}', {type(m).__name__}): a cell cannot be computed from its window alone")


def _find_flatten(gm: fx.GraphModule) -> fx.Node:
    """The first node that turns a 4-d feature map into a 2-d batch of vectors."""
    for node in gm.graph.nodes:
        out = _fx.shape(node)
        if out is None or len(out) != 2:
            continue
        if any(len(_fx.shape(a)) == 4 for a in _fx.tensor_inputs(node)):
            return node
    raise ValueError(
        f"{type(gm).__name__}: no flatten from a 4-d feature map to 2-d vectors found; "
        "is this an image classifier?"
    )


def _head_chain(gm: fx.GraphModule, flatten: fx.Node) -> list[tuple[fx.Node, object]]:
    """The nodes after ``flatten``, which must form one chain of head layers."""
    chain = []
    current = flatten
    while True:
        users = [u for u in current.users]
        if len(users) != 1:
            raise ValueError(f"head branches after {_fx.describe(gm, current)}: not supported")
        node = users[0]
        if node.op == "output":
            break
        if _fx.tensor_inputs(node) != [current]:
            raise ValueError(f"{_fx.describe(gm, node)} in the head takes several inputs")
        chain.append((node, _head_layer(gm, node)))
        current = node
    if not any(isinstance(m, nn.Linear) for _, m in chain):
        raise ValueError("no Linear layer after the flatten: nothing to convert")
    return chain


def _head_layer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The head layer a node computes: a module to convert, or None for a no-op."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, (nn.Linear, nn.BatchNorm1d, *_ACTIVATIONS)):
            return m
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            return type(m)(dim=1)
        if isinstance(m, _NO_OPS):
            return None
    elif node.op == "call_function":
        if node.target in _FUNCTIONAL_ACTIVATIONS:
            return _FUNCTIONAL_ACTIVATIONS[node.target]()
        if node.target in _FUNCTIONAL_NO_OPS:
            return None
        if node.target is F.linear:
            raise ValueError(f"{_fx.describe(gm, node)}: use nn.Linear in the head, not F.linear")
    elif node.op == "call_method":
        if node.target in _METHOD_NO_OPS:
            return None
        if node.target in ("relu", "sigmoid", "tanh"):
            return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[node.target]()
    raise ValueError(f"{_fx.describe(gm, node)} in the classifier head cannot be converted")


def _pooling_before(gm: fx.GraphModule, flatten: fx.Node) -> tuple[fx.Node, fx.Node | None, bool]:
    """``(feature map, pooling node or None, whether flatten itself pools)`` before the head."""
    (source,) = [a for a in _fx.tensor_inputs(flatten) if len(_fx.shape(a)) == 4]
    if _is_mean(flatten):
        return source, flatten, True  # x.mean((2, 3)) pools and flattens at once
    node = source
    # skip no-ops between pooling and flatten (a Flatten in a Sequential after Dropout, ...)
    while node.op == "call_module" and isinstance(gm.get_submodule(node.target), _NO_OPS):
        node = _fx.tensor_inputs(node)[0]
    if _pool_kind(gm, node) is not None or _is_mean(node):
        return _fx.tensor_inputs(node)[0], node, False
    return node, None, False


def _pool_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if node.op == "call_module":
        return _ADAPTIVE_POOLS.get(type(gm.get_submodule(node.target)))
    if node.op == "call_function":
        return _ADAPTIVE_POOLS.get(node.target)
    if _is_mean(node):
        return "avg"
    if _is_amax(node):
        return "max"
    return None


def _is_mean(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean)


def _is_global(gm: fx.GraphModule, pool: fx.Node, fused: bool) -> bool:
    return fused or _is_mean(pool) or _adaptive_to_one(gm, pool)


def _adaptive_to_one(gm: fx.GraphModule, pool: fx.Node) -> bool:
    if _pool_kind(gm, pool) is None:
        return False
    if pool.op == "call_module":
        out = gm.get_submodule(pool.target).output_size
    else:
        out = pool.args[1] if len(pool.args) > 1 else pool.kwargs.get("output_size")
    out = out if isinstance(out, (tuple, list)) else (out, out)
    return tuple(out) == (1, 1)


def _fixed_pool(gm, pool: fx.Node, feature: tuple[int, int], pooled: tuple[int, int]) -> nn.Module:
    """The fixed pooling that an adaptive pooling computes at the canonical size, if any."""
    if feature[0] % pooled[0] or feature[1] % pooled[1]:
        raise ValueError(
            f"{_fx.describe(gm, pool)} resamples {feature[0]}x{feature[1]} to {pooled[0]}x{pooled[1]} "
            "with uneven bins: no sliding equivalent; pass the input_size the model was trained at"
        )
    k = (feature[0] // pooled[0], feature[1] // pooled[1])
    return nn.AvgPool2d(k, k) if _pool_kind(gm, pool) == "avg" else nn.MaxPool2d(k, k)


def _convert_chain(gm, chain, channels: int, kernel: tuple[int, int]) -> list[nn.Module]:
    """Convolutions equivalent to the head layers, with exact weight transfer."""
    layers: list[nn.Module] = []
    first = True
    for node, layer in chain:
        if layer is None:
            continue
        if isinstance(layer, nn.Linear):
            k = kernel if first else (1, 1)
            layers.append(linear_to_conv(layer, channels if first else layer.in_features, k,
                                         name=_fx.describe(gm, node)))
            first = False
        elif isinstance(layer, nn.BatchNorm1d):
            if first:
                raise ValueError(f"{_fx.describe(gm, node)} before the first Linear is not supported")
            if isinstance(layers[-1], nn.Conv2d):
                layers[-1] = fold_batchnorm(layers[-1], layer)
            else:
                layers.append(batchnorm1d_to_2d(layer))
        else:
            layers.append(copy.deepcopy(layer))
    return layers


def linear_to_conv(linear: nn.Linear, channels: int, kernel: tuple[int, int], *,
                   name: str = "Linear") -> nn.Conv2d:
    """A convolution computing ``linear`` on every ``channels x kh x kw`` window.

    The weight ``(out, C * kh * kw)`` is reshaped to ``(out, C, kh, kw)``: ``torch.flatten`` orders
    a feature map as C, H, W, so this is an exact transfer.
    """
    kh, kw = kernel
    if linear.in_features != channels * kh * kw:
        raise ValueError(
            f"{name}: expected {channels} x {kh} x {kw} = {channels * kh * kw} input features "
            f"but the Linear takes {linear.in_features}; is input_size right?"
        )
    conv = torch.nn.utils.skip_init(  # no random init of a 100M-parameter kernel
        nn.Conv2d, channels, linear.out_features, (kh, kw), bias=linear.bias is not None,
        dtype=linear.weight.dtype, device=linear.weight.device,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, channels, kh, kw))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm1d) -> nn.Conv2d:
    """``conv`` followed by ``bn`` (eval mode) as one convolution."""
    mean = bn.running_mean if bn.track_running_stats else None
    if mean is None:
        raise ValueError("BatchNorm1d without running statistics cannot be folded")
    scale = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - mean * scale
    out = copy.deepcopy(conv)
    if out.bias is None:
        out.bias = nn.Parameter(torch.zeros(out.out_channels, dtype=out.weight.dtype))
    with torch.no_grad():
        w = conv.weight.double() * scale.double().reshape(-1, 1, 1, 1)
        b = (out.bias.double() * scale.double() + shift.double())
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


def batchnorm1d_to_2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features, eps=bn.eps, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out.eval()


def _geometry(net: FullyConvNet, *, cells: Cells, input_size: int) -> Geometry:
    """The grid of the body (from its traced graph, shapes recorded) followed by the head's layers."""
    rows, cols = (_head_grid(net.head, _fx.walk_grid(net.body, axis), axis) for axis in (0, 1))
    if (rows.jump, rows.center, rows.rf) != (cols.jump, cols.center, cols.rf):
        raise ValueError(f"anisotropic networks are not supported: {rows} vs {cols}")
    center = rows.center + 0.5  # pixel index -> continuous coordinate
    if cells == "window":
        # a cell is the original classifier on a crop: the canonical input at a multiple of the stride
        window, offset = input_size, 0
    else:
        # a cell of a class activation map stands for its own stride x stride tile
        window = rows.jump
        offset = Geometry.snap_offset(center, window)
    geometry = Geometry(
        window=window, stride=rows.jump, offset=offset,
        receptive_field=rows.rf, center=center, size_ops=rows.ops,
        global_context=rows.global_context or cols.global_context,
    )
    if cells == "window" and geometry.output_size(input_size, input_size) != (1, 1):
        raise ValueError(f"the head does not give one cell at {input_size}x{input_size}")
    return geometry


def _head_grid(head: nn.Sequential, grid: _fx.Grid, axis: int) -> _fx.Grid:
    for m in head:
        if isinstance(m, PerCellHead):
            m = m.pools[0]
        if isinstance(m, nn.Conv2d):
            grid = grid.then(_fx.conv_op(m.kernel_size, m.stride, m.padding, m.dilation, axis))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            dilation = getattr(m, "dilation", 1)
            grid = grid.then(_fx.pool_op(m.kernel_size, m.stride, m.padding, dilation,
                                          m.ceil_mode, axis))
    return grid
