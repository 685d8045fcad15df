"""How closely a dense score map matches the crop-by-crop map on the same grid.

The two differ by design: a crop is zero padded at its own border, a dense cell sees the real image
around its window (VGG paper, section 3.2); see :mod:`fcnclassify.evaluation.crops`. These numbers say by how
much.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .scoremap import ScoreMap

__all__ = ["Agreement", "agreement"]


@dataclass(frozen=True)
class Agreement:
    """Cell-by-cell agreement of two ``(classes, h, w)`` maps.

    Attributes:
        cells: number of cells compared.
        top1: share of cells whose top-1 class is the same in both maps, in [0, 1].
        correlation: Pearson correlation of the per-cell class probabilities over all cells and
            classes.
        max_abs_diff: largest absolute difference of a probability.
        max_abs_logit_diff: largest absolute difference of a logit.
    """

    cells: int
    top1: float
    correlation: float
    max_abs_diff: float
    max_abs_logit_diff: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(dense: ScoreMap | torch.Tensor, crops: ScoreMap | torch.Tensor) -> Agreement:
    """Compare two maps of logits cell by cell.

    Args:
        dense: the dense map (a :class:`ScoreMap` or logits ``(classes, h, w)``).
        crops: the map to compare with, of the same shape (the crop map, or another dense run).
    """
    a = (dense.logits if isinstance(dense, ScoreMap) else dense).double()
    b = (crops.logits if isinstance(crops, ScoreMap) else crops).double()
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"expected two maps of the same shape (classes, h, w) but got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    pa, pb = a.softmax(0), b.softmax(0)
    top1 = (a.argmax(0) == b.argmax(0)).double().mean()
    x, y = pa.flatten() - pa.mean(), pb.flatten() - pb.mean()
    denominator = (x.norm() * y.norm()).item()
    correlation = (x @ y).item() / denominator if denominator > 0 else float("nan")
    return Agreement(
        cells=a.shape[1] * a.shape[2],
        top1=top1.item(),
        correlation=correlation,
        max_abs_diff=(pa - pb).abs().max().item(),
        max_abs_logit_diff=(a - b).abs().max().item(),
    )
