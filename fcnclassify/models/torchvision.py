"""The torchvision family: every classifier of ``torchvision.models.list_models(module=torchvision.models)``.

Everything about a model comes from its weights enum (``get_model_weights``): the weights
themselves (downloaded by torch.hub into ``$TORCH_HOME/hub/checkpoints``, hash-checked, read with
``weights_only=True``), the class names (``weights.meta["categories"]``), the normalisation, input
size, resize fraction and interpolation (``weights.transforms()``). ``NAME:TAG`` picks weights other
than ``DEFAULT``, e.g. ``resnet50:IMAGENET1K_V1``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import socket
import sys
from pathlib import Path

import torch
from torch import nn

from .._constants import LITE_MODEL
from .loaded import Normalization
from .registry import Family, ModelSpec

__all__ = ["RECORD", "weights_enum"]

_DOWNLOAD_TIMEOUT_S = 10.0  # a connection that does not answer in this time fails the download
# the two-headed training architectures: their auxiliary classifiers are dropped (the inference path)
_AUX = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
# DenseNet's published weights name 'norm.1' what the module calls 'norm1' (torchvision remaps too)
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|"
                           r"running_mean|running_var))$")


@functools.cache
def _names() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def _split(name: str) -> tuple[str, str]:
    base, _, tag = name.partition(":")
    return base, tag


def _claims(name: str) -> bool:
    return _split(name)[0] in _names()


def weights_enum(name: str):
    """The weights entry for ``NAME`` (``DEFAULT``) or ``NAME:TAG``.

    Raises:
        ValueError: an unknown tag, with the model's tags.
    """
    import torchvision

    base, tag = _split(name)
    enum = torchvision.models.get_model_weights(base)
    if not tag or tag == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        tags = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ValueError(f"unknown weights tag {tag!r} for {base}: expected one of {tags} "
                         f"(e.g. -m {base}:{next(iter(enum)).name})") from None


def _check(name: str) -> None:
    weights_enum(name)


def _build(name: str, num_classes: int) -> nn.Module:
    import torchvision

    base, _ = _split(name)
    kwargs = {}
    if base in _AUX:  # the inference path; the published weights expect their input transform
        kwargs = dict(aux_logits=False, transform_input=True, init_weights=False)
    return torchvision.models.get_model(base, weights=None, num_classes=num_classes, **kwargs).eval()


def _spec(name: str) -> ModelSpec:
    weights = weights_enum(name)
    transforms = weights.transforms()
    crop = int(transforms.crop_size[0])
    resize = int(transforms.resize_size[0])
    categories = tuple(weights.meta["categories"])
    return ModelSpec(normalization=Normalization(tuple(transforms.mean), tuple(transforms.std)),
                     input_size=crop, categories=categories, num_classes=len(categories),
                     crop_pct=round(crop / resize, 4), interpolation=transforms.interpolation.value,
                     weights="default" if not _split(name)[1] else weights.name)


def _adapt(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published key names -> the module's: DenseNet's old names, no auxiliary classifiers."""
    base, _ = _split(name)
    if base.startswith("densenet"):
        state = {(lambda m: m.group(1) + m.group(2) if m else k)(_DENSENET_KEY.match(k)): v
                 for k, v in state.items()}
    if base in _AUX:
        state = {k: v for k, v in state.items() if not k.startswith(_AUX[base])}
    return state


def cached_file(name: str) -> Path:
    """Where torch.hub keeps (or would keep) the weights file of ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum(name).url).name


def _weights(name: str, progress: bool) -> dict[str, torch.Tensor]:
    """The weights of the enum entry: from torch.hub's cache, else downloaded (10 s timeout)."""
    weights = weights_enum(name)
    cached = cached_file(name)
    if cached.is_file():  # torch.hub reads its cache without touching the network
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True,
                                      map_location="cpu")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        # torch.hub announces the download on stdout (which may carry JSON) and draws its bar on
        # stderr: both go to stderr with a progress bar, nowhere without
        sink = sys.stderr if progress else io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True,
                                          map_location="cpu")
    except (OSError, RuntimeError) as e:  # URLError, timeouts, a failed hash check
        reason = str(getattr(e, "reason", None) or e).strip().splitlines()
        raise ValueError(
            f"cannot download {name} weights from {weights.url} (no network? "
            f"{reason[0][:120] if reason else type(e).__name__}): pass --weights FILE with a local "
            f"checkpoint, put {cached.name} in {cached.parent}, or use --model {LITE_MODEL} "
            "(works offline)"
        ) from e
    finally:
        socket.setdefaulttimeout(previous)


RECORD = Family(
    name="torchvision",
    claims=_claims,
    check=_check,
    names=lambda: list(_names()),
    build=_build,
    spec=_spec,
    weights=_weights,
    adapt=_adapt,
    local=lambda name: cached_file(name).is_file(),
    notes="weights, categories, normalisation and input size from torchvision's weights enum; "
          "NAME:TAG picks weights other than DEFAULT; googlenet/inception_v3 without their "
          "auxiliary classifiers; attention models (ViT, Swin, MaxViT) cannot be converted",
)
