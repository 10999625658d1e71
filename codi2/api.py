"""The integrator's entry point: ``codi2.load(name_or_dir)``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from codi2.errors import ConfigError


def preset_names() -> list[str]:
    """Model presets that ship with codi2 (``codi2/presets/*.json``)."""
    folder = resources.files("codi2") / "presets"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def preset_config(name: str) -> dict[str, Any]:
    """The configuration of a packaged preset."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown model {name!r}: not a directory and not a preset; presets: {', '.join(names) or 'none'}")
    return json.loads((resources.files("codi2") / "presets" / f"{name}.json").read_text())


def load(name_or_dir: str | Path, *, registry: Any = None, device: str | None = None, dtype: str | None = None) -> Any:
    """Load a model: a saved codi2 directory, or a preset name (components via the registry).

    >>> model = codi2.load("path/to/checkpoint")          # doctest: +SKIP
    >>> answer = model.generate("What is in {a}?", media={"a": "cat.png"})  # doctest: +SKIP
    """
    from codi2.core.model import CoDi2Model

    path = Path(name_or_dir)
    if path.is_dir():
        model = CoDi2Model.from_pretrained(path, registry)
    else:
        model = CoDi2Model.from_config(preset_config(str(name_or_dir)), registry)
    if dtype is not None:
        import torch

        model = model.to(getattr(torch, dtype))
    return model.to(device) if device else model
