"""Class names: ImageNet's categories, label files (one name a line), and placeholder names."""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["imagenet_categories", "read_labels", "placeholder_labels"]


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard order (from torchvision's weight metadata,
    available offline)."""
    from torchvision.models import VGG16_Weights

    return tuple(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def placeholder_labels(num_classes: int) -> list[str]:
    """``["class_0", "class_1", ...]`` for a head without a labels file."""
    return [f"class_{i}" for i in range(num_classes)]


def read_labels(path: str | os.PathLike, *, num_classes: int | None = None) -> list[str]:
    """Class names from a text file, one a line (blank lines at the end are ignored).

    Raises:
        ValueError: the file is missing or unreadable, has an empty line among the names, or its
            count differs from ``num_classes``. (Names may repeat, as ImageNet's "crane" does.)
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the labels file ({type(e).__name__}: {e})") from e
    names = [line.strip() for line in text.rstrip().splitlines()]
    if not text.strip():
        raise ValueError(f"{path}: expected one class name a line but the labels file is empty")
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise ValueError(f"{path}: expected one class name a line but line {empty[0]} is empty")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{path}: expected {num_classes} class names (one a line) for a "
                         f"{num_classes}-class head but got {len(names)}")
    return names
