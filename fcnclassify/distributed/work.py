"""Picklable units of per-item work, the same as the single-process loops do them.

A work object has ``decode(item)`` (CPU only: reading the file), ``setup()`` (once per worker: the
model) and ``run(state, item, decoded)`` (the network); each returns something picklable. An
engine calls ``decode`` and ``run`` wherever it likes and hands the results back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.images import DEFAULT_MAX_PIXELS, ImageError, read_image

if TYPE_CHECKING:
    from ..evaluation.protocols import Sample
    from ..models.loaded import LoadedModel

__all__ = ["Failure", "PredictWork", "EvaluateWork", "SlideTilesWork", "accuracy"]


@dataclass(frozen=True)
class Failure:
    """An item that could not be done: the one line the single-process run prints for it."""

    message: str


@dataclass(frozen=True)
class PredictWork:
    """:func:`~fcnclassify.evaluation.predict.predict` of one image path, as ``classify`` and
    ``heatmap`` run it: a :class:`~fcnclassify.evaluation.predict.Prediction` or a :class:`Failure`.

    Attributes:
        load: builds the model (picklable: a ``functools.partial`` of a module-level function).
        options: keyword arguments of ``predict`` (sizes, scales, flip, pool, over, device, ...).
        max_pixels: refuse larger images, as the plain run does.
    """

    load: Callable[[], LoadedModel]
    options: dict = field(default_factory=dict)
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def decode(self, item: str) -> Any:
        try:
            return read_image(Path(item), max_pixels=self.max_pixels)
        except ImageError as e:
            return Failure(str(e))

    def setup(self) -> LoadedModel:
        return self.load()

    def run(self, model: LoadedModel, item: str, decoded: Any) -> Any:
        from ..evaluation.predict import predict

        if isinstance(decoded, Failure):
            return decoded
        try:
            prediction = predict(model, decoded, **{**self.options, "progress": False})
        except ValueError as e:  # e.g. an image smaller than one window: as ImageLoop reports it
            return Failure(str(e) if str(e).startswith(item) else f"{item}: {e}")
        prediction.path = item
        return prediction


@dataclass(frozen=True)
class EvaluateWork:
    """:func:`~fcnclassify.evaluation.protocols.evaluate` of one labelled sample: its
    ``(path, label, top-5)`` prediction, exactly as the single-process evaluation records it."""

    load: Callable[[], LoadedModel]
    protocol: str = "dense"
    sizes: Sequence[int] | None = None
    batch_size: int = 32
    device: str | None = None
    dtype: str | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def decode(self, item: Sample) -> Any:
        return None  # evaluate() reads the image itself

    def setup(self) -> LoadedModel:
        return self.load()

    def run(self, model: LoadedModel, item: Sample, decoded: Any) -> Any:
        from ..evaluation.protocols import evaluate

        try:
            result = evaluate(model, [item], protocol=self.protocol, sizes=self.sizes,
                              batch_size=self.batch_size, device=self.device, dtype=self.dtype,
                              max_pixels=self.max_pixels)
        except ValueError as e:  # an unreadable image: the driver raises it, as evaluate() would
            return Failure(str(e))
        return result.predictions[0]


def accuracy(protocol: str, predictions: list[tuple[str, int, list[int]]]):
    """The :class:`~fcnclassify.evaluation.protocols.EvaluationResult` of per-sample predictions,
    counted as :func:`~fcnclassify.evaluation.protocols.evaluate` counts them; the first
    :class:`Failure` raised as ValueError, as the single-process evaluation raises it."""
    from ..evaluation.protocols import EvaluationResult

    failed = [p for p in predictions if isinstance(p, Failure)]
    if failed:
        raise ValueError(failed[0].message)
    n = len(predictions)
    if not n:
        raise ValueError("expected at least one labelled image but got none")
    top1 = sum(top5[0] == label for _, label, top5 in predictions)
    top5 = sum(label in k for _, label, k in predictions)
    return EvaluationResult(protocol, n, top1 / n, top5 / n, list(predictions))


@dataclass(frozen=True)
class SlideTilesWork:
    """A job of tiles of one slide: each tile's crop read from the file and evaluated as
    :func:`~fcnclassify.evaluation.streamed.streamed_evaluate` does it, the cells sent back
    (``(row0, col0, float32 logits)``, or ``(row0, col0, None)`` for a background tile). The slide
    file is opened by the worker itself: only tile coordinates and logits travel.

    Attributes:
        load: builds the model (picklable).
        path: the slide, readable from every worker (a shared file system).
        scale: level-0 pixels are resized by this factor.
        size, shape, tile: the plan's (:class:`~fcnclassify.evaluation.streamed.StreamPlan`).
        mask: the tissue mask or None.
        device, dtype: where and how the network runs.
    """

    load: Callable[[], LoadedModel]
    path: str
    scale: float
    size: tuple[int, int]
    shape: tuple[int, int]
    tile: tuple[int, int]
    mask: Any = None
    device: str | None = None
    dtype: str | None = None

    def decode(self, item: list) -> None:
        return None  # the worker reads its own crops

    def setup(self) -> dict:
        return {"model": self.load(), "slide": None}

    def run(self, state: dict, item: list, decoded: None) -> list:
        from ..evaluation.streamed import StreamPlan, streamed_evaluate
        from ..io.slides import open_slide

        if state["slide"] is None:
            state["slide"] = open_slide(self.path)
        model = state["model"]
        sink = _CollectingSink()
        plan = StreamPlan(self.size, self.shape, self.tile, list(item))
        streamed_evaluate(model.fcn, state["slide"], model.normalization, sink, scale=self.scale,
                          plan=plan, mask=self.mask, device=self.device, dtype=self.dtype)
        return sink.results


class _CollectingSink:
    """The tiles' cells in the order they were done, to send back."""

    def __init__(self) -> None:
        self.results: list = []

    def write(self, row0: int, col0: int, logits) -> None:
        self.results.append((row0, col0, logits))

    def skip(self, row0: int, col0: int) -> None:
        self.results.append((row0, col0, None))

    def pending(self) -> None:
        return None
