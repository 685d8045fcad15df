"""The command line parses and helps without torch, numpy or OpenCV; the lazy public surface.

Each check runs in a fresh interpreter, with an import hook that names the fcnclassify line that
first imported a heavy module, so that a failure says where the import comes from.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fcnclassify

HEAVY = ("torch", "numpy", "cv2")

WATCH = """
import json, os, sys, traceback

first = {}  # heavy module -> (the fcnclassify line that imported it, OpenCV's pixel limit then)

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in %r and name not in first:
            lines = [f"{Path(f.filename).relative_to(ROOT)}:{f.lineno}"
                     for f in traceback.extract_stack() if "/fcnclassify/" in f.filename]
            first[name] = (lines[-1] if lines else "outside fcnclassify",
                           os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS"))
        return None

from pathlib import Path
ROOT = Path(%r)
sys.meta_path.insert(0, Watch())
""" % (HEAVY, str(Path(fcnclassify.__file__).resolve().parents[1]))


def _run(code: str) -> dict:
    """Runs ``code`` after the import hook; returns {heavy module: [importing line, pixel limit]}."""
    env_code = WATCH + code + "\nprint(json.dumps(first))\n"
    result = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_and_bad_arguments_import_no_torch_numpy_or_opencv():
    first = _run("""
import contextlib, io
from fcnclassify.cli import build_parser, main
build_parser()
commands = ["classify", "heatmap", "demo", "convert", "inspect", "evaluate", "bench"]
for argv in [["--help"], ["--version"], ["classify", "--bogus"], ["classify"],
             ["classify", "x.jpg", "--topk", "0"], *([c, "--help"] for c in commands)]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
""")
    assert first == {}, f"imported while parsing: {first}"


def test_import_fcnclassify_is_light_and_a_name_imports_its_module():
    first = _run("import fcnclassify; version = fcnclassify.__version__")
    assert first == {}, f"imported by `import fcnclassify`: {first}"
    first = _run("import fcnclassify; fcnclassify.Geometry; fcnclassify.read_image")
    assert set(first) == {"numpy", "cv2"}, first  # images.py: OpenCV and numpy, no torch


def test_opencv_pixel_limit_is_lifted_before_any_cv2_import(monkeypatch):
    """Through any module that imports cv2, not only images.py; a limit the user set is kept."""
    monkeypatch.delenv("OPENCV_IO_MAX_IMAGE_PIXELS", raising=False)
    first = _run("import fcnclassify.outputs.render")
    where, limit = first["cv2"]
    assert where.startswith("fcnclassify/outputs/render.py:") and limit == str(1 << 40), first
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "100")
    assert _run("import fcnclassify.io.images")["cv2"][1] == "100"


def test_every_public_name_is_its_module_object():
    for name in fcnclassify.__all__:
        value = getattr(fcnclassify, name)
        if name == "__version__":
            continue
        module = importlib.import_module(f"fcnclassify.{fcnclassify._EXPORTS[name]}")
        assert value is getattr(module, name), name
    assert set(fcnclassify.__all__) <= set(dir(fcnclassify))
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        fcnclassify.nonesuch  # noqa: B018
    namespace: dict = {}
    exec("from fcnclassify import *", namespace)
    assert set(fcnclassify.__all__) <= set(namespace)


def test_a_submodule_import_leaves_the_function_of_its_name():
    """`import fcnclassify.network.convert` binds the module as an attribute of the package; the public
    `convert` must stay the function (as with eager imports), whatever was imported first."""
    code = """
import fcnclassify.network.convert, fcnclassify.evaluation.predict, fcnclassify.evaluation.agreement
import fcnclassify, types
bad = [n for n in ("convert", "predict", "agreement") if isinstance(getattr(fcnclassify, n), types.ModuleType)]
assert not bad, bad
from fcnclassify import convert
assert convert is sys.modules["fcnclassify.network.convert"].convert
"""
    _run(code)
    for name in ("convert", "predict", "agreement"):
        assert not isinstance(getattr(fcnclassify, name), types.ModuleType)


def test_type_checking_imports_match_the_lazy_table():
    tree = ast.parse(Path(fcnclassify.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and getattr(node.test, "id", None) == "TYPE_CHECKING")
    declared = {alias.name: node.module for node in block.body for alias in node.names}
    assert declared == fcnclassify._EXPORTS
