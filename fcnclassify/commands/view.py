"""``fcnclassify view OUT``: opens the viewer page of an output folder in the default web browser.

``OUT`` is a folder holding ``viewer.html`` (written by ``fcnclassify heatmap --viewer`` into
``<out>/<key>_viewer/``, or by ``fcnclassify heatmap SLIDE`` into its ``--out``), or the page itself.
The page works from ``file://``: no server is started. ``--print`` prints its ``file://`` URL instead,
for a browser on another machine or a headless one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "open the deep-zoom viewer of an output folder (viewer.html) in the web browser"

PAGE = "viewer.html"  # fcnclassify.outputs.viewer.PAGE, without importing numpy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT",
                        help=f"a folder holding {PAGE} (e.g. fcnclassify-out/chelsea-jpg_viewer), or the page")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the page's file:// URL instead of opening a browser")


def run(args: argparse.Namespace) -> int:
    url = page_url(args.out)
    if args.print_only:
        print(url)
        return 0
    import webbrowser

    if not webbrowser.open(url):
        raise ValueError(f"found no web browser to open {url}; open that URL yourself (or pass --print)")
    print(url)
    return 0


def page_url(out: str | Path) -> str:
    """The ``file://`` URL of ``out/viewer.html`` (or of ``out`` when it is the page).

    Raises:
        FileNotFoundError: No page there; names the viewer folders inside ``out``, if any.
    """
    path = Path(out)
    page = path if path.is_file() and path.name.endswith(".html") else path / PAGE
    if page.is_file():
        return page.resolve().as_uri()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    inside = sorted(p.parent.name for p in path.glob(f"*/{PAGE}")) if path.is_dir() else []
    hint = (f"; the viewers inside it: {', '.join(inside[:5])}{' ...' if len(inside) > 5 else ''} "
            f"(pass one of them)" if inside else
            " (write one with `fcnclassify heatmap IMAGE --viewer --out DIR`)")
    raise FileNotFoundError(f"{path}: expected a folder holding {PAGE} but found none{hint}")
