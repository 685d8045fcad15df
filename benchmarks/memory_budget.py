"""Does the process keep its memory budget? Budget vs peak RSS vs time, VGG16 on 2k to 16k images.

    python -m benchmarks.memory_budget                                  # 2048@1GB, 4096@2GB, 8192@4GB
    python -m benchmarks.memory_budget --runs 2048@1GB 16384@4GB --reuse DIR

Each run is :mod:`benchmarks.huge_image` in its own process (a peak RSS is a process's): seeded
random VGG16 weights, the image as 8-bit pixels, float32. The budget covers what the run holds
besides the weights and the runtime (Python and torch's libraries): the image, the map, one tile's
working memory. A row keeps its word when ``peak RSS - runtime - weights`` is at most the budget
(``of budget`` <= 100%). ``--reuse DIR`` takes a run's JSON from DIR when it is there (a 16384 run
takes about 35 minutes on 2 cores). Results go to ``memory_budget_cpu.{json,md}`` in ``--out``
(default ``benchmarks/results``), never over an existing file without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fcnclassify.evaluation.memory import format_bytes, parse_memory

from .report import refuse_overwrite

DEFAULT_RUNS = ("2048@1GB", "4096@2GB", "8192@4GB")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="SIZE@BUDGET",
                        help=f"image side and budget per run (default: {' '.join(DEFAULT_RUNS)})")
    parser.add_argument("--reuse", type=Path, default=None, metavar="DIR",
                        help="take huge_image_<size>_float32_cpu.json from DIR instead of running")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--force", action="store_true", help="replace existing results")
    args = parser.parse_args(argv)
    outputs = [args.out / "memory_budget_cpu.json", args.out / "memory_budget_cpu.md"]
    refuse_overwrite(outputs, force=args.force)
    rows = []
    for run in args.runs:
        size, _, budget = run.partition("@")
        parse_memory(budget)  # a bad budget fails before minutes of work
        rows.append(_run(int(size), budget, args.reuse))
        print(_line(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    outputs[0].write_text(json.dumps(rows, indent=2) + "\n")
    outputs[1].write_text(table(rows))
    print(f"-> {outputs[0]}, {outputs[1]}")
    return rows


def _run(size: int, budget: str, reuse: Path | None) -> dict:
    name = f"huge_image_{size}_float32_cpu.json"
    if reuse is not None and (reuse / name).exists():
        row = json.loads((reuse / name).read_text())
        if row["max_memory"] == parse_memory(budget):
            return row
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "benchmarks.huge_image", "--size", str(size),
                        "--max-memory", budget, "--out", folder], check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads((Path(folder) / name).read_text())


def _line(row: dict) -> str:
    return (f"{row['size']}: budget {row['max_memory'] / 1e9:g} GB, peak RSS "
            f"{row['peak'] / 1e9:.2f} GB, counted {row['peak_minus_runtime_and_weights'] / 1e9:.2f} GB "
            f"({row['of_budget']:.0%}), {row['seconds']:.0f} s")


def table(rows: list[dict]) -> str:
    """The Markdown table of the README."""
    lines = ["| image | budget | tiles (cells) | crops / image | peak RSS | runtime + weights | "
             "peak - runtime - weights | of budget | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        like = "GB"
        lines.append(
            f"| {r['size']}x{r['size']} | {format_bytes(r['max_memory'], like=like)} | {r['tiles']} "
            f"({r['tile_cells'][0]}x{r['tile_cells'][1]}) | {r['work']:.2f}x | "
            f"{format_bytes(r['peak'], like=like)} | "
            f"{format_bytes(r['runtime_rss'] + r['weights'], like=like)} | "
            f"{format_bytes(r['peak_minus_runtime_and_weights'], like=like)} | {r['of_budget']:.0%} | "
            f"{r['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileExistsError, subprocess.CalledProcessError) as e:
        print(f"benchmarks.memory_budget: error: {e}", file=sys.stderr)
        sys.exit(2)
