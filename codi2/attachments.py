"""User attachments for the front ends: a file or an upload -> a validated :class:`Media`.

The command line, the chat REPL and the server all accept media the same way: the modality is
read from the content (magic bytes; a file's suffix only when the bytes say nothing), must be
image, audio or video, and must agree with the modality the user declared, if any. The item
is decoded and checked against :class:`~codi2.core.media.MediaLimits` before any model work,
so a bad file fails in milliseconds with an error that names it. No torch import here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codi2.core.media import MediaLimits, load_media, sniff_format, sniff_modality
from codi2.core.types import MEDIA_MODALITIES, Media
from codi2.errors import (
    MediaDecodeError,
    MediaError,
    MediaLimitError,
    MediaNotFoundError,
    MessageError,
    UnknownModalityError,
)


def load_attachment(
    source: bytes | str | Path,
    *,
    name: str,
    modality: str | None = None,
    limits: MediaLimits | None = None,
    video_frames: int | None = None,
    label: str | None = None,
) -> Media:
    """Read one attachment (a path, or the bytes of an upload) as image, audio or video.

    ``name`` labels it in errors ("media 'a' (cat.png): truncated PNG file"). Audio keeps its
    own sample rate here; the model's encoder resamples it later. ``video_frames`` keeps that
    many frames of a video, spread uniformly (bounding memory whatever the video's length).
    ``label`` replaces ``repr(name)`` in error messages (a server names the upload's file).
    """
    if modality is not None and modality not in MEDIA_MODALITIES:
        raise UnknownModalityError(
            f"media {name!r}: unknown modality {modality!r}; known: {', '.join(MEDIA_MODALITIES)}"
        )
    label = label or repr(name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaLimitError("empty (0 bytes)", item=label)
        sniffed = sniff_modality(data)
        fmt = sniff_format(data[:16])
    else:
        path = Path(source).expanduser()
        label = label if name == path.name or label != repr(name) else f"{label} ({path.name})"
        if not path.exists():
            raise MediaNotFoundError(f"no such file: {path}", item=label)
        if not path.is_file():
            raise MediaDecodeError(f"not a regular file: {path}", item=label)
        sniffed = sniff_modality(path)
        with path.open("rb") as fh:
            fmt = sniff_format(fh.read(16))
        source = path
    if modality is None and sniffed not in MEDIA_MODALITIES:
        what = "text" if sniffed == "text" else "an unknown format"
        raise UnknownModalityError(f"media {label}: not an image, audio or video file (it looks like {what})")
    animated_gif = modality == "video" and fmt == "gif"
    if modality is not None and fmt is not None and sniffed != modality and not animated_gif:
        raise MediaDecodeError(f"given as {modality}, but it is {sniffed} ({fmt})", item=label)
    modality = modality or sniffed
    frames = video_frames if modality == "video" else None
    try:
        return load_media(source, modality, name=name, sample_rate=None, limits=limits, video_frames=frames)
    except MediaError as exc:
        if label == repr(name) or exc.item is None:
            raise
        message = str(exc).removeprefix(f"media {exc.item}: ")
        raise type(exc)(message, item=label) from None


def parse_media_option(text: str) -> tuple[str, str]:
    """``NAME=PATH`` (the ``--media`` option) -> ``(name, path)``."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise MessageError(f"--media {text!r}: expected NAME=PATH, e.g. --media a=cat.png")
    return name.strip(), path


def placeholder_for(modality: str, used: set[str] | dict[str, Any]) -> str:
    """A fresh placeholder name for an attachment: image0, audio0, image1, ..."""
    k = 0
    while f"{modality}{k}" in used:
        k += 1
    return f"{modality}{k}"


__all__ = ["load_attachment", "parse_media_option", "placeholder_for"]
