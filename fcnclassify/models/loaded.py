"""What a loaded model is: the converted network with its class names, input normalisation and
input size (:class:`LoadedModel`), and the normalisation itself (:class:`Normalization`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..network.convert import FullyConvNet

__all__ = ["Normalization", "LoadedModel", "IMAGENET", "LITE"]


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
        weights: where the weights came from (``"default"``, a weights tag such as
            ``"IMAGENET1K_V2"``, a path, a ``hf-hub:`` reference, or ``"random"``).
        crop_pct: the centre-crop fraction of the weights' evaluation transform (None: unknown).
        interpolation: the resize interpolation of that transform (``"bilinear"``, ``"bicubic"``).
    """

    name: str
    fcn: FullyConvNet
    original: nn.Module
    categories: list[str]
    normalization: Normalization
    input_size: int
    weights: str = "default"
    crop_pct: float | None = None
    interpolation: str | None = None
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
