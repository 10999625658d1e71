"""Writing media: the built-in encoders (image, audio, video bytes in a named container
format) and, for any registered modality, files and bytes through its spec."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from codi2.core.media._audio import _audio_samples
from codi2.core.media._common import DEFAULT_VIDEO_FPS
from codi2.core.media._image import _pixels
from codi2.core.modality import Modalities, resolve_modalities
from codi2.core.types import Media
from codi2.errors import MediaDecodeError

# --- any registered modality ------------------------------------------------------------------


def save_media(media: Media, path: str | Path, *, modalities: Modalities | None = None) -> Path:
    """Write ``media`` with its modality's writer and return the path written.

    The suffix picks one of the formats the modality writes (its spec's ``writes``; image:
    .png .jpg .webp .bmp .tiff .gif, audio: .wav .flac .ogg, video: .mp4 .gif, text: .txt);
    any other suffix gets the modality's default appended (``odd.xyz`` -> ``odd.xyz.png``).
    Parent folders are created. ``modalities``: default the registered ones.
    """
    return resolve_modalities(modalities).save(media, path)


def media_to_bytes(media: Media, format: str | None = None, *, modalities: Modalities | None = None) -> bytes:
    """Encode ``media`` as the file content of ``format`` (a suffix its modality writes, with
    or without the dot: "png", "jpg", "wav", "flac", "mp4", "gif", ...; default: the
    modality's own, ``spec.encode``)."""
    spec = resolve_modalities(modalities).get(media.modality, where=media.label)
    if format is None:
        return spec.encode(media)
    suffix = "." + format.lower().lstrip(".")
    if suffix not in spec.writes:
        choices = ", ".join(w.lstrip(".") for w in spec.writes)
        raise MediaDecodeError(f"cannot encode {media.modality} as {format!r}; choose from {choices}", item=media.label)
    if suffix == spec.suffix:
        return spec.encode(media)
    with tempfile.TemporaryDirectory(prefix="codi2-encode-") as tmp:
        return spec.write(media, Path(tmp) / f"item{suffix}").read_bytes()


# --- the built-in encoders (called by the image, audio and video modalities) ------------------


def image_bytes(media: Media, fmt: str = "png") -> bytes:
    """An image (uint8 ``[H, W, 3]`` or any layout ``load_image`` takes) as ``fmt`` bytes
    (a Pillow format: "png", "jpeg", "webp", "bmp", "tiff", "gif"; JPEG at quality 95)."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(_pixels(media.data, media.label, video=False))
    image.save(buffer, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))
    return buffer.getvalue()


def audio_bytes(media: Media, fmt: str = "wav", *, subtype: str | None = None) -> bytes:
    """Audio clipped to [-1, 1] as ``fmt`` bytes (a soundfile format: "wav", "flac", "ogg").
    ``subtype``: the sample encoding (default 16-bit PCM, Vorbis for OGG; "FLOAT" keeps WAV
    samples exact)."""
    import soundfile as sf

    if not media.sample_rate:
        raise MediaDecodeError("audio without a sample_rate cannot be saved", item=media.label)
    samples = np.clip(_audio_samples(media.data, media.label), -1.0, 1.0)
    subtype = subtype or ("VORBIS" if fmt == "ogg" else "PCM_16")
    buffer = io.BytesIO()
    sf.write(buffer, samples, int(media.sample_rate), format=fmt.upper(), subtype=subtype)
    return buffer.getvalue()


def video_bytes(media: Media, fmt: str = "mp4") -> bytes:
    """Frames as ``fmt`` bytes: "mp4" (H.264, odd sides padded to even) or "gif" (lossless
    palette frames through Pillow)."""
    frames = _pixels(media.data, media.label, video=True)
    fps = float(media.fps or DEFAULT_VIDEO_FPS)
    if fmt == "gif":
        from PIL import Image

        buffer = io.BytesIO()
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
        return buffer.getvalue()
    if fmt != "mp4":
        raise MediaDecodeError(f"cannot encode video as {fmt!r}; choose from mp4, gif", item=media.label)
    import imageio_ffmpeg

    # H.264 in yuv420p needs even sides: replicate the last row/column rather than rescale.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with tempfile.TemporaryDirectory(prefix="codi2-video-") as tmp:  # ffmpeg writes MP4 by seeking
        path = Path(tmp) / "item.mp4"
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
        return path.read_bytes()
