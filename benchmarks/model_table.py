"""Which models convert, and how exactly: every torchvision classifier and a timm selection.

``python -m benchmarks.model_table`` (from the repo root) writes benchmarks/results/model_table.json
and docs/models.md. For every name in ``torchvision.models.list_models(module=torchvision.models)``:
whether :func:`fcnclassify.convert` takes it (or the reason it refuses), the head kind, the window,
stride and offset of a cell, the canonical input size (the crop of the model's default weights), and
the exactness on seeded weights (:func:`fcnclassify.network.zoo.seeded`, logits of unit spread):

* ``canonical``: max abs difference between the one cell of the converted network and the
  original logits on a random image of the canonical size;
* ``windows``: on an image two strides larger each way (a 3x3 map), max abs difference between
  three cells (two corners and the centre) and the original model's own head on the features of each cell's
  window (:func:`fcnclassify.network.zoo.window_reference`);
* ``crop``: the centre cell against the original model on the crop of its window, for information:
  with zero padding inside the network, the crop sees zeros where the dense pass sees the image.

Models above ``--max-gflops`` are not measured (their rows say so). ``--only NAME ...`` reruns some
rows and merges them into an existing table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torchvision

from fcnclassify import convert
from fcnclassify.network.convert import refuse_attention
from fcnclassify.network.zoo import seeded, window_reference

RESULTS = Path("benchmarks/results/model_table.json")
DOCS = Path("docs/models.md")
COMMAND = "python -m benchmarks.model_table"
CELLS = [(0, 0), (1, 1), (2, 2)]

# timm: the five of issue 11, and the ClassifierHead pool types and NormMlpClassifierHead's MLP
TIMM = [
    ("resnet50", {}), ("convnext_tiny", {}), ("vgg16", {}), ("efficientnet_b0", {}),
    ("mobilenetv3_large_100", {}), ("resnet18", {"global_pool": "max"}),
    ("resnet18", {"global_pool": "avgmax"}), ("resnet18", {"global_pool": "catavgmax"}),
    ("convnext_atto", {"head_hidden_size": 64}),
]


def _extra(name: str) -> dict:
    # the architecture as the pretrained weights build it, without the slow truncated-normal init
    return dict(transform_input=True, aux_logits=True, init_weights=False) if name in (
        "googlenet", "inception_v3") else {}


def torchvision_row(name: str, *, max_gflops: float, float64_gflops: float) -> dict:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    size = int(weights.transforms().crop_size[0])
    gflops = float(weights.meta.get("_ops", 0.0))
    builder = torchvision.models.get_model_builder(name)
    row = {"model": name, "source": "torchvision", "family": builder.__module__.rsplit(".", 1)[-1],
           "canonical": size, "gflops": gflops, "weights": str(weights).split(".", 1)[-1]}
    try:
        with torch.device("meta"):  # no memory, no init: enough to see the modules
            shell = torchvision.models.get_model(name, weights=None, **_extra(name))
    except NotImplementedError:  # RegNet computes its widths with tensors while building
        shell = None
    try:
        if shell is not None:
            refuse_attention(shell)
    except ValueError as e:
        return {**row, "converts": False, "reason": str(e)}
    if gflops > max_gflops:
        return {**row, "converts": None,
                "reason": f"not run: {gflops:.0f} GFLOPs an image at {size}, over --max-gflops "
                          f"{max_gflops:g} on this CPU; its family's smaller models are measured"}
    factory = lambda **kw: torchvision.models.get_model(name, weights=None, **kw)  # noqa: E731
    return {**row, **measure(factory, _extra(name), size, gflops <= float64_gflops)}


def timm_row(name: str, kwargs: dict, *, float64_gflops: float) -> dict:
    import timm

    label = name + "".join(f", {k}={v}" for k, v in kwargs.items())
    factory = lambda **kw: timm.create_model(name, pretrained=False, **kw)  # noqa: E731
    with torch.device("meta"):
        shell = factory(**kwargs)
    size = int(shell.pretrained_cfg["input_size"][-1])
    row = {"model": label, "source": "timm", "family": type(shell).__module__.rsplit(".", 1)[-1],
           "canonical": size, "head": type(getattr(shell, "head", None) or shell).__name__}
    try:
        refuse_attention(shell)
    except ValueError as e:
        return {**row, "converts": False, "reason": str(e)}
    return {**row, **measure(factory, kwargs, size, False)}


def measure(factory, kwargs: dict, size: int, float64: bool) -> dict:
    dtype = torch.float64 if float64 else torch.float32
    start = time.perf_counter()
    model = seeded(factory, input_size=size, dtype=dtype, **kwargs)
    try:
        fcn = convert(model, input_size=size)
    except ValueError as e:
        return {"converts": False, "reason": str(e), "seconds": round(time.perf_counter() - start, 1)}
    g = fcn.geometry
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, size, size, generator=gen).to(dtype)
    big = size + 2 * g.stride
    y = torch.randn(1, 3, big, big, generator=gen).to(dtype)
    with torch.no_grad():
        want = model(x)
        canonical = (fcn(x)[..., 0, 0] - want).abs().max().item()
        out = fcn(y)[0]
        ref = window_reference(model, y, CELLS, input_size=size)
        windows = max((out[:, i, j] - r[0]).abs().max().item() for (i, j), r in ref.items())
        x0, y0, x1, y1 = g.box(1, 1)
        crop = (model(y[..., y0:y1, x0:x1])[0] - out[:, 1, 1]).abs().max().item()
    return {
        "converts": True, "kind": fcn.kind, "pool": fcn.pool, "window": g.window, "stride": g.stride,
        "offset": g.offset, "receptive_field": g.receptive_field, "dtype": str(dtype).split(".")[-1],
        "max_abs_logit": want.abs().max().item(), "canonical_diff": canonical,
        "larger": f"{big}x{big}", "map": list(out.shape[-2:]), "windows_diff": windows,
        "crop_diff": crop, "seconds": round(time.perf_counter() - start, 1),
    }


def write_json(path: Path, table: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, path)


def markdown(table: dict) -> str:
    rows = table["torchvision"]
    ok = [r for r in rows if r.get("converts")]
    refused = [r for r in rows if r.get("converts") is False]
    unrun = [r for r in rows if r.get("converts") is None]
    lines = [
        "# Which models convert",
        "",
        f"Generated by `{COMMAND}` (torch {table['torch']}, torchvision {table['torchvision_version']}, "
        f"timm {table.get('timm_version', '-')}; CPU: {table['cpu']}, capability {table['cpu_capability']}). "
        "Seeded random weights (`fcnclassify.network.zoo.seeded`: every parameter set, logits scaled "
        "to unit spread), no downloads.",
        "",
        f"torchvision: {len(rows)} classification models; {len(ok)} convert and were measured, "
        f"{len(refused)} are refused, {len(unrun)} were not run here (too large for this machine).",
        "",
        "Columns: **canonical** - max abs difference, converted (one cell) vs original logits, on a "
        "random image of the canonical size (the crop of the default weights); **windows** - on an "
        "image two strides larger each way (a 3x3 map), three cells (two corners, the centre) vs "
        "the original model's own head on the features of each cell's window; **crop** - the centre cell vs the original on the "
        "crop of its window, for information only (padding inside the network: the crop sees zeros "
        "where the dense pass sees the image). Window, stride and offset in input pixels.",
        "",
        "| model | family | converts | head kind | window / stride / offset | canonical | dtype | "
        "canonical | windows | crop | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(_line(r))
    timm_rows = table.get("timm", [])
    if timm_rows:
        lines += ["", "## timm", "",
                  "`timm.create_model(name, pretrained=False, ...)`, canonical size from its "
                  "`pretrained_cfg`; the same measurements.", "",
                  "| model | family | converts | head kind | window / stride / offset | canonical | "
                  "dtype | canonical | windows | crop | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [_line(r) for r in timm_rows]
    return "\n".join(lines) + "\n"


def _pool(r: dict) -> str:
    return f" ({r['pool']})" if r.get("pool") else ""


def _line(r: dict) -> str:
    conv = {True: "yes", False: "**no**", None: "not run"}[r.get("converts")]
    if r.get("converts"):
        return (f"| {r['model']} | {r['family']} | {conv} | {r['kind']}{_pool(r)} | "
                f"{r['window']} / {r['stride']} / {r['offset']} | {r['canonical']} | {r['dtype']} | "
                f"{r['canonical_diff']:.1e} | {r['windows_diff']:.1e} | {r['crop_diff']:.2g} | |")
    reason = r.get("reason", "").replace("|", "/")
    return (f"| {r['model']} | {r['family']} | {conv} | | | {r['canonical']} | | | | | {reason} |")


def _installed(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="torchvision names to (re)measure, merged into "
                        "the existing table")
    parser.add_argument("--max-gflops", type=float, default=400.0)
    parser.add_argument("--resume", action="store_true",
                        help="skip torchvision names already measured in the existing table")
    parser.add_argument("--float64-gflops", type=float, default=0.0,
                        help="measure in float64 up to this many GFLOPs an image, float32 above")
    parser.add_argument("--no-timm", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    table = {
        "command": COMMAND, "torch": torch.__version__, "torchvision_version": torchvision.__version__,
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torchvision": old.get("torchvision", []), "timm": old.get("timm", []),
    }
    names = torchvision.models.list_models(module=torchvision.models)
    todo = args.only if args.only is not None else names
    rows = {r["model"]: r for r in table["torchvision"]}
    if args.resume:
        todo = [n for n in todo if n not in rows or str(rows[n].get("reason", "")).startswith(
            "measurement failed")]
    for name in todo:
        print(name, end=" ", flush=True)
        try:
            rows[name] = torchvision_row(name, max_gflops=args.max_gflops,
                                         float64_gflops=args.float64_gflops)
        except Exception as e:  # a failure of the measurement itself: say so in the row
            rows[name] = {"model": name, "source": "torchvision", "family": "?", "canonical": "?",
                          "converts": None, "reason": f"measurement failed: {type(e).__name__}: {e}"}
        print({k: rows[name].get(k) for k in ("converts", "kind", "canonical_diff", "windows_diff",
                                              "seconds", "reason")}, flush=True)
        table["torchvision"] = [rows[n] for n in names if n in rows]
        write_json(RESULTS, table)
    if not args.no_timm:
        import timm

        table["timm_version"] = timm.__version__
        table["timm"] = []
        for name, kwargs in TIMM:
            row = timm_row(name, kwargs, float64_gflops=args.float64_gflops)
            print(row["model"], {k: row.get(k) for k in ("converts", "kind", "canonical_diff",
                                                         "windows_diff", "reason")}, flush=True)
            table["timm"].append(row)
            write_json(RESULTS, table)
    else:  # the timm rows kept from the existing table
        table["timm_version"] = old.get("timm_version") or _installed("timm")
        write_json(RESULTS, table)
    DOCS.parent.mkdir(exist_ok=True)
    tmp = DOCS.with_name(DOCS.name + ".tmp")
    tmp.write_text(markdown(table))
    os.replace(tmp, DOCS)
    print(f"wrote {RESULTS} and {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
