"""User attachments for the front ends: a file or an upload -> a validated :class:`Media`.

The command line, the chat REPL and the server all accept media the same way: the modality is
read from the content (magic bytes; a file's suffix only when the bytes say nothing), must be
image, audio or video, and must agree with the modality the user declared, if any. The item
is decoded and checked against :class:`~codi2.core.media.MediaLimits` before any model work,
so a bad file fails in milliseconds with an error that names it. No torch import here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi2.core.media import MediaLimits
from codi2.core.modality import resolve_modalities
from codi2.core.types import Media
from codi2.errors import (
    Codi2Error,
    MediaDecodeError,
    MediaError,
    MediaLimitError,
    MediaNotFoundError,
    MessageError,
    UnknownModalityError,
)

if TYPE_CHECKING:
    from codi2.core.modality import Modalities


def load_attachment(
    source: bytes | str | Path,
    *,
    name: str,
    modality: str | None = None,
    limits: MediaLimits | None = None,
    video_frames: int | None = None,
    label: str | None = None,
    modalities: Modalities | None = None,
) -> Media:
    """Read one attachment (a path, or the bytes of an upload) as an item of a registered
    media modality (image, audio, video, or one a plugin adds).

    ``name`` labels it in errors ("media 'a' (cat.png): truncated PNG file"). Audio keeps its
    own sample rate here; the model's encoder resamples it later. ``video_frames`` keeps that
    many frames of a video, spread uniformly (bounding memory whatever the video's length).
    ``label`` replaces ``repr(name)`` in error messages (a server names the upload's file).
    ``modalities``: the collection to read with (default: the registered modalities).
    """
    modalities = resolve_modalities(modalities)
    media_kinds = ", ".join(modalities.media)
    if modality is not None and modality not in modalities.media:
        raise UnknownModalityError(f"media {name!r}: unknown modality {modality!r}; known: {media_kinds}")
    label = label or repr(name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = bytes(source)
        if not source:
            raise MediaLimitError("empty (0 bytes)", item=label)
    else:
        path = Path(source).expanduser()
        label = label if name == path.name or label != repr(name) else f"{label} ({path.name})"
        if not path.exists():
            raise MediaNotFoundError(f"no such file: {path}", item=label)
        if not path.is_file():
            raise MediaDecodeError(f"not a regular file: {path}", item=label)
        source = path
    try:
        sniffed = modalities.sniff(source, item=label)
    except Codi2Error:
        if modality is None:
            raise
        sniffed = None  # the user said what it is; its own reader judges it
    if modality is None and sniffed.is_text:
        names = modalities.media
        kinds = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise UnknownModalityError(f"media {label}: not {'an' if kinds[0] in 'aeiou' else 'a'} {kinds} file (it looks like text)")
    spec = modalities.get(modality) if modality else sniffed
    # A file another modality claims, given as one that knows its own files (a magic test), is
    # refused unless that one's reader takes it anyway (video reads an animated GIF); a named
    # modality without a magic test (depth, thermal maps stored as PNG) is judged by its reader.
    claimed_by_other = spec.sniff is not None and sniffed is not None and sniffed.name != spec.name
    try:
        return spec.load(source, name=name, limits=limits, sample_rate=None, video_frames=video_frames)
    except MediaError as exc:
        if claimed_by_other and isinstance(exc, MediaDecodeError):
            raise MediaDecodeError(f"given as {spec.name}, but it is {sniffed.name}", item=label) from None
        if label == repr(name) or exc.item is None:
            raise
        message = str(exc).removeprefix(f"media {exc.item}: ")
        raise type(exc)(message, item=label) from None


_MODALITY_PREFIX = re.compile(r"([a-z][a-z0-9_\-]*):(.+)$")


def parse_media_option(text: str) -> tuple[str, str, str | None]:
    """``NAME=PATH`` or ``NAME=MODALITY:PATH`` (the ``--media`` option) -> ``(name, path,
    modality or None)``. The prefix form names the modality of a file whose suffix several
    modalities share (``--media d=depth:scan.npy``); a path that exists as written wins."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise MessageError(f"--media {text!r}: expected NAME=PATH or NAME=MODALITY:PATH, e.g. --media a=cat.png")
    match = _MODALITY_PREFIX.match(path)
    if match and not Path(path).exists():
        return name.strip(), match.group(2), match.group(1)
    return name.strip(), path, None


def placeholder_for(modality: str, used: set[str] | dict[str, Any]) -> str:
    """A fresh placeholder name for an attachment: image0, audio0, image1, ..."""
    k = 0
    while f"{modality}{k}" in used:
        k += 1
    return f"{modality}{k}"


__all__ = ["load_attachment", "parse_media_option", "placeholder_for"]
