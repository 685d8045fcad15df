"""The timm family: ``timm/NAME`` (``timm/resnet50``, ``timm/resnet18.a1_in1k``) through
``timm.create_model``, from the ``timm`` extra.

The model's ``pretrained_cfg`` gives the normalisation (mean, std), the input size, the crop fraction
and the interpolation; its weights come from the Hugging Face Hub repository the config names
(``hf_hub_id``), read from the Hugging Face cache when they are there (``HF_HUB_OFFLINE=1``: never
from the network), as safetensors when the repository has them, else with ``weights_only=True``.
"""

from __future__ import annotations

import difflib
import functools

import torch
from torch import nn

from ..io.checkpoint import hub_cached, hub_file, load_state_dict
from .._constants import LITE_MODEL
from ..io.labels import imagenet_categories
from .loaded import Normalization
from .registry import Family, ModelSpec

__all__ = ["RECORD", "PREFIX", "pretrained_cfg"]

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError as e:
        raise ValueError("timm models need the 'timm' extra: pip install 'fcnclassify[timm]'") from e
    return timm


def _arch(name: str) -> str:
    return name[len(PREFIX):]


def _check(name: str) -> None:
    timm = _timm()
    arch = _arch(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, _all_names(), n=3)
        hint = f" (did you mean {', '.join(PREFIX + c for c in close)}?)" if close else ""
        raise ValueError(f"unknown timm model {arch!r}{hint}: expected a name of "
                         "timm.list_models(), e.g. timm/resnet50 or timm/resnet18.a1_in1k")


@functools.cache
def _all_names() -> tuple[str, ...]:
    timm = _timm()
    return tuple(timm.list_models()) + tuple(timm.list_models(pretrained=True))


def pretrained_cfg(name: str):
    """The ``PretrainedCfg`` of ``timm/NAME`` (the default tag's when the name has none)."""
    from timm.models import get_pretrained_cfg

    _check(name)
    cfg = get_pretrained_cfg(_arch(name))
    if cfg is None:  # an architecture without published weights: its default config
        with torch.device("meta"):
            cfg = _timm().create_model(_arch(name), pretrained=False).pretrained_cfg
        from timm.models import PretrainedCfg

        cfg = PretrainedCfg(**{k: v for k, v in cfg.items() if k in PretrainedCfg.__annotations__})
    return cfg


def _build(name: str, num_classes: int) -> nn.Module:
    _check(name)
    return _timm().create_model(_arch(name), pretrained=False, num_classes=num_classes).eval()


def _categories(cfg, num_classes: int) -> tuple[str, ...] | None:
    if cfg.label_names and len(cfg.label_names) == num_classes:
        return tuple(cfg.label_names)
    if num_classes == 1000:
        return imagenet_categories()
    try:  # an ImageNet subset other than 1k (in22k, in12k): timm's own descriptions
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(cfg)
        if subset:
            names = ImageNetInfo(subset).label_descriptions()
            if len(names) == num_classes:
                return tuple(n.split(",")[0].strip() for n in names)
    except Exception:  # noqa: BLE001 - an older timm without the info: placeholder names
        pass
    return None


def _spec(name: str) -> ModelSpec:
    cfg = pretrained_cfg(name)
    num_classes = int(cfg.num_classes or 1000)
    return ModelSpec(normalization=Normalization(tuple(cfg.mean), tuple(cfg.std)),
                     input_size=int(cfg.input_size[-1]),
                     categories=_categories(cfg, num_classes), num_classes=num_classes,
                     crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)


def _hub(name: str) -> str | None:
    cfg = pretrained_cfg(name)
    if not cfg.hf_hub_id:
        return None
    return f"hf-hub:{cfg.hf_hub_id}" + (f"/{cfg.hf_hub_filename}" if cfg.hf_hub_filename else "")


def _local(name: str) -> bool:
    hub = _hub(name)
    return hub is None or hub_cached(hub)


def _weights(name: str, progress: bool) -> dict[str, torch.Tensor]:
    hub = _hub(name)
    if hub is not None:
        try:
            return load_state_dict(hub_file(hub))
        except ValueError as e:
            raise ValueError(f"{name} weights: {e}; or use --model {LITE_MODEL} (works "
                             "offline)") from e
    raise ValueError(f"{name}: timm names no Hugging Face Hub weights for it (pretrained_cfg has no "
                     f"hf_hub_id): pass --weights FILE or --weights hf-hub:ORG/NAME")


RECORD = Family(
    name="timm",
    claims=lambda name: name.startswith(PREFIX),
    check=_check,
    names=lambda: [],  # thousands: list them with timm.list_models()
    build=_build,
    spec=_spec,
    weights=_weights,
    local=_local,
    extra="timm",
    notes="timm/NAME through timm.create_model; normalisation, input size, crop fraction and "
          "interpolation from its pretrained_cfg; weights from its Hugging Face Hub repository",
)
