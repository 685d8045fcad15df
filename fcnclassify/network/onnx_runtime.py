"""An exported network run by onnxruntime, with the interface the evaluation loop uses.

:class:`OnnxNet` reads what :func:`fcnclassify.network.export.export_onnx` put in the file's metadata
(geometry, cells, input size, normalisation, name, labels) and is called like a
:class:`~fcnclassify.network.convert.FullyConvNet`: ``net(x) -> logits``. So
:func:`fcnclassify.evaluation.dense.dense_evaluate` and everything above it (scales, flips, exact
tiles, shift-and-stitch, the commands) run it through their one path, with no PyTorch model.

Tiling within a memory budget needs the working memory of a crop: :meth:`OnnxNet.activation_memory`
estimates it from the ONNX graph itself (shape inference at the crop's size, then the largest sum
of tensors alive at once), as :func:`fcnclassify.evaluation.memory.activation_memory` does for a
PyTorch graph. The session runs with onnxruntime's memory arena off, so that what a pass frees goes
back rather than staying in a pool sized by the largest crop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .export import FORMAT, require
from .geometry import Geometry, SizeOp

__all__ = ["OnnxNet", "read_metadata"]

SAFETY = 1.1  # as fcnclassify.evaluation.memory.SAFETY: what the kernels add to the live tensors
_VIEWS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Identity"}  # bytes unchanged
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}  # ONNX elem_type -> bytes


def read_metadata(path: str | os.PathLike) -> dict:
    """The fcnclassify metadata of an exported ONNX file, parsed (without loading its weights).

    Raises:
        ValueError: not an ONNX file, or one that fcnclassify did not write.
    """
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"expected an ONNX file written by 'fcnclassify export' but {path} "
                         f"{'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError, among others
        raise ValueError(f"{path} is not an ONNX model ({type(e).__name__}); expected a file "
                         f"written by 'fcnclassify export'") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("format") != FORMAT:
        raise ValueError(f"{path} has no fcnclassify metadata (format {props.get('format')!r}, "
                         f"expected {FORMAT!r}): export it with 'fcnclassify export'")
    geometry = json.loads(props["geometry"])
    geometry["size_ops"] = tuple(SizeOp(**op) for op in geometry["size_ops"])
    return {"name": props["model"], "weights": props.get("weights", ""), "cells": props["cells"],
            "input_size": int(props["input_size"]), "geometry": Geometry(**geometry),
            "mean": _floats(props.get("mean")), "std": _floats(props.get("std")),
            "labels": json.loads(props.get("labels") or "null"), "proto": proto}


def _floats(text: str | None) -> tuple[float, ...] | None:
    value = json.loads(text or "null")
    return None if value is None else tuple(float(v) for v in value)


class OnnxNet:
    """An exported fully-convolutional network in an onnxruntime session.

    Attributes:
        path: the ONNX file.
        name, weights: the model's name and where its weights came from, at export.
        geometry, cells, input_size: as those of the :class:`FullyConvNet` it was exported from.
        num_classes: the classes of its logits.
        categories: its class labels (None when the export had none).
        mean, std: its input normalisation of RGB in [0, 1] (None when the export had none).
        device: where it runs (``cpu``, or ``cuda`` with onnxruntime's CUDA provider).
    """

    kind = "onnx"

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        """Open ``path`` (from :func:`~fcnclassify.network.export.export_onnx`).

        Args:
            device: ``"cpu"`` (the CPU provider) or ``"cuda"`` (onnxruntime's CUDA provider, which
                the ``onnxruntime-gpu`` package brings).
            threads: intra-op threads (default: onnxruntime's, one per core).

        Raises:
            ValueError: not an fcnclassify ONNX file, a missing extra, an unavailable provider.
        """
        ort = require("onnxruntime")
        meta = read_metadata(path)
        self.path = Path(path)
        self.name, self.weights = meta["name"], meta["weights"]
        self.geometry, self.cells, self.input_size = meta["geometry"], meta["cells"], meta["input_size"]
        self.categories, self.mean, self.std = meta["labels"], meta["mean"], meta["std"]
        self.device = torch.device(device)
        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(self.device.type)
        if provider not in ort.get_available_providers():
            raise ValueError(f"expected an onnxruntime provider for device {str(self.device)!r} but "
                             f"this onnxruntime has {', '.join(ort.get_available_providers())}")
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = False  # freed activations go back (tiles, budgets)
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=[provider])
        output = self.session.get_outputs()[0]
        self.num_classes = int(output.shape[1])
        self._graph = _shape_graph(meta["proto"])
        self._estimates: dict[tuple[int, int, int], int] = {}
        if self.categories is not None and len(self.categories) != self.num_classes:
            raise ValueError(f"{self.path}: {len(self.categories)} labels in the metadata but "
                             f"{self.num_classes} classes in the graph")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes, h, w)`` float32 on the CPU of a normalised ``(N, 3, H, W)`` input."""
        h, w = x.shape[-2:]
        low = self.geometry.min_input
        if h < low or w < low:
            raise ValueError(f"input of {h}x{w} pixels is smaller than one window: expected at "
                             f"least {low}x{low} (pass pad=True to the dense evaluation to pad it)")
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {"x": array})[0])

    def prepared(self, device: torch.device, dtype: torch.dtype) -> OnnxNet:
        """Itself, where it runs: onnxruntime computes the exported float32 graph only."""
        if dtype != torch.float32:
            raise ValueError(f"the onnxruntime runtime computes the exported float32 graph: "
                             f"expected dtype float32 but got {str(dtype).removeprefix('torch.')}")
        if torch.device(device).type != self.device.type:
            raise ValueError(f"{self.path} is open on {self.device} (onnxruntime) but device "
                             f"{str(device)!r} was asked for")
        return self

    def activation_memory(self, size: tuple[int, int], *, batch: int = 1,
                          dtype: torch.dtype | None = None) -> int:
        """Estimated peak working memory, in bytes, of one ``batch x 3 x H x W`` pass: the input,
        the tensors alive at the worst moment of the graph and the output, times :data:`SAFETY`."""
        height, width = size
        if height < 1 or width < 1 or batch < 1:
            raise ValueError(f"expected a positive size and batch but got {size} x {batch}")
        key = (height, width, batch)
        if key not in self._estimates:
            self._estimates[key] = _peak_live_bytes(self._graph, (batch, 3, height, width))
        return int(self._estimates[key] * SAFETY)

    def __repr__(self) -> str:
        g = self.geometry
        return (f"OnnxNet({str(self.path)!r}, model={self.name!r}, cells={self.cells!r}, "
                f"window={g.window}, stride={g.stride}, classes={self.num_classes})")


def _shape_graph(proto):
    """The model's nodes with its weights as shape-only inputs: a small model for shape inference."""
    onnx = require("onnx")
    helper, graph = onnx.helper, proto.graph
    small = [t for t in graph.initializer if np.prod(t.dims) <= 64]  # shapes, axes: kept, read
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
               for t in graph.initializer if np.prod(t.dims) > 64]
    model = helper.make_model(
        helper.make_graph(list(graph.node), "shapes", [*graph.input, *weights], list(graph.output),
                          initializer=small),
        opset_imports=list(proto.opset_import))
    return model, {t.name for t in graph.initializer}


def _peak_live_bytes(shape_graph, shape: Sequence[int]) -> int:
    """The largest sum of activation bytes alive at once, nodes run in the file's order."""
    onnx = require("onnx")
    model, weights = shape_graph
    model = onnx.ModelProto.FromString(model.SerializeToString())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, n in zip(dims, shape):
        dim.Clear()
        dim.dim_value = n
    for output in model.graph.output:  # symbolic there: inferred afresh from the input
        output.type.tensor_type.ClearField("shape")
    # data_prop: a Reshape's target computed from Shape ops where ONNX can follow the arithmetic
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True).graph
    sizes = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        t = info.type.tensor_type
        if info.name not in weights and all(d.HasField("dim_value") for d in t.shape.dim):
            sizes[info.name] = int(np.prod([d.dim_value for d in t.shape.dim])) * \
                _ITEMSIZE.get(t.elem_type, 4)
    for node in inferred.node:  # a view's target that ONNX could not compute: its input's size
        for name in node.output:
            if name in sizes:
                continue
            if node.op_type not in _VIEWS or node.input[0] not in sizes:
                raise ValueError(f"cannot estimate the memory of {node.op_type} {name!r}: no "
                                 f"static shape at input {tuple(shape)}")
            sizes[name] = sizes[node.input[0]]
    last_use = {}
    nodes = list(inferred.node)
    for index, node in enumerate(nodes):
        for name in node.input:
            last_use[name] = index
    outputs = {o.name for o in inferred.output}
    first = inferred.input[0].name
    live, peak = sizes.get(first, 0), 0
    alive = {first}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name in sizes and name not in alive:
                alive.add(name)
                live += sizes[name]
        peak = max(peak, live)
        for name in list(alive):
            if last_use.get(name, -1) <= index and name not in outputs:
                alive.discard(name)
                live -= sizes[name]
    return peak
