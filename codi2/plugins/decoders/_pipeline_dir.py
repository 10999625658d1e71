"""Checks on a local diffusers pipeline folder, shared by the decoder plugins (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

from codi2.errors import ComponentLoadError


def check_pipeline_dir(name: str, model: str) -> None:
    """For a local directory, check ``model_index.json`` and every component folder it names,
    so that a missing part is reported by name. Hub ids are left to diffusers."""
    root = Path(model).expanduser()
    if not root.is_dir():
        return
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise ComponentLoadError(
            f"decoder {name!r}: {root} has no model_index.json (not a diffusers pipeline folder)"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ComponentLoadError(
            f"decoder {name!r}: {index_path}: invalid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[-1] is None:
            continue
        if not (root / component).is_dir():
            raise ComponentLoadError(
                f"decoder {name!r}: component {component!r} ({spec[-1]}) is missing: no folder {root / component}"
            )
