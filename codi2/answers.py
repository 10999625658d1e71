"""Answers as files and JSON, for the command line, the chat REPL and the server.

:meth:`Answer.save(out_dir) <codi2.core.model.Answer.save>` writes the media with predictable
names (``output0.png``, ``output1.wav``, ``output2.mp4``: one counter over all media, in the
order the model produced them). :func:`answer_to_dict` describes an answer as JSON::

    answer = model.generate("Draw {a} in blue.", media={"a": "square.png"}, seed=0)
    print(json.dumps(answer_to_dict(answer, "out")))     # writes out/output0.png, ...

This module imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi2.core.modality import resolve_modalities
from codi2.core.types import Media

if TYPE_CHECKING:
    from codi2.core.modality import Modalities


def media_summary(media: Media, modalities: Modalities | None = None) -> dict[str, Any]:
    """Modality, name, MIME type and size facts of one item (no data), as its modality
    describes them."""
    return resolve_modalities(modalities).summary(media)


def answer_to_dict(answer: Any, out_dir: str | Path | None = None, *, stem: str = "output",
                   modalities: Modalities | None = None) -> dict[str, Any]:
    """``{"text", "finish_reason", "tokens", "parts", "media"}`` for an answer.

    With ``out_dir`` the media are written there first (``{stem}0.png`` ...) and each media
    entry carries its ``path``; without it, entries only describe the items.
    """
    paths = answer.save(out_dir, stem, modalities) if out_dir is not None else [None] * len(answer.media)
    media, parts, k = [], [], 0
    for part in answer.parts:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        entry = media_summary(part, modalities)
        if paths[k] is not None:
            entry["path"] = str(paths[k])
        k += 1
        media.append(entry)
        parts.append(entry)
    return {
        "text": answer.text,
        "finish_reason": answer.finish_reason,
        "tokens": answer.tokens,
        "parts": parts,
        "media": media,
    }


def answer_to_json(answer: Any, out_dir: str | Path | None = None, *, stem: str = "output", indent: int | None = None) -> str:
    """:func:`answer_to_dict` as a JSON string."""
    return json.dumps(answer_to_dict(answer, out_dir, stem=stem), indent=indent)


__all__ = ["answer_to_dict", "answer_to_json", "media_summary"]
