"""Feature networks the metrics run: DINO ViT-S/16, CLIP, PANNs CNN14.

Each loads from a hub id *or* a local directory/file through one path, offline by default
(``local_files_only=True``: a hub id works only if its files are already in the local Hugging
Face cache). Loaded networks are cached per process by (kind, source, device), so DINO, CLIP-I
and CLIP-T in one run share weights; :func:`clear_cache` drops them.

Submodules import torch; this package's ``__init__`` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_CACHE: dict[tuple, Any] = {}


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` once per ``key`` for the life of the process (or until :func:`clear_cache`)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def clear_cache() -> None:
    """Forget every loaded feature network (frees their memory once nothing else holds them)."""
    _CACHE.clear()


def resolve_device(device: str | None) -> str:
    """``device`` or, when ``None``, ``"cuda"`` if available else ``"cpu"``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def hub_error_hint(source: str) -> str:
    """How to make ``source`` loadable offline — appended to load errors."""
    return (
        f"pass a local directory, or fetch {source!r} into the Hugging Face cache once "
        f"(`huggingface-cli download {source}`), or allow downloads (allow_download=true)"
    )
