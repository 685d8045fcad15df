"""``fcnclassify bench [--quick] ...``: run the dense-vs-crops benchmark suite of a source checkout.

The suite lives in ``benchmarks/`` at the root of the repository, next to the ``fcnclassify``
package; it is not installed with the package. This command finds it from the package's location
(an editable install or a checkout on ``sys.path``) and runs it with the suite's own options:
``fcnclassify bench --quick`` is ``python -m benchmarks --quick``. Results go to a new folder,
``bench-results/<date>-<time>`` in the current directory, unless ``--out`` names one; a result file
that exists is replaced only with ``--force``. A module of the ``bench`` extra that is missing is
named in one line before anything runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HELP = "benchmark dense evaluation against batched crops (runs benchmarks/ of a source checkout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        root = suite_root()
    except ValueError:
        return  # installed without the checkout: run() says so
    _on_path(root)
    importlib.import_module("benchmarks.options").add_arguments(parser)  # argparse only: no torch


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
    _on_path(suite_root())
    suite = importlib.import_module("benchmarks.suite")
    args.bench_command = "fcnclassify bench " + " ".join(sys.argv[2:])
    return suite.run(args)


def _on_path(root: Path) -> None:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
