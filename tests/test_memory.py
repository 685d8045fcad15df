"""Budgets in the user's units: the smallest that works, named exactly; the notice of a slow plan."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

from fcnclassify.evaluation.memory import MemorySize, activation_memory, format_bytes, parse_memory
from fcnclassify.evaluation.tiling import SlowTilingWarning, choose_tile, plan_tiles, tiled_forward

EXACT = dict(rtol=0.0, atol=1e-4)


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 340, 390, generator=torch.Generator().manual_seed(0))


def _smallest_budget(fcn, x) -> int:
    """By hand: the input and the float32 map, plus the largest one-cell crop's working memory."""
    h, w = fcn.geometry.output_size(*x.shape[-2:])
    crops = [t.crop for t in plan_tiles(fcn.geometry, tuple(x.shape[-2:]), (1, 1))]
    longest = (max(c[1] - c[0] for c in crops), max(c[3] - c[2] for c in crops))
    return x.numel() * 4 + fcn.num_classes * h * w * 4 + activation_memory(fcn, longest)


@pytest.mark.parametrize("typed,got,unit,scale", [("2MiB", "2 MiB", "MiB", 2**20),
                                                  ("1MB", "1 MB", "MB", 10**6),
                                                  ("0.001GB", "1 MB", "MB", 10**6)])
def test_refusal_names_the_smallest_budget_in_the_users_units(vgg_fcn, image, typed, got, unit,
                                                              scale):
    need = _smallest_budget(vgg_fcn, image)
    with pytest.raises(ValueError) as error:
        tiled_forward(vgg_fcn, image, max_memory=parse_memory(typed))
    message = str(error.value)
    assert "\n" not in message
    named = re.search(r"at least ([0-9.]+) (\S+) ", message)
    assert named.group(2) == unit and message.endswith(f"but got {got}")
    assert float(named.group(1)) == _rounded_up(need / scale)  # so that the named budget works


def _rounded_up(value: float) -> float:
    """Whole units from 10 on, tenths below."""
    return math.ceil(value) if value >= 10 else math.ceil(value * 10) / 10


def test_the_named_budget_works_and_one_unit_less_does_not(vgg_fcn, image):
    with pytest.raises(ValueError) as error:
        tiled_forward(vgg_fcn, image, max_memory=parse_memory("2MiB"))
    named = float(re.search(r"at least ([0-9.]+) MiB", str(error.value)).group(1))
    step = 1 if named >= 10 else 0.1
    with torch.no_grad():
        want = vgg_fcn(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowTilingWarning)  # one-cell tiles: slow, as it says
        got = tiled_forward(vgg_fcn, image, max_memory=parse_memory(f"{named}MiB"))
        with pytest.raises(ValueError, match="expected max_memory of at least"):
            tiled_forward(vgg_fcn, image, max_memory=parse_memory(f"{named - step}MiB"))
    torch.testing.assert_close(got, want, **EXACT)


def test_held_memory_counts_against_the_budget(vgg_fcn, image):
    """What the caller holds (other scales, earlier maps) is part of the smallest budget."""
    need = _smallest_budget(vgg_fcn, image)
    with pytest.raises(ValueError) as error:
        tiled_forward(vgg_fcn, image, max_memory=parse_memory("0.001GB"), held=10**6)
    named = float(re.search(r"at least ([0-9.]+) MB \(", str(error.value)).group(1))
    assert named == _rounded_up((need + 10**6) / 10**6)


def test_a_budget_that_makes_the_run_much_slower_says_so(vgg_fcn):
    """Just above the smallest budget the crops overlap heavily: a notice naming a budget that does
    not, which when used plans at most 1.1x the image's pixels and gives no notice."""
    size = (900, 1000)
    budget = parse_memory(f"{math.ceil(activation_memory(vgg_fcn, (480, 480)) / 10**6)}MB")
    with pytest.warns(SlowTilingWarning, match=r"x slower than with max_memory of at least") as record:
        tile = choose_tile(vgg_fcn, size, budget)
    message = str(record[0].message)
    assert message.startswith(f"max_memory {format_bytes(budget, like=budget)} ")
    assert float(re.search(r"hold ([0-9.]+)x", message).group(1)) == pytest.approx(
        _work(vgg_fcn, size, tile), abs=0.05) and _work(vgg_fcn, size, tile) >= 1.5
    better = parse_memory(re.search(r"at least ([0-9.]+ MB)", message).group(1).replace(" ", ""))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowTilingWarning)
        assert _work(vgg_fcn, size, choose_tile(vgg_fcn, size, better)) <= 1.1
        choose_tile(vgg_fcn, size, 10**9)  # one pass: no notice


def _work(fcn, size, tile) -> float:
    """Pixels the tiles' crops hold, in images."""
    crops = [t.crop for t in plan_tiles(fcn.geometry, size, tile)]
    return sum((c[1] - c[0]) * (c[3] - c[2]) for c in crops) / (size[0] * size[1])


@pytest.mark.parametrize("n,like,up,text", [
    (36.2 * 2**20, "MiB", True, "37 MiB"), (36.2 * 2**20, "MiB", False, "36 MiB"),
    (1.234e9, "MB", True, "1234 MB"), (1.234e9, "GB", True, "1.3 GB"), (5e5, "GB", True, "500 kB"),
    (3 * 2**30, "B", False, "3 GiB"), (999, "MB", False, "999 B"), (4e9, "GB", False, "4 GB")])
def test_format_bytes_in_the_users_units(n, like, up, text):
    assert format_bytes(n, like=like, up=up) == text


def test_parsed_sizes_keep_their_unit():
    size = parse_memory("170MB")
    assert size == 170 * 10**6 and isinstance(size, MemorySize) and size.unit == "MB"
    assert parse_memory(size).unit == "MB"  # parsing again keeps it
    assert parse_memory("2 mib").unit == "MiB" and parse_memory("4096").unit == "B"
    assert format_bytes(size, like=size) == "170 MB"


def _named(error: pytest.ExceptionInfo) -> float:
    return float(re.search(r"at least ([0-9.]+) MiB", str(error.value)).group(1))


def test_dense_evaluate_refuses_up_front_what_a_later_size_cannot_keep(vgg_fcn, image):
    """A budget that the smallest size keeps but a larger one does not is refused before any pass
    runs (not after the small one), naming what the most demanding pass needs; that budget then
    runs every pass, and one unit less is refused up front too."""
    from fcnclassify import dense_evaluate

    calls = []
    hook = vgg_fcn.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    try:
        with pytest.raises(ValueError) as small:  # the smallest size alone: what it needs
            dense_evaluate(vgg_fcn, image, sizes=[224], max_memory=parse_memory("1MiB"))
        with pytest.raises(ValueError) as both:  # enough for 224, not for 340 and its flip
            dense_evaluate(vgg_fcn, image, sizes=[224, 340], flip=True,
                           max_memory=parse_memory(f"{_named(small)}MiB"))
        assert calls == []  # refused before the first pass
        named = _named(both)
        assert named > _named(small)
        step = 1 if named >= 10 else 0.1
        with pytest.raises(ValueError, match="expected max_memory of at least"):
            dense_evaluate(vgg_fcn, image, sizes=[224, 340], flip=True,
                           max_memory=parse_memory(f"{named - step}MiB"))
        assert calls == []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SlowTilingWarning)
            got = dense_evaluate(vgg_fcn, image, sizes=[224, 340], flip=True,
                                 max_memory=parse_memory(f"{named}MiB"))[0]
    finally:
        hook.remove()
    want = dense_evaluate(vgg_fcn, image, sizes=[224, 340], flip=True)[0]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g.logits, w.logits, **EXACT)
