"""Reading, validating and writing media items.

:func:`load_media` turns whatever a caller holds — a path, bytes, a ``data:`` URI, a PIL image,
a numpy array, a torch tensor, or a :class:`~codi2.core.types.Media` — into a validated
``Media`` in the one raw form every component agrees on (see ``Media``), or raises a typed
error from :mod:`codi2.errors` that names the item:

- :class:`MediaNotFoundError`: the path does not exist;
- :class:`MediaDecodeError`: unreadable, truncated, unsupported, wrong shape/dtype, NaN audio;
- :class:`MediaLimitError`: empty, too large (bytes/pixels/frames/sample rate), too short or
  too long; :class:`MediaTimeoutError` (one of them): decoding ran out of time or was
  cancelled (see :func:`decode_deadline`);
- :class:`UnknownModalityError`: a modality other than image, audio, video, text.

:func:`save_media` writes an item (the suffix picks the format), :func:`media_to_bytes` encodes
one for a server, :func:`sniff_format` names a file's container format. These are the readers
and writers of the built-in modalities; which modality a file is, its suffixes and MIME types
are facts of the modality specs (:mod:`codi2.core.modality`, ``codi2/plugins/modalities``).

Decoders: Pillow (images), soundfile (WAV/FLAC/OGG/MP3), the ffmpeg binary that
imageio-ffmpeg ships (video). They import lazily; this module never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codi2.core.media._audio import load_audio
from codi2.core.media._common import (
    _DEFAULT_LIMITS,
    DEFAULT_VIDEO_FPS,
    MediaLimits,
    _filename,
    _label,
    _looks_like_text,
    _read_encoded,
    _unwrap,
    sniff_format,
)
from codi2.core.media._deadline import decode_deadline
from codi2.core.media._image import load_image, open_image
from codi2.core.media._video import load_video
from codi2.core.media._write import media_to_bytes, save_media
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, UnknownModalityError

__all__ = [
    "DEFAULT_VIDEO_FPS",
    "MediaLimits",
    "decode_deadline",
    "load_audio",
    "load_image",
    "load_media",
    "load_text",
    "load_video",
    "looks_like_text",
    "media_to_bytes",
    "open_image",
    "read_encoded",
    "save_media",
    "sniff_format",
]


def load_media(
    source: Any,
    modality: str,
    *,
    name: str | None = None,
    sample_rate: int | None = 16000,
    limits: MediaLimits | None = None,
    video_frames: int | None = None,
    fps: float | None = None,
) -> Media:
    """Read and validate one media item of ``modality``.

    ``source``: a path (str or Path), bytes, a ``data:`` URI, a PIL image, a numpy array, a
    torch tensor, a ``(array, rate)`` tuple (audio: sample rate, video: fps), a list of frames
    (video) or a ``Media`` (validated again; audio is resampled when its rate differs).
    Audio is mixed to mono and resampled to ``sample_rate`` (``None`` keeps the file's rate);
    a bare audio array is taken to be at ``sample_rate`` already. ``video_frames`` picks that
    many frames uniformly. For ``text`` a str is the text itself and a Path is read as UTF-8.
    ``name`` labels the item in errors (default: the file name).
    """
    limits = limits or _DEFAULT_LIMITS
    if modality == "image":
        return load_image(source, name=name, limits=limits)
    if modality == "audio":
        return load_audio(source, name=name, sample_rate=sample_rate, limits=limits)
    if modality == "video":
        return load_video(source, name=name, limits=limits, video_frames=video_frames, fps=fps)
    if modality == "text":
        return load_text(source, name=name, limits=limits)
    raise UnknownModalityError(
        f"codi2.core.media reads image, audio, video and text, not {modality!r}; "
        "other modalities are read by their spec (Modalities.load)"
    )


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes read as UTF-8 text without control characters."""
    return _looks_like_text(head)


def read_encoded(source: Any, *, item: str, limits: MediaLimits | None = None) -> bytes:
    """The bytes of a path, bytes object or ``data:`` URI, with the existence, emptiness and
    size checks every modality needs (for modality plugins that decode their own files)."""
    return _read_encoded(source, item, limits or _DEFAULT_LIMITS)


def load_text(source: Any, *, name: str | None = None, limits: MediaLimits | None = None) -> Media:
    """Text as a ``str``: a str is the text itself; a Path or bytes are decoded as UTF-8."""
    limits = limits or _DEFAULT_LIMITS
    source, name, meta, _ = _unwrap(source, "text", name)
    item = _label(name, _filename(source) if isinstance(source, Path) else None, "text")
    if isinstance(source, str):
        text = source
    elif isinstance(source, (Path, bytes, bytearray, memoryview)):
        try:
            text = _read_encoded(source, item, limits).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MediaDecodeError(f"not UTF-8 text: {e}", item=item) from e
    else:
        raise MediaDecodeError(
            f"unsupported source type {type(source).__name__} for text", item=item
        )
    return Media("text", text, name=name, meta=meta)
