"""The model registry: one record per model family, and :func:`load_model` on top of them.

A :class:`Family` is data: which names it owns, how to build an architecture, where its weights come
from, its normalisation, input size and class names (a :class:`ModelSpec`), and notes. Three are
built in: ``torchvision`` (every classifier of ``torchvision.models.list_models``, ``NAME:TAG`` for
other weights), ``timm`` (``timm/NAME``, the ``timm`` extra) and ``lite`` (``efficientnet_lite0``,
offline, the ``lite`` extra). Adding a family is :func:`register` with one more record; a name two
families claim is an error. ``weights/registry.json`` records where every default weights file of
the listed names comes from.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._constants import LITE_MODEL as _LITE
from ..io.checkpoint import hub_config, hub_file, is_hub_reference, load_state_dict, load_weights, \
    read_metadata
from ..io.labels import imagenet_categories, placeholder_labels, read_labels
from ..network.convert import FullyConvNet, PerCellHead, convert
from .loaded import IMAGENET, LITE, LoadedModel, Normalization

__all__ = ["Normalization", "LoadedModel", "ModelSpec", "Family", "register", "families", "resolve",
           "available_models", "model_spec", "build_original", "build_original_meta", "load_model",
           "default_normalization", "restore_original", "converted_metadata", "IMAGENET", "LITE",
           "FORMAT"]

FORMAT = "fcnclassify-fcn/1"  # the metadata "format" of a converted weights file


@dataclass(frozen=True)
class ModelSpec:
    """What a model's weights expect around them.

    Attributes:
        normalization: the input normalisation.
        input_size: the side of the square the network was trained (and is evaluated) at.
        categories: one name per class of the default head, or None (placeholder names).
        num_classes: classes of the default head.
        crop_pct: centre-crop fraction of the evaluation transform (input_size / resize side).
        interpolation: resize interpolation of the evaluation transform.
        weights: the weights tag (``"default"`` unless the name picks one).
    """

    normalization: Normalization
    input_size: int
    categories: tuple[str, ...] | None
    num_classes: int
    crop_pct: float | None = None
    interpolation: str | None = None
    weights: str = "default"


def _same(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state


@dataclass(frozen=True)
class Family:
    """One registry record: a family of models, as data.

    Attributes:
        name: the family's name (unique in the registry).
        claims: whether a model name belongs to the family (cheap; no heavy imports for others').
        check: raises ValueError for a claimed name it cannot serve (an unknown tag, a missing extra).
        names: the names it lists in :func:`available_models` (may be empty: timm has thousands).
        build: ``(name, num_classes) -> nn.Module``, the architecture with fresh weights.
        spec: ``name -> ModelSpec`` of its default weights.
        weights: ``(name, progress) -> state dict`` of its default weights (never runs code).
        adapt: published key names -> the module's (``(name, state) -> state``).
        local: whether ``name``'s default weights are at hand without the network (else the
            architecture is converted first, so that one that cannot be converted is refused
            before a download).
        extra: the pip extra it needs, if any.
        notes: conversion notes, one line.
    """

    name: str
    claims: Callable[[str], bool]
    check: Callable[[str], None]
    names: Callable[[], Sequence[str]]
    build: Callable[[str, int], nn.Module]
    spec: Callable[[str], ModelSpec]
    weights: Callable[[str, bool], dict[str, torch.Tensor]]
    adapt: Callable[[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _same
    local: Callable[[str], bool] = lambda name: True
    extra: str | None = None
    notes: str = ""


_FAMILIES: dict[str, Family] = {}
_BUILTIN = False


def register(family: Family) -> Family:
    """Add a family record to the registry.

    Raises:
        ValueError: a family of that name is registered already, or it lists a name another
            family claims.
    """
    if family.name in _FAMILIES:
        raise ValueError(f"a model family named {family.name!r} is registered already: expected "
                         "a new name")
    for name in family.names():
        owner = next((f.name for f in _FAMILIES.values() if f.claims(name)), None)
        if owner is not None:
            raise ValueError(f"model name {name!r} of family {family.name!r} is a duplicate: "
                             f"family {owner!r} has it already")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """The registered families by name (the built-in ones registered on first use)."""
    global _BUILTIN
    if not _BUILTIN:
        _BUILTIN = True
        from . import lite, timm, torchvision

        for family in (torchvision.RECORD, lite.RECORD, timm.RECORD):
            if family.name not in _FAMILIES:
                register(family)
    return _FAMILIES


def available_models() -> list[str]:
    """The names the registry lists (torchvision's classifiers and efficientnet_lite0; timm's
    thousands are ``timm/NAME`` for any name of ``timm.list_models()``)."""
    return [name for family in families().values() for name in family.names()]


def resolve(name: str) -> Family:
    """The family of a model name, after its check.

    Raises:
        ValueError: an unknown name (with close names), a name two families claim, or what the
            family's check says (an unknown weights tag, a missing extra).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a model name but got {name!r}")
    owners = [f for f in families().values() if f.claims(name)]
    if len(owners) > 1:
        raise ValueError(f"model name {name!r} is a duplicate: families "
                         f"{', '.join(f.name for f in owners)} all claim it")
    if not owners:
        known = available_models()
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}: expected a torchvision classifier name "
                         f"(e.g. vgg16, resnet50, resnet50:IMAGENET1K_V2), timm/NAME, or {_LITE}")
    owners[0].check(name)
    return owners[0]


def model_spec(name: str) -> ModelSpec:
    """Normalisation, input size, class names, crop fraction and interpolation of ``name``'s
    default weights (nothing is downloaded)."""
    return resolve(name).spec(name)


def default_normalization(name: str) -> Normalization:
    """The input normalisation of the registry's weights for ``name``."""
    return model_spec(name).normalization


def build_original(name: str, *, num_classes: int = 1000) -> nn.Module:
    """The architecture ``name`` with freshly initialised weights (nothing is downloaded)."""
    family = resolve(name)
    if num_classes < 1:
        raise ValueError(f"expected num_classes >= 1 but got {num_classes}")
    return family.build(name, num_classes).eval()


def build_original_meta(name: str, *, num_classes: int = 1000) -> nn.Module:
    """The architecture with parameters on the meta device: shapes without memory or init time."""
    with torch.device("meta"):
        return build_original(name, num_classes=num_classes)


def _empty(name: str, num_classes: int) -> nn.Module:
    """The architecture with uninitialised CPU memory: weights are loaded next, so skip the init."""
    return build_original_meta(name, num_classes=num_classes).to_empty(device="cpu").eval()


def load_model(name: str | None = "vgg16", *, weights: str | os.PathLike | None = "default",
               num_classes: int | None = None, labels: str | os.PathLike | None = None,
               input_size: int | None = None, cells: str = "window",
               progress: bool = False) -> LoadedModel:
    """A registry model, converted, with its weights, class names and normalisation.

    Args:
        name: a torchvision classifier (``vgg16``, ``resnet50:IMAGENET1K_V2``), ``timm/NAME``, or
            ``efficientnet_lite0``; None takes it from a converted weights file or a Hub
            repository's config (else ``vgg16``).
        weights: ``"default"`` (the family's pretrained weights: torchvision's downloaded and
            cached by torch.hub, timm's from the Hugging Face cache or Hub, efficientnet_lite0's
            shipped by the ``lite`` extra), a local file (``.safetensors``, ``.pth``, ``.pt``; a
            state dict of the original model, possibly wrapped in ``state_dict``/``model`` and with
            DataParallel's ``module.`` prefixes, or a file written by ``fcnclassify convert``), a
            Hub reference ``hf-hub:ORG/NAME``, or None for random weights (shapes only).
        num_classes: classes of a fine-tuned head; inferred from the weights when None.
        labels: a file with one class name a line; its count must match the head.
        input_size: the side the network was trained at (default: the weights' own).
        cells: ``"window"`` (every cell one ``input_size`` window) or, for a globally pooled head,
            ``"activation"`` (the class activation map); see :func:`fcnclassify.network.convert.convert`.
        progress: show a download progress bar.

    Raises:
        ValueError: one line naming the unknown model, the unknown weights tag, the missing extra,
            the model that cannot be converted, the unreadable or mismatched weights file, the
            labels file, or the failed download and what to do instead.
    """
    if is_hub_reference(weights):
        return _load_hub(name, str(weights), num_classes=num_classes, labels=labels,
                         input_size=input_size, cells=cells)
    if weights is not None and str(weights) != "default":
        return _load_local(name, Path(weights), num_classes=num_classes, labels=labels,
                           input_size=input_size, cells=cells)
    name = name or "vgg16"
    family = resolve(name)
    spec = family.spec(name)
    if weights is None:
        original = family.build(name, num_classes or spec.num_classes)
        source = "random"
    else:
        if num_classes not in (None, spec.num_classes):
            raise ValueError(f"the default {name} weights have {spec.num_classes} classes but got "
                             f"--num-classes {num_classes}; pass --weights FILE for a fine-tuned head")
        original = _empty(name, spec.num_classes)
        if not family.local(name):  # refuse an architecture that cannot be converted before a download
            convert(original, input_size=input_size or spec.input_size, cells=cells)
        state = family.adapt(name, family.weights(name, progress))
        original = load_weights(original, state, name=f"{name} weights")
        source = spec.weights
    return _finish(name, original, source, spec, labels=labels, input_size=input_size, cells=cells)


def _finish(name: str, original: nn.Module, source: str, spec: ModelSpec | None, *, labels,
            input_size: int | None, categories: Sequence[str] | None = None,
            normalization: Normalization | None = None, fcn: FullyConvNet | None = None,
            cells: str = "window") -> LoadedModel:
    original = original.eval()
    if spec is None:
        spec = model_spec(name)
    input_size = input_size or spec.input_size
    fcn = fcn if fcn is not None else convert(original, input_size=input_size, cells=cells)
    n = fcn.num_classes
    if labels is not None:
        categories = read_labels(labels, num_classes=n)
    elif categories is None or len(categories) != n:
        categories = spec.categories if spec.categories is not None and len(spec.categories) == n \
            else imagenet_categories() if n == 1000 else placeholder_labels(n)
    return LoadedModel(name=name, fcn=fcn, original=original, categories=list(categories),
                       normalization=normalization or spec.normalization, input_size=input_size,
                       weights=source, crop_pct=spec.crop_pct, interpolation=spec.interpolation)


def _load_hub(name: str | None, reference: str, *, num_classes, labels, input_size, cells):
    """Weights from a Hugging Face Hub repository (cache first); its ``config.json`` (timm's) names
    the architecture, the classes and the normalisation."""
    config = hub_config(reference)
    architecture = config.get("architecture")
    if name is None and isinstance(architecture, str):
        name = f"timm/{architecture}"
    path = hub_file(reference)
    cfg = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    try:
        if input_size is None and "input_size" in cfg:
            input_size = int(cfg["input_size"][-1])
        normalization = Normalization(tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"]))) \
            if "mean" in cfg and "std" in cfg else None
    except (TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{reference}: config.json's pretrained_cfg is not understood ({e})") from e
    model = _load_local(name, path, num_classes=num_classes, labels=labels,
                        input_size=input_size, cells=cells, source=reference)
    if normalization is not None:
        model.normalization = normalization
    names = config.get("label_names")
    if labels is None and isinstance(names, list) and len(names) == model.num_classes:
        model.categories = [str(n) for n in names]
    return model


def _load_local(name: str | None, path: Path, *, num_classes: int | None, labels,
                input_size: int | None, cells: str, source: str | None = None) -> LoadedModel:
    """A model from a local weights file: a converted file, or a state dict of the original."""
    state = load_state_dict(path)  # read once; the weights below are loaded from this dict
    meta = read_metadata(path)
    if meta.get("format") == FORMAT or (state and all(k.startswith(("body.", "head."))
                                                      for k in state)):
        return _load_converted(name, path, meta, state, num_classes=num_classes, labels=labels,
                               input_size=input_size, cells=cells)
    name = name or "vgg16"
    family = resolve(name)
    state = family.adapt(name, state)
    if num_classes is None:
        num_classes = _head_classes(name, state, path)
    original = load_weights(_empty(name, num_classes), state, name=str(path))  # all overwritten
    return _finish(name, original, source or str(path), family.spec(name), labels=labels,
                   input_size=input_size, cells=cells)


def _head_classes(name: str, state: dict[str, torch.Tensor], path: Path) -> int:
    """The class count of the checkpoint's classifier: the last Linear (or 1x1 convolution, as in
    SqueezeNet) of the architecture, found by its key name."""
    layers = [n for n, m in build_original_meta(name).named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d))]
    key = f"{layers[-1]}.weight"
    if key not in state:
        raise ValueError(f"{path}: no {key!r} in the checkpoint, so it is not a {name} state dict "
                         f"(its keys start {list(state)[:2]}); is --model right?")
    return int(state[key].shape[0])


def _load_converted(name: str | None, path: Path, meta: dict, state: dict, *, num_classes,
                    labels, input_size: int | None, cells: str) -> LoadedModel:
    """A file written by ``fcnclassify convert`` (or a FullyConvNet's state dict)."""
    stored = meta.get("model")
    if name is not None and stored is not None and name != stored:
        raise ValueError(f"{path}: a converted {stored} network but --model {name} was asked for; "
                         f"pass --model {stored} or leave --model out")
    name = stored or name or "vgg16"
    spec = model_spec(name)
    head = [k for k in state if k.startswith("head.") and k.endswith(".weight") and state[k].dim() == 4]
    if meta.get("kind") == "pooled_head":  # the original head, per cell: its classes in the metadata
        classes = _meta_int(meta, "num_classes", 0, path)
    elif head:
        classes = int(state[head[-1]].shape[0])
    else:
        raise ValueError(f"{path}: expected a converted network's 'head.*' convolutions but found none")
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"{path}: the converted head has {classes} classes but got "
                         f"--num-classes {num_classes}")
    input_size = _meta_int(meta, "input_size", input_size or spec.input_size, path)
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
    return _finish(name, original, str(path), spec, labels=labels, input_size=input_size, fcn=fcn,
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


def restore_original(original: nn.Module, fcn: FullyConvNet) -> nn.Module:
    """Copy a converted network's weights back into the original architecture (in place).

    The body keeps the original's parameter names; the head's convolutions are the original's
    Linear layers in order, reshaped ``(out, C, kh, kw) -> (out, C * kh * kw)``; a head run per
    cell (:class:`~fcnclassify.network.convert.PerCellHead`: ConvNeXt, SqueezeNet, MLP heads) holds
    the original head's modules under their own names.
    """
    own = original.state_dict()
    state = {k[len("body."):]: v for k, v in fcn.state_dict().items() if k.startswith("body.")}
    per_cell = [m for m in fcn.head.modules() if isinstance(m, PerCellHead)]
    if per_cell:  # the original head's own modules, under their original names
        for head in per_cell:
            state.update(head.head.state_dict())
    else:
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
