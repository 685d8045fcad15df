"""Layer tables, as torchsummary prints them: each leaf layer's output shape, parameters and memory.

Shapes come from a forward pass on the ``meta`` device: no arithmetic is done and no activation is
allocated, so a 4000x4000 VGG16 is tabulated in a fraction of a second. A layer that fails (the
Linear of a hand-written VGG given a larger input) ends the table with a row saying why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LayerRow", "layer_table", "format_table", "resampling_note"]


@dataclass
class LayerRow:
    """One leaf layer of a forward pass (batch of one).

    Attributes:
        name: the module's qualified name.
        type: the module's class name.
        input_shape: its first input's shape without the batch axis.
        output_shape: its output's shape without the batch axis, None when the layer failed.
        params: parameters the layer holds itself.
        memory_mib: its output's size in MiB (float32).
        note: why it failed, or what it does that matters here.
    """

    name: str
    type: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    memory_mib: float
    note: str = ""


def layer_table(model: nn.Module, size: tuple[int, int]) -> list[LayerRow]:
    """The leaf layers ``model`` runs on a ``1 x 3 x H x W`` input, in execution order.

    The model is copied to the ``meta`` device (its weights are not read). If a layer raises, the
    last row is that layer with ``output_shape=None`` and the error's first line as ``note``.
    """
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"expected a positive input size but got {height}x{width}")
    net = copy.deepcopy(model).to("meta").eval() if _has_real_tensors(model) else model.eval()
    rows: list[LayerRow] = []
    current: list[tuple[str, nn.Module, tuple | None]] = []

    def before(name):
        def hook(module, inputs):
            shape = tuple(inputs[0].shape[1:]) if inputs and torch.is_tensor(inputs[0]) else None
            current.append((name, module, shape))
        return hook

    def after(name):
        def hook(module, inputs, output):
            _, _, shape = current.pop()
            out = tuple(output.shape[1:]) if torch.is_tensor(output) else None
            mib = output[0].numel() * 4 / 2**20 if torch.is_tensor(output) else 0.0
            rows.append(LayerRow(name, type(module).__name__, shape, out, _own_params(module), mib))
        return hook

    handles = []
    for name, module in net.named_modules():
        # leaves, and containers that hold weights themselves (a Conv2d subclass with a padding child)
        if name and (not list(module.children()) or _own_params(module)):
            handles.append(module.register_forward_pre_hook(before(name)))
            handles.append(module.register_forward_hook(after(name)))
    try:
        with torch.no_grad():
            net(torch.empty(1, 3, height, width, device="meta"))
    except Exception as e:  # a shape mismatch is the finding, not a crash
        text = str(e).strip().splitlines()
        reason = text[0] if text else type(e).__name__
        if current:
            name, module, shape = current[-1]
            rows.append(LayerRow(name, type(module).__name__, shape, None, _own_params(module),
                                 0.0, f"fails: {reason}"))
        else:
            rows.append(LayerRow("(forward)", type(net).__name__, None, None, 0, 0.0,
                                 f"fails: {reason}"))
    finally:
        for handle in handles:
            handle.remove()
    for row in rows:
        note = resampling_note(row)
        if note and not row.note:
            row.note = note
    return rows


def resampling_note(row: LayerRow) -> str:
    """What an adaptive pooling layer does to the feature map, or ``""``."""
    if not row.type.startswith("Adaptive") or not row.input_shape or not row.output_shape:
        return ""
    src, dst = row.input_shape[-2:], row.output_shape[-2:]
    if src == dst:
        return f"{src[0]}x{src[1]} -> {dst[0]}x{dst[1]}: no-op at this size"
    if dst == (1, 1):
        return f"{src[0]}x{src[1]} -> 1x1: one global vector"
    even = src[0] % dst[0] == 0 and src[1] % dst[1] == 0
    return (f"resamples {src[0]}x{src[1]} -> {dst[0]}x{dst[1]}"
            f"{'' if even else ' (uneven, overlapping bins)'}")


def format_table(rows: list[LayerRow], *, total_params: int | None = None) -> str:
    """A fixed-width text table of ``rows`` with a total line.

    Args:
        total_params: the model's parameter count, when some weights are used by functional calls
            that no layer row shows (a traced graph); the total line says how many.
    """
    header = ("layer", "type", "output shape", "params", "MiB", "")
    body = []
    for r in rows:
        shape = "x".join(map(str, r.output_shape)) if r.output_shape is not None else "-"
        body.append((r.name, r.type, shape, f"{r.params:,}", f"{r.memory_mib:.2f}", r.note))
    listed = sum(r.params for r in rows)
    total_params = listed if total_params is None else total_params
    total_mib = sum(r.memory_mib for r in rows)
    note = "MiB: sum of layer outputs"
    if total_params > listed:
        note += f"; {total_params - listed:,} parameters (and their outputs) in functional calls not listed"
    body.append(("total", "", "", f"{total_params:,}", f"{total_mib:.2f}", note))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(5)]
    right = (False, False, False, True, True)

    def fmt(line):
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line[:5], widths, right)]
        return ("  ".join(cells) + ("  " + line[5] if line[5] else "")).rstrip()

    rule = "-" * (sum(widths) + 2 * 4)
    return "\n".join([fmt(header), rule, *map(fmt, body[:-1]), rule, fmt(body[-1])])


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _has_real_tensors(model: nn.Module) -> bool:
    return any(t.device.type != "meta" for t in [*model.parameters(), *model.buffers()])
