"""``fcnclassify bench [--quick] ...``: run the dense-vs-crops benchmark suite of a source checkout.

The suite lives in ``benchmarks/`` at the root of the repository, next to the ``fcnclassify``
package, and writes its results there (``benchmarks/results/``); it is not installed with the
package. This command finds it from the package's location (an editable install or a checkout on
``sys.path``) and runs it with the suite's own options: ``fcnclassify bench --quick`` is
``python -m benchmarks --quick``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HELP = "benchmark dense evaluation against batched crops (runs benchmarks/ of a source checkout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        suite = _suite()
    except ValueError:
        return  # installed without the checkout: run() says so
    suite.add_arguments(parser)


def suite_root() -> Path:
    """The repository root holding ``benchmarks/suite.py``.

    Raises:
        ValueError: fcnclassify is installed without its source checkout.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "suite.py").is_file():
        raise ValueError(
            f"expected the benchmark suite at {root / 'benchmarks'} but found none: it ships with "
            "the source, not the installed package; clone the repository, 'pip install -e .[bench]' "
            "and run 'fcnclassify bench' or 'python -m benchmarks' there"
        )
    return root


def run(args: argparse.Namespace) -> int:
    suite = _suite()
    args.bench_command = "fcnclassify bench " + " ".join(sys.argv[2:])
    return suite.run(args)


def _suite():
    root = str(suite_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module("benchmarks.suite")
    except ModuleNotFoundError as e:  # matplotlib or timm missing
        raise ValueError(f"the benchmark suite needs the 'bench' extra "
                         f"(pip install -e .[bench]): {e}") from None
