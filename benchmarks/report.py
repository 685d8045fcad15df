"""Results of the benchmark as JSON, CSV, a markdown table and PNG plots, and the target checks."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path


COLUMNS = [
    ("model", "model", "{}"), ("size", "size", "{}"), ("dtype", "dtype", "{}"),
    ("layout", "layout", "{}"), ("cells", "cells", "{}"), ("dense_s", "dense s", "{:.3f}"),
    ("crop_s", "crops s", "{:.2f}"), ("speedup", "speedup", "{:.1f}x"),
    ("flop_ratio", "FLOP ratio", "{:.1f}x"), ("speedup_vs_flop_ratio", "speedup/ratio", "{:.2f}"),
    ("dense_gflops_per_s", "dense GFLOP/s", "{:.0f}"), ("crop_gflops_per_s", "crops GFLOP/s", "{:.0f}"),
    ("dense_peak_mb", "dense peak MiB", "{:.0f}"), ("crop_peak_mb", "crops peak MiB", "{:.0f}"),
    ("agree_top1", "top-1 agree", "{:.0%}"), ("agree_correlation", "prob. corr.", "{:.3f}"),
    ("agree_max_abs_diff", "max abs diff", "{:.3f}"),
]


def _size(row) -> str:
    return f"{row['width']}x{row['height']}"


def _find(rows, **keys):
    return [r for r in rows if all(r.get(k) == v for k, v in keys.items())]


def targets(doc: dict) -> list[dict]:
    """PASS/FAIL of the issue's targets on the rows measured (missing rows: NOT MEASURED)."""
    rows = [r for r in doc["rows"] if r.get("kind") != "baselines"]
    out = []

    def check(name, ok, detail):
        out.append({"target": name, "result": "NOT MEASURED" if ok is None else
                    ("PASS" if ok else "FAIL"), "detail": detail})

    dev = doc["rows"][0]["device"] if doc["rows"] else "cpu"
    ref = [r for r in _find(rows, model="vgg16", width=1024, height=768, dtype="float32")]
    best = max(ref, key=lambda r: r["speedup_vs_flop_ratio"], default=None)
    check(f"{dev} vgg16 1024x768 float32: speedup >= 0.85 x FLOP ratio",
          None if best is None else best["speedup_vs_flop_ratio"] >= 0.85,
          "" if best is None else f"{best['layout']}: speedup {best['speedup']:.1f}x, FLOP ratio "
          f"{best['flop_ratio']:.1f}x -> {best['speedup_vs_flop_ratio']:.2f}")
    eff = max(ref, key=lambda r: r["dense_gflops_per_s"] / r["crop_gflops_per_s"], default=None)
    check(f"{dev} vgg16 1024x768 float32: dense FLOP/s >= 0.9 x crops FLOP/s",
          None if eff is None else eff["dense_gflops_per_s"] >= 0.9 * eff["crop_gflops_per_s"],
          "" if eff is None else f"{eff['layout']}: {eff['dense_gflops_per_s']:.0f} vs "
          f"{eff['crop_gflops_per_s']:.0f} GFLOP/s -> "
          f"{eff['dense_gflops_per_s'] / eff['crop_gflops_per_s']:.2f}")
    pairs = []
    for r in _find(rows, dtype="bfloat16"):
        for f in _find(rows, model=r["model"], width=r["width"], height=r["height"],
                       layout=r["layout"], dtype="float32"):
            pairs.append((f["dense_s"] / r["dense_s"], r, f))
    real = doc.get("real_weights", {}).get("bfloat16_vs_float32_dense", {})
    if pairs:
        speed, r, f = min(pairs, key=lambda p: p[0])
        detail = "; ".join(f"{b['model']} {_size(b)} {b['layout']}: {s:.2f}x" for s, b, _ in pairs)
        check("bfloat16 >= 1.5x faster than float32 (dense)", all(p[0] >= 1.5 for p in pairs), detail)
    else:
        check("bfloat16 >= 1.5x faster than float32 (dense)", None, "no bfloat16 rows")
    check("bfloat16 vs float32 dense per-cell top-1 agreement >= 99% (efficientnet_lite0, real weights)",
          None if not real else real["top1"] >= 0.99,
          "" if not real else f"{real['top1']:.1%} of {real['cells']} cells")
    base = [r for r in doc["rows"] if r.get("kind") == "baselines"]
    check("faster than timm vgg16 (same input, device, dtype)",
          None if not base else all(r["speedup_vs_timm"] > 1.0 for r in base),
          "; ".join(f"{_size(r)} {r['dtype']}: ours {r['ours_s']:.3f}s, timm {r['timm_s']:.3f}s "
                    f"({r['speedup_vs_timm']:.2f}x)" for r in base))
    return out


def markdown(doc: dict) -> str:
    rows = [r for r in doc["rows"] if r.get("kind") != "baselines"]
    lines = [f"Device: {doc['device']}; torch {doc['torch']}; run took {doc['seconds']} s. "
             "Random weights (seeded) for vgg16/alexnet/resnet50. Crop times are the median time per "
             "crop over the timed batches (after one warm-up batch) x cells: extrapolated where the "
             "map has more cells than were timed. FLOPs = 2 x MACs (FlopCounterMode). Agreement is on "
             "the timed cells.", "",
             "| " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in rows:
        vals = []
        for key, _, fmt in COLUMNS:
            v = _size(r) if key == "size" else r.get(key)
            vals.append("" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(vals) + " |")
    base = [r for r in doc["rows"] if r.get("kind") == "baselines"]
    if base:
        lines += ["", "VGG16 image-level logits at the same input, device and dtype (channels_last): ours = "
                  "dense map + global average pooling; timm = `timm.create_model('vgg16')` with the same "
                  "weights (fc6 as a 7x7 conv, then pooling); torchvision = the original model "
                  "(AdaptiveAvgPool2d to 7x7, a different function).", "",
                  "| size | dtype | ours s | timm s | torchvision s | ours vs timm | max abs logit diff timm "
                  "| max abs prob diff torchvision | same top-1 as torchvision |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in base:
            lines.append(f"| {_size(r)} | {r['dtype']} | {r['ours_s']:.3f} | {r['timm_s']:.3f} | "
                         f"{r['torchvision_s']:.3f} | {r['speedup_vs_timm']:.2f}x | "
                         f"{r['timm_max_abs_logit_diff']:.2e} | {r['torchvision_max_abs_prob_diff']:.3f} | "
                         f"{r['torchvision_same_top1']} |")
    real = doc.get("real_weights")
    if real:
        d, b = real["dense_vs_crops"], real["bfloat16_vs_float32_dense"]
        lines += ["", f"Real weights: {real['model']} on {real['photo']} ({real['size'][0]}x{real['size'][1]}, "
                  f"map {real['map'][0]}x{real['map'][1]}, crops of {real['crop_window']} centred on the cells): "
                  f"dense vs crops top-1 agreement {d['top1']:.1%}, probability correlation "
                  f"{d['correlation']:.3f}; bfloat16 vs float32 dense: top-1 agreement {b['top1']:.1%}, "
                  f"max abs probability diff {b['max_abs_diff']:.4f}."]
    lines += ["", "| target | result | detail |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['result']} | {t['detail']} |" for t in doc["targets"]]
    return "\n".join(lines)


def default_folder(now: float | None = None) -> Path:
    """``bench-results/<date>-<time>`` in the current directory: a new folder for each run."""
    return Path("bench-results") / time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def refuse_overwrite(files: list[Path], *, force: bool) -> None:
    """Raise if one of ``files`` exists, unless ``force``.

    Raises:
        FileExistsError: one line naming the first file that exists and how many more do.
    """
    existing = [p for p in files if p.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}; pass --force to replace, or --out "
                              "another folder")


def result_path(folder: Path | None, name: str, *, force: bool) -> Path | None:
    """``<folder>/<name>`` (default folder: :func:`default_folder`) for a result to be written, or
    None after one line on stderr if it exists and not ``force``: asked before the run, not after."""
    target = (folder or default_folder()) / name
    try:
        refuse_overwrite([target], force=force)
    except FileExistsError as e:
        print(e, file=sys.stderr)
        return None
    return target


def write_result(result: dict, target: Path) -> None:
    """Prints ``result`` and writes it as JSON to ``target`` (from :func:`result_path`)."""
    print(json.dumps(result, indent=1))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {target}")


def result_files(out: Path, *, device: str, quick: bool, plots: bool = True) -> list[Path]:
    """The files :func:`write` writes: JSON, CSV, markdown and, with ``plots``, one PNG per plot."""
    stem = out / f"dense_vs_crops_{device}{'_quick' if quick else ''}"
    files = [stem.with_suffix(".json"), stem.with_suffix(".csv"), stem.with_suffix(".md")]
    return files + ([out / f"{stem.name}_{what}.png" for what in PLOTS] if plots else [])


def write(doc: dict, out: Path, *, device: str, plots: bool = True, force: bool = False) -> list[Path]:
    """Write the results into ``out`` (created); a file there is replaced only with ``force``.

    Raises:
        FileExistsError: a result file exists in ``out`` and ``force`` is False.
    """
    files = result_files(out, device=device, quick=doc["quick"], plots=plots)
    refuse_overwrite(files, force=force)  # again: the run took minutes, another may have written
    out.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps(doc, indent=2, default=float))
    rows = doc["rows"]
    keys = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], list)))
    with open(files[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    files[2].write_text(markdown(doc) + "\n")
    if plots:
        _plots(doc, files[3:])
    return files


# plot name -> (y label, the solid line's key, the dashed line's key)
PLOTS = {"speedup": ("speedup of dense over crops (x)", "speedup", "flop_ratio"),
         "time": ("seconds per image", "dense_s", "crop_s")}


def _plots(doc: dict, files: list[Path]) -> None:
    """One PNG per entry of :data:`PLOTS`, to ``files`` in that order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if r.get("kind") != "baselines"]
    series: dict[tuple, list] = {}
    for r in rows:
        series.setdefault((r["model"], r["dtype"], r["layout"]), []).append(r)
    for (what, (ylabel, *keys)), path in zip(PLOTS.items(), files):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (model, dtype, layout), rs in series.items():
            rs = sorted(rs, key=lambda r: r["width"] * r["height"])
            mp = [r["width"] * r["height"] / 1e6 for r in rs]
            label = f"{model} {dtype} {layout}"
            line, = ax.plot(mp, [r[keys[0]] for r in rs], marker="o", label=f"{label}: "
                            f"{'speedup' if what == 'speedup' else 'dense'}")
            ax.plot(mp, [r[keys[1]] for r in rs], marker="x", linestyle="--", color=line.get_color(),
                    label=f"{label}: {'FLOP ratio' if what == 'speedup' else 'crops (extrapolated)'}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("image size (megapixels)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"dense vs crops, {doc['device']}", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
