"""Streamed evaluation (tiles read from the source one by one) == the in-memory dense map, cell for cell;
background tiles skipped by a mask; an interrupted run resumed; the budget kept by the plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcnclassify import dense_evaluate
from fcnclassify.evaluation.memory import activation_memory
from fcnclassify.evaluation.tiling import SlowTilingWarning
from fcnclassify.evaluation.streamed import (READ_BYTES, ArraySink, Mask, plan_stream,
                                             streamed_evaluate)
from fcnclassify.models.loaded import IMAGENET

EXACT = dict(rtol=0.0, atol=1e-4)  # as tests/test_tiling.py: tiled == untiled


class ArraySource:
    """An image in memory read by regions at scale 1, recording what was read."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self.reads: list[tuple[int, int, int, int]] = []

    def scaled_size(self, scale: float) -> tuple[int, int]:
        assert scale == 1.0
        return self.rgb.shape[:2]

    def read_scaled(self, scale, y0, y1, x0, x1):
        self.reads.append((y0, y1, x0, x1))
        return self.rgb[y0:y1, x0:x1]


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reference(fcn, rgb: np.ndarray) -> np.ndarray:
    """The untiled in-memory map (dense_evaluate on the whole normalised image)."""
    return dense_evaluate(fcn, IMAGENET(rgb))[0][0].logits.numpy()


@pytest.mark.parametrize("size,tile", [((301, 455), 1), ((449, 387), (2, 3)), ((600, 700), 4)])
def test_streamed_equals_in_memory(vgg_fcn, size, tile):
    rgb = _photo(*size)
    source = ArraySource(rgb)
    plan = plan_stream(vgg_fcn, size, tile=tile)
    sink = ArraySink(vgg_fcn.num_classes, plan.shape)
    stats = streamed_evaluate(vgg_fcn, source, IMAGENET, sink, plan=plan)
    reference = _reference(vgg_fcn, rgb)
    assert sink.logits.shape == reference.shape
    np.testing.assert_allclose(sink.logits, reference, **EXACT)
    assert stats.evaluated == len(plan.tiles) > 1 and stats.skipped == 0
    # only crops were read, never the whole image
    assert max((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in source.reads) < size[0] * size[1]


def test_background_tiles_are_skipped(vgg_fcn):
    """A mask (here at 1/8 resolution) with foreground in one place: the cells whose area (centre +-
    half a stride) meets it equal the in-memory map; the others are NaN; tiles without such cells
    are skipped and never read."""
    rgb = _photo(640, 640, seed=1)
    plan = plan_stream(vgg_fcn, (640, 640), tile=4)
    mask = np.zeros((80, 80), bool)
    mask[20:30, 25:40] = True  # level-0 pixels y 160..240, x 200..320
    source, sink = ArraySource(rgb), ArraySink(vgg_fcn.num_classes, plan.shape)
    stats = streamed_evaluate(vgg_fcn, source, IMAGENET, sink, plan=plan, mask=Mask(mask, 8.0))
    reference = _reference(vgg_fcn, rgb)
    g = vgg_fcn.geometry
    centres = np.array([g.cell_center(k) for k in range(plan.shape[0])])
    rows = (centres - 16 < 240) & (centres + 16 > 160)
    cols = (centres - 16 < 320) & (centres + 16 > 200)
    tissue = rows[:, None] & cols[None, :]
    np.testing.assert_allclose(sink.logits[:, tissue], reference[:, tissue], **EXACT)
    assert np.isnan(sink.logits[:, ~tissue]).all()
    owned = [t for t in plan.tiles if tissue[t.rows.start:t.rows.stop, t.cols.start:t.cols.stop].any()]
    assert stats.evaluated == len(owned) == len(source.reads) and stats.skipped == len(plan.tiles) - len(owned)
    assert 0 < len(owned) < len(plan.tiles)


class _Interrupted(Exception):
    pass


class ResumableSink(ArraySink):
    """A sink that remembers its tiles across runs, and can be made to fail after ``fail_after``."""

    def __init__(self, classes, shape, plan, fail_after=None):
        super().__init__(classes, shape)
        self.plan, self.fail_after = plan, fail_after

    def write(self, row0, col0, logits):
        if self.fail_after is not None and len(self.done) >= self.fail_after:
            raise _Interrupted
        super().write(row0, col0, logits)

    def pending(self):
        return [(t.rows.start, t.cols.start) for t in self.plan.tiles
                if (t.rows.start, t.cols.start) not in self.done | self.skipped]


def test_interrupted_run_resumes(vgg_fcn):
    rgb = _photo(500, 520, seed=2)
    plan = plan_stream(vgg_fcn, (500, 520), tile=3)
    sink = ResumableSink(vgg_fcn.num_classes, plan.shape, plan, fail_after=3)
    with pytest.raises(_Interrupted):
        streamed_evaluate(vgg_fcn, ArraySource(rgb), IMAGENET, sink, plan=plan)
    assert len(sink.done) == 3
    sink.fail_after = None
    source = ArraySource(rgb)
    stats = streamed_evaluate(vgg_fcn, source, IMAGENET, sink, plan=plan)
    assert (stats.resumed, stats.evaluated) == (3, len(plan.tiles) - 3)
    assert len(source.reads) == len(plan.tiles) - 3  # only the unfinished tiles recomputed
    np.testing.assert_allclose(sink.logits, _reference(vgg_fcn, rgb), **EXACT)


def test_plan_keeps_the_budget(vgg_fcn):
    """The largest crop's working memory, its float input and the reader's copies fit the budget;
    a bigger budget gives bigger tiles (fewer, less overlap), up to the cap; too small is refused."""
    size = (5000, 7000)
    with pytest.warns(SlowTilingWarning, match="60 MiB leaves room for tiles of"):
        small = plan_stream(vgg_fcn, size, max_memory=60 * 2**20)
    large = plan_stream(vgg_fcn, size, max_memory=600 * 2**20)
    for plan, budget in ((small, 60 * 2**20), (large, 600 * 2**20)):
        h = max(t.crop[1] - t.crop[0] for t in plan.tiles)
        w = max(t.crop[3] - t.crop[2] for t in plan.tiles)
        need = activation_memory(vgg_fcn, (h, w)) + h * w * (12 + READ_BYTES)
        assert need <= budget
    assert small.tile < large.tile <= (64, 64)
    assert large.shape == vgg_fcn.geometry.output_size(*size)
    with pytest.raises(ValueError, match=r"expected max_memory of at least [\d.]+ MiB .* but got 1 MiB"):
        plan_stream(vgg_fcn, size, max_memory=2**20)


def test_tile_jobs_spread_over_workers_are_reassembled(vgg_fcn):
    """The plan's tiles split among 3 workers (r::3), each with its own sink, reassembled: the map."""
    rgb = _photo(420, 610, seed=3)
    plan = plan_stream(vgg_fcn, rgb.shape[:2], tile=2)
    total = ArraySink(vgg_fcn.num_classes, plan.shape)
    for r in range(3):
        part = ArraySink(vgg_fcn.num_classes, plan.shape)
        mine = plan.tiles[r::3]
        streamed_evaluate(vgg_fcn, ArraySource(rgb), IMAGENET, part,
                          plan=type(plan)(plan.size, plan.shape, plan.tile, mine))
        for row0, col0 in part.done:
            total.logits[:, row0:row0 + plan.tile[0], col0:col0 + plan.tile[1]] = \
                part.logits[:, row0:row0 + plan.tile[0], col0:col0 + plan.tile[1]]
    np.testing.assert_allclose(total.logits, _reference(vgg_fcn, rgb), **EXACT)
    assert torch.isfinite(torch.from_numpy(total.logits)).all()
