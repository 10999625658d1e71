"""Example prompts a chat page offers on an empty conversation.

A model directory may hold ``examples.json``::

    {"examples": [{"title": "edit an image", "prompt": "Make {a} purple.",
                   "media": {"a": "examples/green_square.png"}}]}

Each prompt is in placeholder form; ``media`` names a file (inside the model directory) per
placeholder. ``GET /v1/examples`` returns them with each file inline as a ``data:`` URI, its
modality recognised from its content. The shipped toy model has a few, with sample media of
its world; a model without the file has none.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from codi2.errors import Codi2Error

log = logging.getLogger("codi2.server")

MAX_EXAMPLES = 12
MAX_EXAMPLE_BYTES = 1 << 20  # per file: examples are small samples


def load_examples(model: Any, modalities: Any) -> list[dict[str, Any]]:
    """The served model's examples (``[]`` when it has none or they cannot be read)."""
    folder = getattr(getattr(model, "source", None), "path", None)  # where it was loaded from
    if folder is None or not (Path(folder) / "examples.json").is_file():
        return []
    folder = Path(folder).resolve()
    try:
        listed = json.loads((folder / "examples.json").read_text(encoding="utf-8"))["examples"]
        return [_example(entry, folder, modalities) for entry in listed[:MAX_EXAMPLES]]
    except (OSError, ValueError, KeyError, TypeError, Codi2Error) as exc:  # the page then shows none; the log says why
        log.warning("examples.json of %s is unusable: %s", folder, exc)
        return []


def _example(entry: dict[str, Any], folder: Path, modalities: Any) -> dict[str, Any]:
    media = []
    for name, relative in (entry.get("media") or {}).items():
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder) or not path.is_file() or path.stat().st_size > MAX_EXAMPLE_BYTES:
            raise ValueError(f"media {name!r}: {relative!r} is not a small file inside the model directory")
        data = path.read_bytes()
        spec = modalities.sniff(data, item=repr(relative))
        media.append({"name": name, "modality": spec.name, "display": spec.display, "file_name": path.name,
                      "data": f"data:{spec.mime_type};base64,{base64.b64encode(data).decode('ascii')}"})  # fmt: skip
    return {"title": str(entry.get("title") or entry["prompt"]), "prompt": str(entry["prompt"]), "media": media}


__all__ = ["load_examples"]
