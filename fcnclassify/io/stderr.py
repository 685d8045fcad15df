"""The process's stderr (fd 2), shared by the decoders that capture it and the lines we write to it.

libjpeg and libpng print their warnings on fd 2 themselves, so a decoding thread points fd 2 at a
file for the length of one decode (:func:`fcnclassify.io.images.read_image`). A line written by
another thread meanwhile would land in that file and be taken for the decoder's: every line the
command line writes to stderr goes through :func:`say`, which waits for the decode to end.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["LOCK", "say"]

LOCK = threading.Lock()  # held while fd 2 is redirected, and while a line is written to it


def say(line: str) -> None:
    """Writes ``line`` and a newline to stderr, whole, never into a decoder's capture."""
    with LOCK:
        print(line, file=sys.stderr, flush=True)
