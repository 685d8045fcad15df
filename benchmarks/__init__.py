"""Benchmark suite of fcnclassify: dense evaluation against the crop-by-crop baseline it replaces.

Run from a source checkout: ``python -m benchmarks [--quick]`` or ``fcnclassify bench [--quick]``.
Results go to ``benchmarks/results/`` (JSON, CSV, a markdown table, PNG plots). The suite is not
part of the installed package: it needs the ``bench`` extra (matplotlib, timm) and writes next to
its own source.
"""
