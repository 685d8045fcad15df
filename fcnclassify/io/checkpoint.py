"""Weights files that cannot run code: safetensors, or ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["load_state_dict", "save_weights", "load_weights", "read_metadata", "HUB_PREFIX",
           "is_hub_reference", "hub_cached", "hub_file", "hub_config"]

HUB_PREFIX = "hf-hub:"
_HUB_REFERENCE = re.compile(r"hf-hub:([\w.-]+/[\w.-]+)(?:@([\w./-]+?))?(?:/([\w./-]+))?")
_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # safetensors first: no pickle at all
_HUB_TIMEOUT_S = 10.0

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "weights")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, on the CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled code. A checkpoint that wraps its state
    dict (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped, and a ``module.`` prefix left by
    DataParallel is removed.

    Raises:
        ValueError: one line naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            # timm's training checkpoints carry their argparse.Namespace of arguments: a plain
            # attribute bag, allowed; any other class or function is still refused
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable weights file ({reason[:200]})") from e
    except Exception as e:  # pickle errors, KeyError etc. for files that are not checkpoints
        if "unsupported global" in str(e).lower():  # a class or function the file would import
            raise ValueError(f"{path}: refused: it holds objects other than tensors, which could run "
                             "code when loaded (torch.load weights_only=True)") from e
        raise ValueError(f"{path}: not a readable weights file ({type(e).__name__})") from e
    for key in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if isinstance(state, nn.Module) or not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path}: expected a state dict of tensors but got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def save_weights(module: nn.Module, path: str | os.PathLike, *, metadata: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``module``'s state dict as safetensors, atomically, with JSON-able ``metadata``.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force (overwrite=True) to replace it")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    # the mode open() gives a new file (0o666 less the umask), read without touching the umask
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        save_file(state, str(tmp), metadata=meta)
        os.chmod(tmp, mode)  # safetensors swaps in its own temporary file, created 0o600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata written by :func:`save_weights` (empty for other files).

    Values are parsed as JSON; one that does not parse is kept as the string written.

    Raises:
        ValueError: one line naming the file, when it is not a readable safetensors file.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, RecursionError):  # not JSON, or nested too deep to parse: as written
            out[k] = v
    return out


def load_weights(module: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                 name: str | None = None) -> nn.Module:
    """Load a weights file, or a state dict already read from one, into ``module`` (strict).

    Any key or shape mismatch is one clear line that starts with ``name`` (default: the path).
    """
    if isinstance(source, Mapping):
        state, path = source, name or "state dict"
    else:
        state, path = load_state_dict(source), name or source
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{path}: keys do not match the model ({len(missing)} missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    for k in own:  # the module's order: the first mismatching layer is named
        v = state[k]
        if own[k].shape != v.shape:
            raise ValueError(
                f"{path}: '{k}' has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)} (wrong --num-classes or wrong model?)"
            )
    module.load_state_dict(state)
    return module


def is_hub_reference(text: object) -> bool:
    """Whether ``text`` is a Hugging Face Hub reference ``hf-hub:ORG/NAME[@REVISION][/FILE]``."""
    return isinstance(text, str) and text.startswith(HUB_PREFIX)


def _parse_hub(reference: str) -> tuple[str, str | None, str | None]:
    match = _HUB_REFERENCE.fullmatch(reference)
    if match is None:
        raise ValueError(f"expected a Hugging Face Hub reference like hf-hub:timm/resnet18.a1_in1k "
                         f"(hf-hub:ORG/NAME[@REVISION][/FILE]) but got {reference!r}")
    return match.group(1), match.group(2), match.group(3)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_get(reference: str, repo: str, filename: str, revision: str | None) -> Path | None:
    """One file of a Hub repository: from the Hugging Face cache, else downloaded (unless
    ``HF_HUB_OFFLINE`` is set); None when the repository has no such file."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ValueError(f"{reference}: Hugging Face Hub references need huggingface_hub: "
                         "pip install 'fcnclassify[timm]'") from e
    try:  # the cache, without any network attempt
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and kin: not cached
        pass
    if _hub_offline():
        return None
    _hub_reachable(reference)  # huggingface_hub retries an unreachable host for ~25 s: ask once
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_HUB_TIMEOUT_S)
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings: the error below says it in one line
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, etag_timeout=_HUB_TIMEOUT_S))
    except Exception as e:
        kind = type(e).__name__
        if "EntryNotFound" in kind and "Local" not in kind:  # the repository has no such file
            return None
        reason = (str(e).strip().splitlines() or [kind])[0][:160]
        raise ValueError(f"{reference}: cannot download {filename} from the Hugging Face Hub "
                         f"({kind}: {reason}); run once online, or set HF_HUB_OFFLINE=1 to use "
                         "the cache only, or pass --weights FILE") from e
    finally:
        socket.setdefaulttimeout(previous)
        hub_logger.setLevel(level)


def _hub_reachable(reference: str) -> None:
    """One connection attempt to the Hub's host (10 s at most), before huggingface_hub's retries.

    Raises:
        ValueError: the host cannot be reached, with what to do instead.
    """
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=_HUB_TIMEOUT_S).close()
    except OSError as e:
        raise ValueError(f"{reference}: not in the Hugging Face cache and {host} cannot be reached "
                         f"({e.strerror or type(e).__name__}): run once online, or pass --weights "
                         "FILE") from e


def hub_cached(reference: str) -> bool:
    """Whether the reference's weights file is in the Hugging Face cache (no network)."""
    repo, revision, filename = _parse_hub(reference)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(isinstance(try_to_load_from_cache(repo, name, revision=revision), str)
               for name in ((filename,) if filename else _HUB_WEIGHTS))


def hub_file(reference: str) -> Path:
    """The local path of a Hub reference's weights file (``model.safetensors``, else
    ``pytorch_model.bin``, or the ``/FILE`` the reference names), from the Hugging Face cache when it
    is there; with ``HF_HUB_OFFLINE=1`` nothing is downloaded.

    Raises:
        ValueError: one line: a malformed reference, no weights file, or a failed download.
    """
    repo, revision, filename = _parse_hub(reference)
    for name in (filename,) if filename else _HUB_WEIGHTS:
        path = _hub_get(reference, repo, name, revision)
        if path is not None:
            return path
    wanted = filename or " or ".join(_HUB_WEIGHTS)
    if _hub_offline():
        from huggingface_hub import constants

        raise ValueError(f"{reference}: {wanted} is not in the Hugging Face cache "
                         f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: run once online, "
                         "or pass --weights FILE")
    raise ValueError(f"{reference}: expected {wanted} in the repository but found none")


def hub_config(reference: str) -> dict:
    """The repository's ``config.json`` (timm writes ``architecture``, ``num_classes``,
    ``label_names`` and ``pretrained_cfg`` there), or ``{}`` when it has none."""
    repo, revision, _ = _parse_hub(reference)
    path = _hub_get(reference, repo, "config.json", revision)
    if path is None:
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{reference}: config.json is not readable JSON ({e})") from e
    return config if isinstance(config, dict) else {}
