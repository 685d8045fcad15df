"""ONNX out: a fully-convolutional network as an ONNX file with dynamic batch, height and width.

The dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``) is
used: the legacy TorchScript exporter fails on adaptive pooling. Everything a runtime needs to
place the cells and read the logits travels in the file's ``metadata_props`` (:data:`KEYS`): the
geometry (window, stride, offset, receptive field, the layers' size rules), the cells, the input
size, the normalisation, the model's name and its class labels, so that
:class:`fcnclassify.network.onnx_runtime.OnnxNet` needs no PyTorch model.

The file is verified before it is given its name: onnxruntime runs it at a few input sizes (odd
ones included) against the PyTorch network, and the largest absolute difference of the logits at
each size is returned (:class:`ExportReport`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .convert import FullyConvNet

__all__ = ["FORMAT", "KEYS", "ExportReport", "VERIFY_SIZES", "check_target", "export_onnx", "metadata",
           "require"]

FORMAT = "fcnclassify-onnx/1"
KEYS = ("format", "model", "weights", "cells", "input_size", "geometry", "mean", "std", "labels")
VERIFY_SIZES = ((224, 224), (333, 517), (480, 640))  # square, odd, landscape


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduces PyTorch.

    Attributes:
        path: the ONNX file.
        differences: ``((height, width), max |onnxruntime - PyTorch|)`` of the logits per size.
        tolerance: the largest difference accepted at any size.
        bytes: the file's size.
    """

    path: Path
    differences: tuple[tuple[tuple[int, int], float], ...]
    tolerance: float
    bytes: int


def require(module: str = "onnxruntime"):
    """Import one of the ``onnx`` extra's packages, or say how to install it (ImportError is a bug
    on the command line; a missing extra is the user's setup, a ValueError)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"the ONNX runtime needs the {module!r} package: pip install "
                         f"'fcnclassify[onnx]' (onnx, onnxruntime, onnxscript)") from None


def metadata(fcn: FullyConvNet, *, name: str, categories: Sequence[str] | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             weights: str = "") -> dict[str, str]:
    """The ``metadata_props`` of an exported network: strings, JSON where structured."""
    if categories is not None and len(categories) != fcn.num_classes:
        raise ValueError(f"expected {fcn.num_classes} class labels for {name} but got "
                         f"{len(categories)}")
    return {
        "format": FORMAT, "model": name, "weights": str(weights), "cells": fcn.cells,
        "input_size": str(fcn.input_size),
        "geometry": json.dumps(dataclasses.asdict(fcn.geometry)),
        "mean": json.dumps(list(mean) if mean is not None else None),
        "std": json.dumps(list(std) if std is not None else None),
        "labels": json.dumps(list(categories) if categories is not None else None),
    }


def export_onnx(model, path: str | os.PathLike, *, force: bool = False,
                verify: Sequence[tuple[int, int]] | None = VERIFY_SIZES, opset: int | None = None,
                name: str | None = None, categories: Sequence[str] | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                tolerance: float | None = None) -> ExportReport:
    """Write ``model``'s fully-convolutional network to ``path`` as ONNX and verify it.

    The graph takes ``x``: ``(batch, 3, height, width)`` float32, normalised, any batch and any
    height and width from one window (:attr:`Geometry.min_input`), and gives
    ``logits``: ``(batch, classes, rows, cols)``. The file is written under a temporary name next
    to ``path`` and renamed once verified: nothing half-written is left behind.

    Args:
        model: a :class:`~fcnclassify.models.registry.LoadedModel` (its name, labels and
            normalisation go into the metadata) or a :class:`FullyConvNet` (give them here).
        path: the ``.onnx`` file to write.
        force: replace an existing file.
        verify: input ``(height, width)`` sizes at which onnxruntime is compared with PyTorch (each
            raised to at least one window); None or empty to skip.
        opset: the ONNX opset (default: the exporter's).
        name, categories, mean, std: metadata for a bare network (default: the LoadedModel's).
        tolerance: the largest max-abs difference of the logits accepted at any size (default
            ``1e-3 * max(1, max |logits|)``: float32 sums in another order stay far below it).

    Returns:
        The :class:`ExportReport`.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is off.
        ValueError: the folder cannot be written, the extra is missing, or onnxruntime differs from
            PyTorch by more than ``tolerance`` (then nothing is written).
    """
    fcn = getattr(model, "fcn", model)
    if not isinstance(fcn, FullyConvNet):
        raise ValueError(f"expected a LoadedModel or a FullyConvNet but got {type(model).__name__}")
    name = name or getattr(model, "name", None) or type(fcn.body).__name__
    categories = categories if categories is not None else getattr(model, "categories", None)
    norm = getattr(model, "normalization", None)
    mean = mean if mean is not None else getattr(norm, "mean", None)
    std = std if std is not None else getattr(norm, "std", None)
    props = metadata(fcn, name=name, categories=categories, mean=mean, std=std,
                     weights=str(getattr(model, "weights", "")))
    path = check_target(Path(path), force=force)
    onnx = require("onnx")
    require("onnxruntime")
    require("onnxscript")

    param = next(fcn.parameters())
    if param.dtype != torch.float32 or param.device.type != "cpu" or fcn.training:
        raise ValueError(f"expected a float32 network on the CPU in eval mode (as load_model gives "
                         f"it) but got {param.dtype} on {param.device}, training={fcn.training}")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        proto = _export(fcn, opset=opset)
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(proto, str(temp))
        differences, tolerance = _verify(fcn, temp, verify or (), tolerance)
        worst = max((d for _, d in differences), default=0.0)
        if worst > tolerance:
            raise ValueError(f"onnxruntime's logits differ from PyTorch's by {worst:.3g} (at most "
                             f"{tolerance:.3g} expected): {_sizes_text(differences)}; nothing written")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return ExportReport(path=path, differences=differences, tolerance=tolerance,
                        bytes=path.stat().st_size)


def check_target(path: Path, *, force: bool) -> Path:
    """Refuse an existing file without ``force`` and a folder that cannot be written, up front."""
    if path.is_dir():
        raise ValueError(f"expected a file name for the ONNX model but {path} is a folder")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists: pass --force (force=True) to replace it")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: expected an existing folder but {folder} is not one")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: the folder {folder} is not writable")
    return path


def _export(fcn: FullyConvNet, *, opset: int | None):
    """The ONNX ``ModelProto`` of ``fcn`` with dynamic batch, height and width.

    The sizes are ``Dim.AUTO``: torch.export finds each one's range from the network's own guards
    (one window at least). Named ``Dim``s with a declared range fail on ceil-mode pooling
    (SqueezeNet, GoogLeNet: sympy cannot solve the floor guards) and on ConvNeXt's derived sizes;
    a size that the exporter fixed instead is refused by :func:`_check_dynamic`."""
    from torch.export import Dim

    side = max(fcn.geometry.min_input, fcn.input_size)
    example = torch.zeros(2, 3, side + 1, side + 3)  # batch 2, odd sides: nothing specialises on 1
    dynamic = {"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
    chatter = io.StringIO()  # the exporter prints its steps; the caller decides what to say
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(fcn, (example,), None, dynamo=True, dynamic_shapes=dynamic,
                                        input_names=["x"], output_names=["logits"],
                                        opset_version=opset, external_data=False, verbose=False)
        except Exception as e:  # torch.export's own errors: many lines, none of them the user's
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"torch.onnx could not export {type(fcn.body).__name__} with dynamic "
                             f"height and width ({type(e).__name__}: {first})") from e
    proto = program.model_proto
    _check_dynamic(proto)
    return proto


def _check_dynamic(proto) -> None:
    """Name the input's batch, height and width, which must all be dynamic."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [name for name, dim in zip(("batch", "height", "width"), (dims[0], dims[2], dims[3]))
             if not dim.HasField("dim_param")]
    if fixed:
        raise ValueError(f"torch.onnx fixed the input's {' and '.join(fixed)} (the network's code "
                         f"depends on the exact size): expected them dynamic")
    names = {dims[i].dim_param: label for i, label in ((0, "batch"), (2, "height"), (3, "width"))}
    symbol = re.compile("|".join(rf"\b{re.escape(n)}\b" for n in names))
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:  # the output's rows and cols are expressions
            if dim.HasField("dim_param"):
                dim.dim_param = symbol.sub(lambda m: names[m.group(0)], dim.dim_param)


def _verify(fcn: FullyConvNet, path: Path, sizes: Sequence[tuple[int, int]],
            tolerance: float | None) -> tuple[tuple[tuple[tuple[int, int], float], ...], float]:
    """Max |onnxruntime - PyTorch| of the logits at each size, on seeded random images, and the
    tolerance used."""
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    low = fcn.geometry.min_input
    g = torch.Generator().manual_seed(0)
    out, scale = [], 1.0
    for h, w in sizes:
        h, w = max(h, low), max(w, low)
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.inference_mode():
            reference = fcn(x).float()
        try:
            logits = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        except Exception as e:  # onnxruntime's errors: a size the graph cannot take
            raise ValueError(f"onnxruntime failed on the exported graph at {h}x{w} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:300]}); nothing "
                             f"written") from e
        if logits.shape != reference.shape:
            raise ValueError(f"onnxruntime gave logits of shape {tuple(logits.shape)} at {h}x{w} "
                             f"but PyTorch {tuple(reference.shape)}; nothing written")
        out.append(((h, w), float((logits - reference).abs().max())))
        scale = max(scale, float(reference.abs().max()))
    return tuple(out), (1e-3 * scale if tolerance is None else tolerance)


def _sizes_text(differences) -> str:
    return ", ".join(f"{h}x{w}: {d:.2e}" for (h, w), d in differences)
