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
- :class:`UnknownModalityError`: a modality that is not registered.

:func:`load_media`, :func:`save_media` (the suffix picks the format) and :func:`media_to_bytes`
work for any registered modality by asking its spec (:mod:`codi2.core.modality`). The rest of
this package is the codec code the built-in modalities call (``codi2/plugins/modalities``):
``load_image``/``image_bytes``, ``load_audio``/``audio_bytes``, ``load_video``/``video_bytes``,
``load_text``, and :func:`sniff_format`, which names a file's container format. Which
modality a file is, its suffixes, MIME types and the formats it reads and writes are facts of
the modality's registration, kept nowhere else.

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
from codi2.core.media._write import (
    audio_bytes,
    image_bytes,
    media_to_bytes,
    save_media,
    video_bytes,
)
from codi2.core.modality import Modalities, resolve_modalities
from codi2.core.types import Media
from codi2.errors import MediaDecodeError

__all__ = [
    "DEFAULT_VIDEO_FPS",
    "MediaLimits",
    "audio_bytes",
    "decode_deadline",
    "image_bytes",
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
    "video_bytes",
]


def load_media(
    source: Any,
    modality: str | None = None,
    *,
    name: str | None = None,
    limits: MediaLimits | None = None,
    modalities: Modalities | None = None,
    **options: Any,
) -> Media:
    """Read and validate one item of ``modality`` (inferred from the source when None) with
    its registered spec (``modalities``: default the registered ones).

    ``source``: a path (str or Path), bytes, a ``data:`` URI, or an in-memory form the
    modality takes — for the built-ins a PIL image, a numpy array, a torch tensor, a
    ``(array, rate)`` tuple (audio: sample rate, video: fps), a list of frames (video), a str
    (text) or a ``Media`` (validated again). ``options`` go to the modality's reader; the
    built-in ones take ``sample_rate`` (audio: resampled to it, default 16000; ``None`` keeps
    the file's rate), ``video_frames`` (that many frames, picked uniformly) and ``fps``.
    ``name`` labels the item in errors (default: the file name).
    """
    return resolve_modalities(modalities).load(source, modality, name=name, limits=limits, **options)


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
