"""Top-1 / top-5 accuracy over a labelled set of images, with the VGG paper's test protocols.

Protocols (Simonyan & Zisserman 2015, Table 5; the sizes are shorter sides, for a 224 model):

* ``center``: resize to 256, the central 224 crop (torchvision's reference evaluation).
* ``10crop``: resize to 256, 4 corners + centre and their flips (``transforms.TenCrop``).
* ``multicrop``: per scale Q in {256, 384, 512}, a 5x5 grid of crops and their flips, 150 crops.
* ``dense``: the fully-convolutional network over the whole image rescaled to each Q, and flipped;
  each map is average-pooled (logits, then softmax).
* ``dense+multicrop``: the mean of the two posteriors (the paper's best single-model result).

In every protocol the posteriors of the views are averaged. For a model of another input size the
sizes scale with it (``256 * input_size / 224``).

Labelled sets are an ``ImageFolder`` tree (one folder per class, named by a class name or id) or a
CSV file of ``path,label`` rows (paths relative to the CSV; an optional header row).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from . import crops as _crops
from .._constants import PROTOCOLS
from .aggregate import fuse
from ..network.device import resolve
from .dense import dense_evaluate
from ..io.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image
from .scales import VGG_SIZES, vgg_sizes

if TYPE_CHECKING:
    from ..models.registry import LoadedModel

__all__ = ["PROTOCOLS", "Sample", "EvaluationResult", "read_samples", "default_sizes",
           "image_probabilities", "evaluate"]


@dataclass(frozen=True)
class Sample:
    """One labelled image: its path and its class index."""

    path: Path
    label: int


@dataclass
class EvaluationResult:
    """Accuracy of one protocol over a labelled set.

    Attributes:
        protocol: the protocol's name.
        images: number of images evaluated.
        top1: share of images whose most probable class is the label, in [0, 1].
        top5: share of images whose label is among the 5 most probable classes.
        predictions: per image ``(path, label, top-5 class indices)``.
    """

    protocol: str
    images: int
    top1: float
    top5: float
    predictions: list[tuple[str, int, list[int]]] = field(default_factory=list)

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5

    def as_dict(self) -> dict:
        return {"protocol": self.protocol, "images": self.images, "top1": self.top1,
                "top5": self.top5, "top1_error": self.top1_error, "top5_error": self.top5_error,
                "predictions": [{"path": p, "label": y, "top5": k} for p, y, k in self.predictions]}


def read_samples(source: str | os.PathLike, model: LoadedModel) -> list[Sample]:
    """The labelled images of an ``ImageFolder`` directory or a ``path,label`` CSV file.

    A label (a folder name or a CSV field) is a class id (``"281"``) or a class name of ``model``
    (``"tabby"``, any case; underscores stand for spaces, ``"Egyptian_cat"``).

    Raises:
        ValueError: the source is missing or empty, or a label is not a class of the model (naming
            the folder or the CSV line).
    """
    source = Path(source)
    if source.is_dir():
        samples = _image_folder(source, model)
    elif source.is_file():
        samples = _csv(source, model)
    else:
        raise ValueError(f"expected an ImageFolder directory or a CSV file but got {str(source)!r}"
                         ", which does not exist")
    if not samples:
        raise ValueError(f"expected labelled images in {source} but found none")
    return samples


def _label(model: LoadedModel, text: str, where: str) -> int:
    try:
        return model.class_index(text)
    except ValueError as first:
        if "_" in text:
            try:
                return model.class_index(text.replace("_", " "))
            except ValueError:
                pass
        raise ValueError(f"{where}: {first}") from None


def _image_folder(root: Path, model: LoadedModel) -> list[Sample]:
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = _label(model, folder.name, f"class folder {str(folder)!r}")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        samples += [Sample(p, label) for p in files]
    return samples


def _csv(path: Path, model: LoadedModel) -> list[Sample]:
    samples = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 'path,label' but got {','.join(row)!r}")
            name, label = (v.strip() for v in row)
            if line == 1 and (name.lower(), label.lower()) == ("path", "label"):
                continue  # header
            image = Path(name) if Path(name).is_absolute() else path.parent / name
            samples.append(Sample(image, _label(model, label, f"{path}:{line}")))
    return samples


def default_sizes(protocol: str, input_size: int = 224) -> tuple[int, ...]:
    """Shorter-side sizes of a protocol: 256 for a single scale, (256, 384, 512) for multi-scale,
    for a 224 model; proportionally for others."""
    _check_protocol(protocol)
    return vgg_sizes(input_size, (256,) if protocol in ("center", "10crop") else VGG_SIZES)


def image_probabilities(
    model: LoadedModel,
    image,
    *,
    protocol: str = "dense",
    sizes: Sequence[int] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> torch.Tensor:
    """Class posteriors ``(classes,)`` of one RGB ``uint8`` image (H x W x 3) under ``protocol``."""
    _check_protocol(protocol)
    sizes = tuple(sizes) if sizes else default_sizes(protocol, model.input_size)
    x = model.normalization(image)
    kw = dict(batch_size=batch_size, device=device, dtype=dtype)
    crop = model.input_size
    if protocol == "center":
        return _crops.multicrop_probabilities(
            model.original, torch.cat([_crops.center_crop(x, resize=q, crop=crop) for q in sizes]),
            **kw)
    if protocol == "10crop":
        return _crops.multicrop_probabilities(
            model.original, torch.cat([_crops.ten_crop(x, resize=q, crop=crop) for q in sizes]), **kw)
    out = []
    if protocol in ("multicrop", "dense+multicrop"):
        out.append(_crops.multicrop_probabilities(
            model.original, _crops.grid_crops(x, sizes=sizes, crop=crop), **kw))
    if protocol in ("dense", "dense+multicrop"):
        maps = dense_evaluate(model.fcn, x, sizes=sizes, flip=True, device=device, dtype=dtype,
                              pad=True)[0]
        out.insert(0, fuse(maps))
    return torch.stack(out).mean(0)


def evaluate(
    model: LoadedModel,
    samples: Sequence[Sample],
    *,
    protocol: str = "dense",
    sizes: Sequence[int] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> EvaluationResult:
    """Top-1 and top-5 accuracy of ``model`` on ``samples`` under ``protocol``.

    Args:
        model: a :class:`~fcnclassify.models.registry.LoadedModel`.
        samples: labelled images (:func:`read_samples`).
        protocol: one of :data:`PROTOCOLS`.
        sizes: shorter-side sizes; defaults to :func:`default_sizes`.
        batch_size: crops per forward pass.
        device, dtype: where and in which precision to compute (as in dense evaluation).
        max_pixels: refuse larger images (decompression bombs).
        progress: show a progress bar (stderr).
    """
    _check_protocol(protocol)
    if not samples:
        raise ValueError("expected at least one labelled image but got none")
    dev, dt = resolve(device, dtype)
    # move both networks once, not once per image
    prepared = _prepared_copy(model, dev, dt)
    correct1 = correct5 = 0
    predictions = []
    for sample in tqdm(samples, unit="image", disable=not progress, desc=protocol):
        image = read_image(sample.path, max_pixels=max_pixels)
        probs = image_probabilities(prepared, image, protocol=protocol, sizes=sizes,
                                    batch_size=batch_size, device=dev, dtype=dt)
        top5 = probs.topk(min(5, len(probs))).indices.tolist()
        correct1 += top5[0] == sample.label
        correct5 += sample.label in top5
        predictions.append((str(sample.path), sample.label, top5))
    n = len(samples)
    return EvaluationResult(protocol, n, correct1 / n, correct5 / n, predictions)


def _prepared_copy(model: LoadedModel, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    import dataclasses

    original, *_ = _crops._prepare(model.original, device=device, dtype=dtype, channels_last=None)
    fcn = model.prepared(device, dtype)
    return dataclasses.replace(model, original=original, fcn=fcn)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"expected a protocol in {', '.join(PROTOCOLS)} but got {protocol!r}")
