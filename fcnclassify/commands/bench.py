"""``fcnclassify bench [--quick] ...``: run the dense-vs-crops benchmark suite of a source checkout.

The suite lives in ``benchmarks/`` at the root of the repository, next to the ``fcnclassify``
package; it is not installed with the package, so this command works in a source checkout only (an
editable install) and says so in one line elsewhere. It imports the checkout's ``benchmarks``
package by its location, without putting the repository root on ``sys.path`` (where ``tests/`` and
the rest would become importable too), and runs it with the suite's own options:
``fcnclassify bench --quick`` is ``python -m benchmarks --quick``. Results go to a new folder,
``bench-results/<date>-<time>`` in the current directory, unless ``--out`` names one; a result file
that exists is replaced only with ``--force``. A module of the ``bench`` extra that is missing is
named in one line before anything runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HELP = "benchmark dense evaluation against batched crops (runs benchmarks/ of a source checkout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        root = suite_root()
    except ValueError:
        return  # installed without the checkout: run() says so
    _suite_module(root, "options").add_arguments(parser)  # argparse only: no torch


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
    suite = _suite_module(suite_root(), "suite")
    args.bench_command = "fcnclassify bench " + " ".join(sys.argv[2:])
    return suite.run(args)


def _suite_module(root: Path, name: str) -> ModuleType:
    """``benchmarks.<name>`` of the checkout at ``root``, imported from its files."""
    folder = root / "benchmarks"
    package = sys.modules.get("benchmarks")
    if package is None:
        spec = importlib.util.spec_from_file_location("benchmarks", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules["benchmarks"]
            raise
    elif Path(package.__file__).resolve().parent != folder:
        raise ValueError(f"expected the benchmark suite of {folder} but another 'benchmarks' "
                         f"package is imported, from {Path(package.__file__).parent}")
    return importlib.import_module(f"benchmarks.{name}")
