"""The ``fcnclassify`` command: one module per subcommand in :mod:`fcnclassify.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Exit codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 a bug (a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence

from . import __version__, commands
from .io.stderr import say

USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError,
               KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnclassify",
        description="Make image classifiers fully convolutional and run them densely: class "
                    "heatmaps, image-level predictions and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"fcnclassify {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(info.name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _fixed_mmap_threshold(limit: int = 1 << 20) -> None:
    """glibc's malloc: blocks of ``limit`` bytes and more from their own mappings, returned to the
    system when freed. By default glibc raises that threshold to the largest block freed so far (up
    to 32 MiB), and a slide's tile crops (a few MB each, in several threads) then pile up in its
    arenas: a 20000 x 20000 slide under --max-memory 1GB grew by 1.46 GB over its 27 tiles instead
    of 1.01 GB (efficientnet_lite0). Nothing on other C libraries."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, limit)  # M_MMAP_THRESHOLD; setting it turns glibc's adjustment off
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    # PyTorch's CPU allocator on transparent huge pages: a large image's activations are hundreds
    # of MB, freshly mapped at every layer; in 4 KiB pages the kernel's page faults took as much
    # time as the convolutions (efficientnet_lite0 on 2240 x 2240: 2.1 M faults, 6.9 s of system
    # time, 10.6 s in all; with huge pages 46 k faults, 6.2 s). Read once, before torch is imported.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    _fixed_mmap_threshold()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        with _one_line_warnings(args.command):
            return int(args._run(args) or 0)
    except USER_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        say(f"fcnclassify {args.command}: error: {message}")
        return 2
    except KeyboardInterrupt:
        say("fcnclassify: interrupted")
        return 130


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """The project's own warnings (a damaged image that still decodes) as one line each on stderr;
    a category with ``once_per_run`` (slow tiles, emulated bfloat16) once per command."""
    show = warnings.showwarning
    said: set[type] = set()

    def one_line(message, category, filename, lineno, file=None, line=None):
        if category.__module__.partition(".")[0] == "fcnclassify":
            if getattr(category, "once_per_run", False):
                if category in said:
                    return
                said.add(category)
            say(f"fcnclassify {command}: warning: {message}")
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
