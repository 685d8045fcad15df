"""Each image's files in an output folder, written as one set, and the folder's manifest.

Names. An input ``chelsea.jpg`` writes under the key ``chelsea-jpg``: its file name with the last dot
made a dash (:func:`output_key`), so that ``chelsea.jpg`` and ``chelsea.png`` of one folder never
share a file: ``chelsea-jpg_<rank>_<class-slug>.<format>``, ``chelsea-jpg_grid.<format>`` and
``chelsea-jpg_maps.npz`` (:func:`output_names`), and with a viewer the folder
``chelsea-jpg_viewer/`` (:func:`viewer_name`). Inputs with the same file name in different
folders are numbered in the order given: ``chelsea-jpg``, ``chelsea-jpg-2``, ...

Manifest. ``<folder>/fcnclassify-manifest.json`` records, per key, the input (resolved path, size
in bytes, modification time in ns), the options of the run, the files written, whether the set is
complete, and the image's JSON document. A file that the manifest does not list is never replaced
without ``force``.

Atomic sets. :meth:`OutputFolder.write` writes every file of an image under a hidden temporary name
beside its target, records the set as incomplete, renames the files into place, deletes the files
of the image's earlier set that the new one does not have (other classes, other ranks, another
format), and records the set as complete. An interruption leaves either the earlier set or files
that the manifest lists as an incomplete set; never a half-written file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MANIFEST", "FORMATS", "Job", "Manifest", "OutputFolder", "output_key", "output_names",
           "outputs_of", "slug", "slide_name", "viewer_name"]

MANIFEST = "fcnclassify-manifest.json"
FORMATS = ("jpg", "webp", "png")  # of overlays and grids

Writer = Callable[[Path], None]


def output_key(path: str | os.PathLike) -> str:
    """The stem of an input's outputs: its file name, the last dot made a dash.

    ``"photos/chelsea.jpg"`` -> ``"chelsea-jpg"``. Extensions hold no dash, so two names of one folder
    never give the same key.
    """
    name = Path(path).name
    stem, dot, extension = name.rpartition(".")
    return f"{stem}-{extension}" if dot and stem else name


def slug(label: str) -> str:
    """A file-name-safe form of a class name: ``"Egyptian cat"`` -> ``"egyptian-cat"``."""
    name = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "class"
    # "<key>_<rank>_grid.<format>" would read as the grid of the image "<key>_<rank>"
    return "grid-class" if name == "grid" else name


def output_names(key: str, labels: Sequence[str], *, format: str = "jpg",
                 npz: bool = False) -> list[str]:
    """The file names of an image's set: one overlay per class (ranked), the grid, the maps."""
    if format not in FORMATS:
        raise ValueError(f"expected a format in {FORMATS} but got {format!r}")
    names = [f"{key}_{rank}_{slug(label)}.{format}" for rank, label in enumerate(labels, 1)]
    names.append(f"{key}_grid.{format}")
    return names + ([f"{key}_maps.npz"] if npz else [])


def viewer_name(key: str) -> str:
    """The folder of an image's viewer page and its Deep Zoom tiles (:mod:`fcnclassify.outputs.viewer`)."""
    return f"{key}_viewer"


def slide_name(key: str) -> str:
    """The folder of a slide's streamed outputs (:mod:`fcnclassify.outputs.slide`)."""
    return f"{key}_slide"


def outputs_of(key: str, names: Sequence[str]) -> list[str]:
    """The names among ``names`` that belong to image ``key``'s set, of any rank, class or format.

    ``a-png_1_grid.jpg`` is the grid of the image ``a-png_1``, not an overlay of ``a-png``.
    """
    formats = "|".join(FORMATS)
    pattern = re.compile(rf"{re.escape(key)}_(?:\d+_(?!grid\.)[a-z0-9-]+\.(?:{formats})"
                         rf"|grid\.(?:{formats})|maps\.npz|viewer|slide)")
    return sorted(n for n in names if pattern.fullmatch(n))


class Manifest:
    """The folder's record of each image's set: ``{"version": 1, "images": {key: entry}}``."""

    VERSION = 1

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / MANIFEST
        self.images: dict[str, dict] = {}
        if self.path.exists():
            try:
                document = json.loads(self.path.read_text())
                if document.get("version") != self.VERSION or not isinstance(document.get("images"), dict):
                    raise ValueError(f"version {document.get('version')!r}")
            except (ValueError, AttributeError) as e:
                raise ValueError(f"{self.path}: expected a manifest of fcnclassify (version "
                                 f"{self.VERSION}) but could not read it ({e}); move it away or "
                                 f"choose another --out") from None
            self.images = document["images"]

    def save(self) -> None:
        """Replaces the file whole (a temporary beside it, then renamed)."""
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            temporary.write_text(json.dumps({"version": self.VERSION, "images": self.images}, indent=1))
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


@dataclass
class Job:
    """One image's place in an output folder."""

    key: str
    source: Path | None = None
    also: tuple[str, ...] = ()  # names outside the key's pattern that the set holds (the demo's scene)
    finished: dict | None = None  # the manifest entry when the set is complete and current (skipped)
    redo: str | None = None  # why an earlier set of this image is replaced under resume


@dataclass
class OutputFolder:
    """An output folder and its manifest: plans which images to write, writes each one's set.

    Args:
        path: the folder, created on the first write.
        options: what the outputs depend on (JSON-serialisable); a set written with other options
            is not finished for ``resume``.
        force: replace any file in an image's way, listed in the manifest or not.
        resume: skip images whose set is complete with the same input and options; replace the
            listed files of the others.
        resumable: whether a refusal suggests ``--resume`` (a command without it: no).
    """

    path: Path
    options: Mapping = field(default_factory=dict)
    force: bool = False
    resume: bool = False
    resumable: bool = True

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"expected --out to be a folder but {self.path} is a file")
        self.options = json.loads(json.dumps(dict(self.options)))  # tuples as lists, as read back
        self.manifest = Manifest(self.path)
        self.notes: list[str] = []

    def plan(self, sources: Sequence[Path]) -> list[Job]:
        """A :class:`Job` per input, keys unique; checks every image before any is written.

        Notes (in :attr:`notes`): inputs that share a file name, images redone under ``resume``.

        Raises:
            FileExistsError: A file of some image's set exists and may not be replaced; names the
                first, and how many more.
        """
        return self.check([Job(key, Path(source)) for key, source in zip(self._keys(sources), sources)])

    def check(self, jobs: list[Job]) -> list[Job]:
        """Marks the finished jobs (``resume``) and refuses files in the way of the others."""
        present = set(os.listdir(self.path)) if self.path.is_dir() else set()
        refused: list[str] = []
        listed_only = True
        for job in jobs:
            entry = self.manifest.images.get(job.key)
            names = set(outputs_of(job.key, present)) | (set(job.also) & present)
            listed = set(entry["files"]) if entry else set()
            if entry and self.resume:
                reason = self._outdated(job, entry, present)
                if reason is None:
                    job.finished = entry
                    continue
                if names:
                    job.redo = reason
            if self.force:
                continue
            blocking = names - listed if self.resume else names
            listed_only &= blocking <= listed
            refused += sorted(blocking)
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            remedy = ("pass --resume to skip finished images, or --force to replace them"
                      if listed_only and self.resumable and not self.resume
                      else "pass --force to overwrite it")
            raise FileExistsError(f"{self.path / refused[0]}: already exists{more} ({remedy})")
        notes = [f"{j.source or j.key}: {j.redo}, written again" for j in jobs if j.redo]
        self.notes += notes
        return jobs

    def write(self, job: Job, files: Mapping[str, Writer], *, document: dict | None = None) -> list[Path]:
        """Writes one image's set: ``files`` maps each name to a function writing that file.

        Every file goes to a hidden temporary name first; the set replaces the image's earlier one
        (files of other ranks, classes or formats are deleted) only once all are written. A writer
        may write a folder (the viewer's); it replaces the earlier folder of that name whole.

        Returns:
            The paths written, in the order of ``files``.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        temporaries: dict[str, Path] = {}
        try:
            for name, writer in files.items():
                # keep the extension last: writers choose the format by it (np.savez adds .npz)
                temporaries[name] = self.path / f".{name}.{token}.tmp{Path(name).suffix}"
                writer(temporaries[name])
            entry = self.manifest.images.get(job.key)
            present = set(os.listdir(self.path))
            earlier = (set(outputs_of(job.key, present)) | (set(job.also) & present)
                       | (set(entry["files"]) & present if entry else set()))
            record = {**self._source(job), "options": self.options}
            self.manifest.images[job.key] = {**record, "files": sorted(earlier | set(files)),
                                             "complete": False}
            self.manifest.save()
            for name in list(temporaries):
                target, old = self.path / name, self.path / f".{name}.{token}.old"
                if target.is_dir() and not target.is_symlink():  # os.replace takes no full folder
                    os.replace(target, old)
                os.replace(temporaries[name], target)
                del temporaries[name]
                _remove(old)
        except BaseException:
            for temporary in temporaries.values():
                _remove(temporary)
            raise
        for name in sorted(earlier - set(files)):
            _remove(self.path / name)
        self.manifest.images[job.key] = {**record, "files": list(files), "complete": True,
                                         "document": document}
        self.manifest.save()
        return [self.path / name for name in files]

    def _keys(self, sources: Sequence[Path]) -> list[str]:
        """:func:`output_key` of each input, numbered where names repeat; an input the manifest
        records keeps its key."""
        recorded = {e.get("input"): k for k, e in self.manifest.images.items()}
        taken: set[str] = set()
        keys, renamed = [], []
        for source in sources:
            base = output_key(source)
            key = recorded.get(str(Path(source).resolve()))
            if key is None or key.casefold() in taken or not key.startswith(base):
                key, n = base, 1
                while key.casefold() in taken:  # casefold: one folder on a case-blind disk
                    n += 1
                    key = f"{base}-{n}"
                if n > 1:
                    renamed.append(f"{source} -> {key}_*")
            taken.add(key.casefold())
            keys.append(key)
        if renamed:
            self.notes.append(f"{len(renamed)} input(s) share a file name with another; their outputs "
                              f"are numbered: {', '.join(renamed)}")
        return keys

    def _source(self, job: Job) -> dict:
        if job.source is None:
            return {"input": None}
        stat = job.source.stat()
        return {"input": str(job.source.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def _outdated(self, job: Job, entry: dict, present: set[str]) -> str | None:
        """Why an image's recorded set is not finished and current; None if it is."""
        source = self._source(job)
        if not entry.get("complete"):
            return "its earlier run was interrupted"
        if entry.get("input") != source["input"]:
            return f"its outputs were of another input ({entry.get('input')})"
        if (entry.get("bytes"), entry.get("mtime_ns")) != (source.get("bytes"), source.get("mtime_ns")):
            return "the input changed since its outputs were written"
        if entry.get("options") != self.options:
            return "its outputs were written with other options"
        if not set(entry["files"]) <= present:
            return "some of its outputs are missing"
        return None


def _remove(path: Path) -> None:
    """Deletes a file or a folder of outputs, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
