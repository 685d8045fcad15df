"""Benchmark suite of fcnclassify: dense evaluation against the crop-by-crop baseline it replaces.

Run from a source checkout: ``python -m benchmarks [--quick]`` or ``fcnclassify bench [--quick]``.
Each run writes JSON, CSV, a markdown table and PNG plots into a new folder,
``bench-results/<date>-<time>`` in the current directory (``--out DIR`` to choose one; files there
are replaced only with ``--force``); ``benchmarks/results/`` holds the committed results. The suite
is not part of the installed package: it needs the ``bench`` extra (matplotlib, timm) and says so
in one line when a module of it is missing.
"""
