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

__all__ = ["FullyConvNet", "convert"]

HeadKind = Literal["fc", "pooled_linear", "pooled_mlp"]
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
        return next(m for m in reversed(self.head) if isinstance(m, nn.Conv2d)).out_channels

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
    model = copy.deepcopy(model).eval()
    gm = _fx.trace(model)
    _fx.propagate_shapes(gm, input_size)
    flatten = _find_flatten(gm)
    chain = _head_chain(gm, flatten)
    feature, pool, fused_pool = _pooling_before(gm, flatten)
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
        if isinstance(m, nn.Conv2d):
            grid = grid.then(_fx.conv_op(m.kernel_size, m.stride, m.padding, m.dilation, axis))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            dilation = getattr(m, "dilation", 1)
            grid = grid.then(_fx.pool_op(m.kernel_size, m.stride, m.padding, dilation,
                                          m.ceil_mode, axis))
    return grid
