"""Any classifier with seeded weights, and the reference for its window cells.

For exactness checks of whole model zoos (torchvision, timm) without a download: :func:`seeded`
gives every parameter and buffer of a model seeded values that make each layer matter (LayerNorm
scales, ConvNeXt's layer scales included), with the last layer scaled so that logits are of order
one. :func:`window_reference` computes what a window cell must equal with the original model
alone: its own head on the features of the cell's window.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .seeded import randomize

__all__ = ["feature_module", "seeded", "window_reference"]

_SET_BY_RANDOMIZE = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def seeded(factory: Callable[..., nn.Module], *, seed: int = 0, input_size: int = 224,
           dtype: torch.dtype = torch.float32, **kwargs) -> nn.Module:
    """``factory(**kwargs)`` in eval mode with seeded weights and logits of order one.

    Conv, Linear and BatchNorm layers as :func:`~fcnclassify.network.seeded.randomize`; every
    other parameter: a norm's scale ``1 + 0.2 N(0, 1)`` and shift ``0.1 N(0, 1)``, anything else
    (layer scales) ``0.5 + 0.1 N(0, 1)``. The last layer that runs is then scaled so that the
    logits of a random ``input_size`` image have unit standard deviation.

    Raises:
        ValueError: a buffer other than BatchNorm statistics that a model built on the meta device
            would leave unset (the model is then built normally, which is slower).
    """
    try:
        with torch.device("meta"):
            model = factory(**kwargs)
        own_buffers = [n for n, b in model.named_buffers() if n.rpartition(".")[2] not in (
            "running_mean", "running_var", "num_batches_tracked")]
    except NotImplementedError:  # a builder that computes with tensors (RegNet's widths)
        own_buffers = ["?"]
    if own_buffers:
        model = factory(**kwargs)
    else:
        model = model.to_empty(device="cpu")
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.num_batches_tracked is not None:
                m.num_batches_tracked.zero_()
    randomize(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _SET_BY_RANDOMIZE):
                continue
            is_norm = "Norm" in type(module).__name__
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if is_norm:
                    p.copy_(1 + 0.2 * noise if name == "weight" else 0.1 * noise)
                else:
                    p.copy_(0.5 + 0.1 * noise)
    model = model.to(dtype).eval()
    _unit_logits(model, input_size, seed)
    return model


def _unit_logits(model: nn.Module, size: int, seed: int) -> None:
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    dtype = next(model.parameters()).dtype
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    try:
        with torch.no_grad():
            std = model(x.to(dtype)).std().item()
    finally:
        for h in hooks:
            h.remove()
    if not math.isfinite(std) or std == 0:
        raise ValueError(f"{type(model).__name__}: seeded logits have standard deviation {std}")
    last = order[-1]
    with torch.no_grad():
        last.weight.div_(std)
        if last.bias is not None:
            last.bias.div_(std)


def feature_module(model: nn.Module, input_size: int) -> tuple[str, tuple[int, int]]:
    """``(name, (h, w))``: the last top-level child of ``model`` whose output is a map of more than
    one cell at the canonical size that grows with the input (``layer4`` of a ResNet, ``features``
    of a VGG; not VGG's ``avgpool`` to 7x7), and its size at the canonical size."""
    shapes: list[dict[str, tuple[int, ...]]] = []
    dtype = next(model.parameters()).dtype
    for size in (input_size, input_size + 64):
        found: dict[str, tuple[int, ...]] = {}
        hooks = [child.register_forward_hook(
            lambda m, i, o, name=name, found=found: found.__setitem__(name, tuple(o.shape))
            if isinstance(o, torch.Tensor) else None) for name, child in model.named_children()]
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size, dtype=dtype))
        finally:
            for h in hooks:
                h.remove()
        shapes.append(found)
    maps = [(n, s) for n, s in shapes[0].items() if len(s) == 4 and s[2] * s[3] > 1
            and shapes[1].get(n, s)[2:] != s[2:]]
    if not maps:
        raise ValueError(f"{type(model).__name__}: no child module outputs a feature map")
    name, s = maps[-1]
    return name, (s[2], s[3])


def window_reference(model: nn.Module, x: torch.Tensor, cells: list[tuple[int, int]], *,
                     input_size: int) -> dict[tuple[int, int], torch.Tensor]:
    """What window cell ``(i, j)`` of a converted ``model`` must be, from the original alone.

    The feature module's output (:func:`feature_module`) on the whole of ``x`` is cut to the
    cell's window (as many cells as at the canonical size, one cell apart), and the original
    model's forward runs again with that window in place of the module's output: its own head
    (pooling, norms, MLP) on those features.
    """
    name, (kh, kw) = feature_module(model, input_size)
    module = model.get_submodule(name)
    with torch.no_grad():
        store: dict[str, torch.Tensor] = {}
        hook = module.register_forward_hook(lambda m, i, o: store.__setitem__("f", o))
        try:
            model(x)
        finally:
            hook.remove()
        features = store["f"]
        out = {}
        dummy = torch.zeros(x.shape[0], 3, input_size, input_size, dtype=x.dtype)
        for i, j in cells:
            window = features[..., i:i + kh, j:j + kw].contiguous()
            if window.shape[-2:] != (kh, kw):
                raise ValueError(f"cell ({i}, {j}) lies outside the {tuple(features.shape[-2:])} map")
            hook = module.register_forward_hook(lambda m, i_, o, w=window: w)
            try:
                out[(i, j)] = model(dummy)
            finally:
                hook.remove()
    return out
