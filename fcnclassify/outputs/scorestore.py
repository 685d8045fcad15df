"""A dense map's logits on disk, as a chunked zarr store written tile by tile and resumable.

Layout. A zarr group (a directory store, zarr's default format) with two arrays: ``logits``
``(classes, h, w)`` in chunks of ``(classes, chunk_h, chunk_w)`` (all classes of a block of map cells
in one chunk, so one evaluated tile is one chunk written once), NaN where nothing was written; and
``done`` ``(ceil(h / chunk_h), ceil(w / chunk_w))`` uint8: 0 pending, 1 written, 2 skipped (a
background tile, its cells left NaN). The group's attributes are the caller's (geometry, model, scale,
image size, class labels, ...) plus ``{"fcnclassify": {"version": 1}}``: what other tools read.

Resuming. The store is written under ``.<name>.partial`` beside its final path and renamed into place
by :meth:`ScoreStore.finish` once no chunk is pending. A chunk's ``done`` mark is set only after its
data is written (zarr writes each chunk file atomically), so an interrupted run reopened with
:meth:`ScoreStore.open` redoes at most the tile it was writing. One writer at a time: ``done`` is a
single small chunk that each write rewrites.

Reading. :meth:`ScoreStore.class_maps` and :meth:`ScoreStore.mean_logits` go over the chunks once,
holding one chunk (``classes x chunk_h x chunk_w``, float32) at a time, never all classes of the map.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ScoreStore", "SLIDE_EXTRA", "import_slide"]

SLIDE_EXTRA = "writing slide outputs needs the slide extra: pip install 'fcnclassify[slide]'"
VERSION = 1
PENDING, WRITTEN, SKIPPED = 0, 1, 2


def import_slide(name: str) -> Any:
    """``zarr`` or ``tifffile``, imported on first use; missing, a ValueError naming the extra."""
    try:
        if name == "zarr":
            import zarr as module
        else:
            import tifffile as module
    except ImportError:
        raise ValueError(SLIDE_EXTRA) from None
    return module


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _final(path: Path) -> Path:
    """The final path of a store given by its final or its ``.partial`` path."""
    name = path.name
    if name.startswith(".") and name.endswith(".partial"):
        return path.with_name(name[1:-len(".partial")])
    return path


def _jsonable(attrs: dict, what: str) -> dict:
    """``attrs`` as JSON gives it back (tuples become lists), or a one-line ValueError."""
    if not isinstance(attrs, dict):
        raise ValueError(f"expected {what} to be a dict but got {type(attrs).__name__}")
    try:
        return json.loads(json.dumps(attrs, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"expected {what} to be JSON (str keys, lists, numbers, no NaN) but: "
                         f"{str(error).splitlines()[0]}") from None


def _first_difference(stored: Any, expected: Any, key: str = "") -> str | None:
    """The dotted key of the first difference between two JSON values (``""`` for the values)."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        for name in [*expected, *(k for k in stored if k not in expected)]:
            if name not in stored or name not in expected:
                return f"{key}{name}"
            found = _first_difference(stored[name], expected[name], f"{key}{name}.")
            if found is not None:
                return found
        return None
    return None if stored == expected else key.rstrip(".")


def _lookup(attrs: dict, dotted: str) -> Any:
    value: Any = attrs
    for name in dotted.split("."):
        if not isinstance(value, dict) or name not in value:
            return "(absent)"
        value = value[name]
    return value


class ScoreStore:
    """A chunked zarr store of a dense map: logits ``(classes, h, w)`` written tile by tile, resumable.

    Create with :meth:`create`, reopen with :meth:`open`. Attributes: ``path`` (where the store is
    now: the ``.partial`` folder until :meth:`finish`), ``attrs`` (the caller's attributes),
    ``classes``, ``shape`` ``(h, w)`` in map cells, ``chunk`` ``(chunk_h, chunk_w)``.
    """

    def __init__(self, group: Any, path: Path) -> None:
        """Use :meth:`create` or :meth:`open`."""
        try:
            self._logits, self._done = group["logits"], group["done"]
        except KeyError:
            raise ValueError(f"{path}: not a score store (no 'logits' or 'done' array)") from None
        meta = dict(group.attrs)
        if self._logits.ndim != 3 or meta.get("fcnclassify", {}).get("version") != VERSION:
            raise ValueError(f"{path}: not a score store of version {VERSION} "
                             f"(attrs 'fcnclassify': {meta.get('fcnclassify')!r})")
        self._group, self.path = group, path
        self._overwrite = bool(meta["fcnclassify"].get("overwrite", False))
        self.attrs = {k: v for k, v in meta.items() if k != "fcnclassify"}
        self.classes = int(self._logits.shape[0])
        self.shape = (int(self._logits.shape[1]), int(self._logits.shape[2]))
        self.chunk = (int(self._logits.chunks[1]), int(self._logits.chunks[2]))

    @classmethod
    def create(cls, path: str | os.PathLike, *, classes: int, shape: tuple[int, int],
               chunk: tuple[int, int], dtype: str = "float16", attrs: dict,
               overwrite: bool = False) -> ScoreStore:
        """Starts a store for ``path``, written under ``.<name>.partial`` beside it until :meth:`finish`.

        Args:
            path: the finished store's folder (a ``.zarr`` name is the custom).
            classes: number of classes (the logits' first axis).
            shape: ``(h, w)`` of the map in cells.
            chunk: ``(chunk_h, chunk_w)`` cells of one tile, the unit of :meth:`write`.
            dtype: of the stored logits (``"float16"`` halves the disk of ``"float32"``).
            attrs: JSON attributes (geometry, model, options, labels), checked again on :meth:`open`.
            overwrite: let :meth:`finish` replace an existing store at ``path``, and drop an earlier
                partial one now (otherwise FileExistsError).
        """
        zarr = import_slide("zarr")
        path = Path(path)
        attrs = _jsonable(attrs, "attrs")
        if "fcnclassify" in attrs:
            raise ValueError("expected attrs without the key 'fcnclassify' (the store's own)")
        for name, value, size in (("shape", shape, 2), ("chunk", chunk, 2), ("classes", (classes,), 1)):
            if len(value) != size or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in value):
                raise ValueError(f"expected {name} to be {size} whole number(s) >= 1 but got {value!r}")
        if np.dtype(dtype).kind != "f":
            raise ValueError(f"expected a floating dtype for the logits but got {dtype!r}")
        partial = _partial(path)
        if not overwrite:
            for existing in (path, partial):
                if existing.exists():
                    raise FileExistsError(f"{existing}: already exists (a score store; ScoreStore.open "
                                          f"resumes a partial one, overwrite=True replaces it)")
        elif partial.exists():
            shutil.rmtree(partial)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**attrs, "fcnclassify": {"version": VERSION, "overwrite": bool(overwrite)}}
        group = zarr.open_group(str(partial), mode="w-", attributes=meta)
        (h, w), (ch, cw) = shape, chunk
        group.create_array("logits", shape=(classes, h, w), chunks=(classes, min(ch, h), min(cw, w)),
                           dtype=dtype, fill_value=np.nan)
        grid = (-(-h // ch), -(-w // cw))
        group.create_array("done", shape=grid, chunks=grid, dtype="uint8", fill_value=PENDING)
        return cls(group, partial)

    @classmethod
    def open(cls, path: str | os.PathLike, *, expect_attrs: dict | None = None) -> ScoreStore:
        """Reopens the store of ``path``: its partial one (to resume) when there is one, else the finished.

        Raises:
            FileNotFoundError: neither exists.
            ValueError: not a score store, or ``expect_attrs`` differ from the stored attributes (the
                message names the first differing key, dotted into nested dicts).
        """
        zarr = import_slide("zarr")
        path = Path(path)
        final = _final(path)
        where = next((p for p in (_partial(final), final) if p.is_dir()), None)
        if where is None:
            raise FileNotFoundError(f"{final}: no score store there (nor a partial one)")
        try:
            group = zarr.open_group(str(where), mode="r+")
        except Exception as error:  # zarr's own errors: a folder that is not a zarr group
            raise ValueError(f"{where}: not a zarr score store ({type(error).__name__})") from None
        store = cls(group, where)
        if expect_attrs is not None:
            expected = _jsonable(expect_attrs, "expect_attrs")
            key = _first_difference(store.attrs, expected)
            if key is not None:
                raise ValueError(f"{where}: written with other options: {key!r} is "
                                 f"{_lookup(store.attrs, key)!r} there but {_lookup(expected, key)!r} now")
        return store

    @property
    def finished(self) -> bool:
        """Whether the store is at its final path (after :meth:`finish`)."""
        return _final(self.path) == self.path

    def _chunk_index(self, row0: int, col0: int) -> tuple[int, int]:
        (h, w), (ch, cw) = self.shape, self.chunk
        if row0 % ch or col0 % cw or not (0 <= row0 < h and 0 <= col0 < w):
            raise ValueError(f"{self.path}: expected a chunk origin (multiples of {self.chunk} inside "
                             f"{self.shape}) but got ({row0}, {col0})")
        return row0 // ch, col0 // cw

    def write(self, row0: int, col0: int, logits: np.ndarray) -> None:
        """Stores one tile's logits ``(classes, r, c)`` at the chunk origin ``(row0, col0)``, marks it done.

        ``(r, c)`` is the chunk's size, smaller at the map's last row and column of chunks.
        """
        i, j = self._chunk_index(row0, col0)
        (h, w), (ch, cw) = self.shape, self.chunk
        expected = (self.classes, min(ch, h - row0), min(cw, w - col0))
        logits = np.asarray(logits)
        if logits.shape != expected:
            raise ValueError(f"{self.path}: expected logits of shape {expected} at ({row0}, {col0}) but "
                             f"got {logits.shape}")
        self._logits[:, row0:row0 + expected[1], col0:col0 + expected[2]] = logits.astype(
            self._logits.dtype, copy=False)
        self._done[i, j] = WRITTEN  # after the data: a crash in between redoes the tile

    def skip(self, row0: int, col0: int) -> None:
        """Marks the chunk at ``(row0, col0)`` done without data (background): its cells stay NaN."""
        self._done[self._chunk_index(row0, col0)] = SKIPPED

    def pending(self) -> list[tuple[int, int]]:
        """Origins ``(row0, col0)`` of the chunks neither written nor skipped, row-major."""
        ch, cw = self.chunk
        return [(int(i) * ch, int(j) * cw) for i, j in np.argwhere(self._done[...] == PENDING)]

    def finish(self) -> Path:
        """Renames the partial store to its final path (atomically) and returns that path.

        Raises:
            ValueError: chunks are still pending.
            FileExistsError: the final path exists and the store was not created with ``overwrite``.
        """
        final = _final(self.path)
        if self.finished:
            return final
        pending = self.pending()
        if pending:
            raise ValueError(f"{self.path}: {len(pending)} chunk(s) still pending, the first at "
                             f"{pending[0]}; write or skip them before finish()")
        aside = None
        if final.exists() or final.is_symlink():
            if not self._overwrite:
                raise FileExistsError(f"{final}: already exists (create the store with overwrite=True "
                                      f"to replace it)")
            aside = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(final, aside)
        self._group.attrs.update({"fcnclassify": {"version": VERSION}})
        os.replace(self.path, final)
        if aside is not None:
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside)
            else:
                aside.unlink()
        zarr = import_slide("zarr")
        self._group = zarr.open_group(str(final), mode="r+")
        self._logits, self._done = self._group["logits"], self._group["done"]
        self.path, self._overwrite = final, False
        return final

    def _chunks(self) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """``(row0, col0, logits float32 or None)`` of every chunk, row-major; None: nothing written."""
        (h, w), (ch, cw) = self.shape, self.chunk
        done = self._done[...]
        for i in range(done.shape[0]):
            for j in range(done.shape[1]):
                r0, c0 = i * ch, j * cw
                block = None
                if done[i, j] == WRITTEN:
                    block = self._logits[:, r0:r0 + ch, c0:c0 + cw].astype(np.float32)
                yield r0, c0, block

    def class_maps(self, classes: list[int], *, probabilities: bool = True) -> np.ndarray:
        """``(k, h, w)`` float32 maps of the given classes, in one pass over the chunks.

        Args:
            classes: class indices, in the order of the result.
            probabilities: softmax over all classes per cell (float32, from the stored logits), or
                the logits themselves. Cells never written stay NaN.
        """
        index = [int(c) for c in classes]
        bad = [c for c in index if not 0 <= c < self.classes]
        if bad:
            raise ValueError(f"{self.path}: expected class indices in [0, {self.classes}) but got {bad[0]}")
        h, w = self.shape
        out = np.full((len(index), h, w), np.nan, dtype=np.float32)
        for r0, c0, block in self._chunks():
            if block is None:
                continue
            if probabilities:
                block = block - block.max(axis=0, keepdims=True)  # NaN cells stay NaN
                np.exp(block, out=block)
                block /= block.sum(axis=0, keepdims=True)
            out[:, r0:r0 + block.shape[1], c0:c0 + block.shape[2]] = block[index]
        return out

    def class_map(self, cls: int, *, probabilities: bool = True) -> np.ndarray:
        """``(h, w)`` float32 map of one class; see :meth:`class_maps`."""
        return self.class_maps([cls], probabilities=probabilities)[0]

    def max_probabilities(self) -> np.ndarray:
        """``(classes,)`` float32: each class's highest per-cell probability (softmax over the classes
        of a cell), over the cells that hold a value; NaN if none does. One pass over the chunks."""
        best = np.full(self.classes, -np.inf, dtype=np.float32)
        for _, _, block in self._chunks():
            if block is None:
                continue
            block = block - block.max(axis=0, keepdims=True)
            np.exp(block, out=block)
            block /= block.sum(axis=0, keepdims=True)
            np.fmax(best, np.nanmax(block.reshape(self.classes, -1), axis=1, initial=-np.inf), out=best)
        best[np.isinf(best)] = np.nan
        return best

    def mean_logits(self) -> np.ndarray:
        """``(classes,)`` float64 mean of each class's logits over the cells that hold a value."""
        total = np.zeros(self.classes, np.float64)
        count = np.zeros(self.classes, np.int64)
        for _, _, block in self._chunks():
            if block is None:
                continue
            flat = block.reshape(self.classes, -1).astype(np.float64)
            valid = ~np.isnan(flat)
            total += np.where(valid, flat, 0.0).sum(axis=1)
            count += valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count
