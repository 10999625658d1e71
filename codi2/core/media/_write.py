"""Writing media: files whose suffix picks the format, and bytes for servers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from codi2.core.media._audio import _audio_samples
from codi2.core.media._common import _SUFFIX_FORMAT, DEFAULT_VIDEO_FPS
from codi2.core.media._image import _pixels
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, UnknownModalityError

_WRITABLE = {
    "image": ("png", "jpeg", "webp", "bmp", "tiff", "gif"),
    "audio": ("wav", "flac", "ogg"),
    "video": ("mp4", "gif"),
    "text": ("txt",),
}


def save_media(media: Media, path: str | Path, *, audio_subtype: str = "PCM_16") -> Path:
    """Write ``media`` to ``path`` and return the path written.

    The suffix picks the format — image: .png .jpg .webp .bmp .tiff .gif; audio: .wav
    (``audio_subtype`` "PCM_16" or "FLOAT"), .flac, .ogg; video: .mp4 (H.264, odd sizes
    padded to even) or .gif; text: .txt. A missing or unknown suffix gets the modality's
    default (.png, .wav, .mp4, .txt) appended. Parent folders are created.
    """
    if media.modality not in _WRITABLE:
        raise UnknownModalityError(
            f"codi2.core.media writes {', '.join(_WRITABLE)}, not {media.modality!r}; other modalities are written by their spec"
        )
    path = Path(path)
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt not in _WRITABLE[media.modality]:
        fmt = _WRITABLE[media.modality][0]
        path = path.with_name(path.name + "." + fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    item = media.label
    if media.modality == "text":
        path.write_text(str(media.data), encoding="utf-8")
    elif media.modality == "image":
        from PIL import Image

        image = Image.fromarray(_pixels(media.data, item, video=False))
        image.save(path, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))
    elif media.modality == "audio":
        import soundfile as sf

        if not media.sample_rate:
            raise MediaDecodeError("audio without a sample_rate cannot be saved", item=item)
        samples = np.clip(_audio_samples(media.data, item), -1.0, 1.0)
        subtype = {"flac": "PCM_16", "ogg": "VORBIS"}.get(fmt, audio_subtype)
        sf.write(str(path), samples, int(media.sample_rate), format=fmt.upper(), subtype=subtype)
    else:
        _write_video(
            _pixels(media.data, item, video=True), float(media.fps or DEFAULT_VIDEO_FPS), path, fmt
        )
    return path


def _write_video(frames: np.ndarray, fps: float, path: Path, fmt: str) -> None:
    if fmt == "gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
        return
    import imageio_ffmpeg

    # H.264 in yuv420p needs even sides: replicate the last row/column rather than rescale.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    writer = imageio_ffmpeg.write_frames(
        str(path), (frames.shape[2], frames.shape[1]), fps=fps, codec="libx264", quality=8,
        macro_block_size=1, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )  # fmt: skip
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def media_to_bytes(media: Media, format: str | None = None) -> bytes:
    """Encode ``media`` as bytes ("png", "jpeg", "wav", "flac", "mp4", "gif", "txt"; default:
    the modality's first)."""
    if media.modality not in _WRITABLE:
        raise UnknownModalityError(
            f"codi2.core.media writes {', '.join(_WRITABLE)}, not {media.modality!r}; other modalities are written by their spec"
        )
    fmt = (format or _WRITABLE[media.modality][0]).lower().lstrip(".")
    fmt = {"jpg": "jpeg"}.get(fmt, fmt)
    if fmt not in _WRITABLE[media.modality]:
        raise MediaDecodeError(
            f"cannot encode {media.modality} as {fmt!r}; choose from {_WRITABLE[media.modality]}",
            item=media.label,
        )
    with tempfile.TemporaryDirectory(prefix="codi2-encode-") as tmp:
        suffix = {"jpeg": "jpg"}.get(fmt, fmt)
        return save_media(media, Path(tmp) / f"item.{suffix}").read_bytes()
