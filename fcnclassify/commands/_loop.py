"""The image loop that ``classify`` and ``heatmap`` share: paths, decoding, prediction, errors.

A path or image that fails is reported on one stderr line and counted; the others go on, and the
command exits 2 at the end if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..io.images import ImageError, list_images
from ..io.stderr import say
from ._options import engine, evaluation_kwargs, load_from_args, show_progress

if TYPE_CHECKING:
    import numpy as np


PEAK_SCORE = "probability of the class in its best window, over all maps"
HEATMAP_SCORE = ("per-window probability that the class's heatmap holds over 1% of the image (its "
                 "99th percentile); heatmap draws the classes in this order")


def score_meaning(pool: str, over: str) -> str:
    """What an image-level ``score`` is, in words, for the JSON document."""
    pooled = (f"each map's logits {'averaged' if pool == 'avg' else 'maximised'} over its windows, "
              "softmax" if over == "logits" else
              f"each map's per-window probabilities {'averaged' if pool == 'avg' else 'maximised'} "
              "over its windows")
    return f"image-level probability: {pooled}, then the mean over the maps"


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


class ImageLoop:
    """Predictions for the image arguments of a command, one clear line for each failure."""

    def __init__(self, command: str, items: list[str]) -> None:
        self.command = command
        self.failures = 0
        self.paths: list[Path] = []
        for item in items:
            try:
                self.paths += list_images([item])
            except ImageError as e:
                self.report(e)
        if not self.paths and not self.failures:
            raise ValueError(f"expected image files but found none in {' '.join(items)}")
        self._progress = None

    def report(self, message) -> None:
        say(f"fcnclassify {self.command}: error: {message}")
        self.failures += 1

    def predictions(self, model, args: argparse.Namespace) -> Iterator[tuple[Path, np.ndarray, object]]:
        """``(path, image, prediction)`` in input order; decoding runs ahead in threads."""
        from tqdm.auto import tqdm

        from ..evaluation.pipeline import iter_images
        from ..evaluation.predict import check_sizes, predict

        options = evaluation_kwargs(args)
        check_sizes(model, options["sizes"])  # bad for every image: said once, before any
        if engine(args) != "local":
            yield from self._distributed(model, args, options)
            return
        self._progress = tqdm(iter_images(self.paths, max_pixels=args.max_pixels),
                              total=len(self.paths), unit="image", disable=not show_progress(args))
        for path, image in self._progress:
            if isinstance(image, ImageError):
                self.report(image)
                continue
            try:
                prediction = predict(model, image, **options)
            except ValueError as e:  # e.g. an image smaller than one window
                self.report(e if str(e).startswith(str(path)) else f"{path}: {e}")
                continue
            prediction.path = str(path)
            yield path, image, prediction

    def _distributed(self, model, args: argparse.Namespace, options: dict):
        """As :meth:`predictions`, the work on Ray or torchrun ranks (:mod:`fcnclassify.distributed`)."""
        import functools

        from ..distributed import map_ordered
        from ..distributed.work import Failure, PredictWork

        work = PredictWork(functools.partial(load_from_args, args), options, args.max_pixels)
        items = [str(path) for path in self.paths]
        results = map_ordered(engine(args), work, items, address=getattr(args, "ray_address", None),
                              device=options["device"])
        for item, result in zip(items, results):
            if isinstance(result, Failure):
                self.report(result.message)
                continue
            yield Path(item), result.image, result

    def write(self, text: str) -> None:
        """Print to stdout without breaking the progress bar."""
        if self._progress is not None:
            self._progress.write(text, file=sys.stdout)
        else:
            print(text)

    def finish(self, model, args: argparse.Namespace, documents: list[dict],
               meanings: dict[str, str] | None = None) -> int:
        """Print the JSON document if asked (only images that worked); the exit code. ``meanings``:
        more fields' explanations (the heatmap's score)."""
        if args.json and documents:
            options = evaluation_kwargs(args)
            print(json.dumps({
                "model": model.name, "weights": model.weights,
                "sizes": _jsonable(options["sizes"] or ("vgg" if options["scales"] is None else None)),
                "scales": _jsonable(options["scales"]), "flip": args.flip, "pool": args.pool,
                "over": args.over, "cells": model.fcn.cells,
                "score": score_meaning(args.pool, args.over), "peak_score": PEAK_SCORE,
                **(meanings or {}), "images": documents,
            }, indent=2))
        return 2 if self.failures else 0
