"""Shared pieces of media loading: limits, container sniffing, reading sources, labels."""

from __future__ import annotations

import base64
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codi2.core.modality import resolve_modalities
from codi2.core.types import Media
from codi2.errors import Codi2Error, MediaDecodeError, MediaLimitError, MediaNotFoundError

#: fps given to videos that arrive as bare frames (zeroscope renders at 8 fps)
DEFAULT_VIDEO_FPS = 8.0


@dataclass(frozen=True)
class MediaLimits:
    """Bounds that loading enforces, so a bad or hostile input fails early and clearly.

    ``max_bytes`` applies to encoded input (files, bytes, data URIs); arrays are bounded by
    the pixel, duration and frame limits. ``max_video_frames`` bounds the frames returned
    (after subsampling), which is what decoded memory scales with.

    Audio is checked from the file's header before decoding: sample rate, channels, duration
    and ``max_audio_samples`` (decoded samples, all channels together: 4 bytes each). Video and
    GIF decoding is bounded by frames, pixels, decoded pixels (``max_video_decoded_pixels``,
    summed over every frame ffmpeg or Pillow decodes, kept or not) and wall time
    (``max_decode_seconds``; ffmpeg is killed when it runs out).
    """

    max_bytes: int = 50 * 2**20
    max_image_pixels: int = 40_000_000
    min_image_side: int = 1
    min_audio_seconds: float = 0.05
    max_audio_seconds: float = 600.0
    min_audio_sample_rate: int = 1000
    max_audio_sample_rate: int = 384_000
    max_audio_channels: int = 8
    max_audio_samples: int = 64_000_000
    max_video_frames: int = 1024
    max_video_pixels: int = 1920 * 1088
    max_video_seconds: float = 600.0
    max_video_decoded_pixels: int = 4_000_000_000
    max_decode_seconds: float = 120.0


_DEFAULT_LIMITS = MediaLimits()

# --- sniffing -------------------------------------------------------------------------------


def sniff_format(head: bytes) -> str | None:
    """The container format of a byte string from its first bytes ("png", "wav", "mp4", ...)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM") and head[6:10] == b"\0\0\0\0":  # reserved fields are zero
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF":
        return {b"WAVE": "wav", b"WEBP": "webp", b"AVI ": "avi"}.get(head[8:12])
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "m4a" if brand in (b"M4A ", b"M4B ") else "mov" if brand == b"qt  " else "mp4"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "webm"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut in two at the end
            return False
    return bool(head) and all(b >= 32 or b in b"\t\r\n" for b in head)


# --- sources --------------------------------------------------------------------------------


def _label(name: str | None, filename: str | None, modality: str) -> str:
    if name and filename and name != filename:
        return f"{name!r} ({filename})"
    if name or filename:
        return repr(name or filename)
    return f"<{modality}>"


def _is_tensor(obj: Any) -> bool:
    # Checked by module name so that loading media never imports torch.
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def _tensor_to_numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if not t.dtype.is_floating_point:
        return t.numpy()
    return t.float().numpy()  # float16/bfloat16 have no (or no exact) numpy twin


def _read_encoded(source: Any, item: str, limits: MediaLimits) -> bytes:
    """Bytes of a path, bytes object or ``data:`` URI, with the existence and size checks."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, str) and source.startswith("data:"):
        header, _, payload = source.partition(",")
        try:
            data = (
                base64.b64decode(payload, validate=True)
                if header.endswith(";base64")
                else payload.encode()
            )
        except ValueError as e:
            raise MediaDecodeError(f"bad base64 in data URI: {e}", item=item) from e
    else:
        path = Path(source)
        try:
            exists = path.exists()
        except (OSError, ValueError) as e:  # name too long, NUL byte, ...
            raise MediaNotFoundError(f"not a usable path: {e}", item=item) from e
        if not exists:
            hint = " (URLs are not fetched; download first)" if "://" in str(source) else ""
            raise MediaNotFoundError(f"no such file: {path}{hint}", item=item)
        if not path.is_file():
            raise MediaDecodeError(f"not a regular file: {path}", item=item)
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise MediaLimitError(
                f"file is {size} bytes, over the {limits.max_bytes}-byte limit", item=item
            )
        try:
            data = path.read_bytes()
        except OSError as e:
            raise MediaDecodeError(f"cannot read {path}: {e.strerror or e}", item=item) from e
    if not data:
        raise MediaLimitError("empty (0 bytes)", item=item)
    if len(data) > limits.max_bytes:
        raise MediaLimitError(
            f"{len(data)} bytes, over the {limits.max_bytes}-byte limit", item=item
        )
    return data


def _what_it_is(data: bytes, expected: str) -> str:
    """The hint in a reader's refusal: "; it looks like audio (wav)" when the registered
    modalities recognise the bytes as another modality's, "" when as ``expected``'s."""
    fmt = sniff_format(data[:16])
    try:
        spec = resolve_modalities().sniff(data)
    except Codi2Error:  # nothing (or several) recognise it
        return f"; it looks like {fmt}" if fmt else "; unknown format"
    if spec.name == expected:
        return ""
    return f"; it looks like {spec.name}" + (f" ({fmt})" if fmt else "")


def _is_encoded(source: Any) -> bool:
    return isinstance(source, (str, Path, bytes, bytearray, memoryview))


def _unwrap(
    source: Any, modality: str, name: str | None, rate: str | None = None
) -> tuple[Any, str | None, dict, Any]:
    """(payload, name, meta, rate) for a Media source; checks it is of ``modality``. ``rate``
    names the Media field that holds the caller's rate ("sample_rate", "fps")."""
    if not isinstance(source, Media):
        return source, name, {}, None
    name = name or source.name
    if source.modality != modality:
        raise MediaDecodeError(
            f"is {_article(source.modality)} item, expected {modality}",
            item=_label(name, None, modality),
        )
    return source.data, name, dict(source.meta), getattr(source, rate) if rate else None


def _article(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _is_rate_pair(source: Any) -> bool:
    return isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], numbers.Real)


def _filename(source: Any) -> str | None:
    if not isinstance(source, (str, Path)) or str(source).startswith("data:"):
        return None
    name = Path(source).name
    return name if len(name) <= 80 else name[:77] + "..."
