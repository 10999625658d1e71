"""Video: decoding with the ffmpeg binary that imageio-ffmpeg ships; frame arrays and lists."""

from __future__ import annotations

import re
import struct
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from codi2.core.media._common import (
    _DEFAULT_LIMITS,
    DEFAULT_VIDEO_FPS,
    MediaLimits,
    _filename,
    _is_encoded,
    _is_rate_pair,
    _label,
    _read_encoded,
    _unwrap,
    _what_it_is,
    sniff_format,
)
from codi2.core.media._deadline import DecodeClock
from codi2.core.media._image import _pixels, load_image
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError


def load_video(
    source: Any,
    *,
    name: str | None = None,
    limits: MediaLimits | None = None,
    video_frames: int | None = None,
    fps: float | None = None,
    formats: Collection[str] | None = None,
) -> Media:
    """RGB frames as uint8 ``[F, H, W, 3]`` with their ``fps``.

    Files: anything ffmpeg decodes (MP4, WebM, MOV, AVI; GIF through Pillow); the audio track
    is ignored. ``formats``: the container formats (:func:`sniff_format` names) to accept; a
    file whose magic bytes name another is refused before any decoding (the video modality
    passes the formats it reads).
    Arrays ``[F, H, W, C]`` / ``[F, C, H, W]``, lists of frames, or ``(frames, fps)``; frames
    without a rate get ``fps`` or :data:`DEFAULT_VIDEO_FPS`. ``video_frames`` keeps that many
    frames spread uniformly (first and last included), and scales ``fps`` so the duration
    stays the same.
    """
    limits = limits or _DEFAULT_LIMITS
    source, name, meta, rate = _unwrap(source, "video", name, "fps")
    if _is_rate_pair(source):
        source, rate = source
    item = _label(name, _filename(source), "video")
    if video_frames is not None and video_frames < 1:
        raise MediaLimitError(f"video_frames must be >= 1, got {video_frames}", item=item)
    if _is_encoded(source):
        frames, rate, file_meta = _decode_video(
            _read_encoded(source, item, limits), item, limits, video_frames, formats
        )
        meta.update(file_meta)
    else:
        if isinstance(source, (list, tuple)):
            if not source:
                raise MediaLimitError("empty video (no frames)", item=item)
            stills = [
                load_image(f, name=f"{name or 'video'}[{i}]", limits=limits).data
                for i, f in enumerate(source)
            ]
            if len({s.shape for s in stills}) > 1:
                raise MediaDecodeError(
                    f"frames differ in size: {sorted({s.shape for s in stills})}", item=item
                )
            frames = np.stack(stills)
        else:
            frames = _pixels(source, item, video=True)
        rate = float(rate or fps or DEFAULT_VIDEO_FPS)
        _check_video(
            frames.shape[0], frames.shape[2], frames.shape[1], frames.shape[0] / rate, item, limits
        )
        if video_frames is not None and video_frames != frames.shape[0]:
            index = _uniform_indices(frames.shape[0], video_frames)
            rate *= video_frames / frames.shape[0]
            frames = frames[index]
            meta["frame_indices"] = index.tolist()
    if frames.shape[0] > limits.max_video_frames:
        raise MediaLimitError(
            f"{frames.shape[0]} frames, over the {limits.max_video_frames}-frame limit "
            "(pass video_frames to subsample)",
            item=item,
        )
    return Media("video", frames, fps=float(rate), name=name or _filename(source), meta=meta)


def _check_video(
    count: int | None,
    width: int,
    height: int,
    seconds: float | None,
    item: str,
    limits: MediaLimits,
) -> None:
    if count == 0 or width < 1 or height < 1:
        raise MediaLimitError(f"empty video ({count} frames of {width}x{height})", item=item)
    if width * height > limits.max_video_pixels:
        raise MediaLimitError(
            f"frames are {width}x{height}, over the {limits.max_video_pixels}-pixel limit",
            item=item,
        )
    if seconds is not None and seconds > limits.max_video_seconds:
        raise MediaLimitError(
            f"video is {seconds:.1f} s, longer than {limits.max_video_seconds} s", item=item
        )


def _check_decoded(frames: float, width: int, height: int, item: str, limits: MediaLimits) -> None:
    """Decoding costs every frame of the file, kept or not: bound frames x pixels up front."""
    total = frames * width * height
    if total > limits.max_video_decoded_pixels:
        raise MediaLimitError(
            f"{frames:.0f} frames of {width}x{height} = {total:.3g} pixels to decode, over the "
            f"{limits.max_video_decoded_pixels:.3g}-pixel limit (max_video_decoded_pixels)",
            item=item,
        )


def _uniform_indices(total: int, count: int) -> np.ndarray:
    return np.rint(np.linspace(0, total - 1, count)).astype(np.int64)


def _ffmpeg_reason(text: str) -> str:
    """The lines of ffmpeg's log that say what went wrong (not its banner or our temp path)."""
    lines = [m.group(1) for m in re.finditer(r"^(?:\[[^\]]* @ 0x[0-9a-f]+\] ?)+(.*)$", text, re.M)]
    return (
        "; ".join(list(dict.fromkeys(lines))[:3])
        or (text.strip().splitlines() or ["no details"])[-1]
    )


def _decode_video(
    data: bytes,
    item: str,
    limits: MediaLimits,
    video_frames: int | None,
    formats: Collection[str] | None = None,
) -> tuple[np.ndarray, float, dict]:
    fmt = sniff_format(data[:16])
    if fmt and formats is not None and fmt not in formats:
        raise MediaDecodeError(f"not a video{_what_it_is(data, 'video')}", item=item)
    clock = DecodeClock(limits.max_decode_seconds, item)
    if fmt == "gif":
        return _decode_gif(data, item, limits, video_frames, clock)
    # ffmpeg reads MP4 by seeking (the index may sit at the end): hand it a real file.
    with tempfile.TemporaryDirectory(prefix="codi2-video-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        width, height, rate, duration = _video_header(path, data, item)
        _check_video(None, width, height, duration, item, limits)
        if duration:  # from the header: refuse a decoding bomb before decoding anything
            _check_decoded(duration * rate, width, height, item, limits)
        wanted = None
        if video_frames is not None:
            total = _count_frames(path, item, clock)
            _check_video(total, width, height, duration, item, limits)
            _check_decoded(total, width, height, item, limits)
            wanted = _uniform_indices(total, video_frames)
        frames, decoded = _read_frames(
            path, Path(tmp) / "ffmpeg.log", width, height, wanted, item, limits, clock
        )
    if not frames:
        raise MediaLimitError("empty video (no decodable frames)", item=item)
    meta: dict[str, Any] = {
        "format": fmt or "unknown",
        "source_fps": rate,
        "source_frames": decoded,
    }
    if wanted is not None:
        # The container's frame count can differ by a frame or two from what decodes; pad
        # with the last frame so callers always get video_frames frames.
        frames += [frames[-1]] * (len(wanted) - len(frames))
        rate *= len(wanted) / decoded
        meta["frame_indices"] = wanted.tolist()
    return np.stack(frames), rate, meta


def _gif_frame_delays(data: bytes) -> tuple[list[int], int, int] | None:
    """Each frame's delay (ms), and the width and height every frame fits in (a frame may
    reach past the logical screen, and Pillow grows the canvas to it), read from a GIF's block
    structure without decoding any pixels (Pillow learns them only by decoding every frame:
    3,000 frames took 6.5 s); None if the structure cannot be walked."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    delays: list[int] = []
    delay = 0
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")

    def skip_sub_blocks(pos: int) -> int:
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        return pos + 1

    while pos < len(data):
        kind = data[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21 and pos + 1 < len(data):  # extension: graphic control holds the delay
            if data[pos + 1] == 0xF9 and pos + 6 < len(data) and data[pos + 2] >= 4:
                delay = int.from_bytes(data[pos + 4 : pos + 6], "little") * 10
            pos = skip_sub_blocks(pos + 2)
        elif kind == 0x2C and pos + 10 <= len(data):  # image descriptor: one frame
            left, top, w, h = struct.unpack("<4H", data[pos + 1 : pos + 9])
            width, height = max(width, left + w), max(height, top + h)
            packed = data[pos + 9]
            pos += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)  # after the LZW minimum code size
            delays.append(delay)
            delay = 0
        else:
            return None
    return (delays, width, height) if delays else None


def _decode_gif(
    data: bytes, item: str, limits: MediaLimits, video_frames: int | None, clock: DecodeClock
) -> tuple[np.ndarray, float, dict]:
    """GIF frames through Pillow: no ffmpeg processes, about 100x faster for a short clip
    (measured 146 ms -> about 1 ms for a 4-frame 32 x 32 clip; training reads clips every step).
    Frame count and delays come from the block structure, so the limits (frames, duration,
    decoded pixels) are checked before any frame is decoded; the clock between frames."""
    import io

    from PIL import Image

    scanned = _gif_frame_delays(data)
    if scanned is None:
        raise MediaDecodeError("not a readable GIF (damaged block structure)", item=item)
    delays, width, height = scanned
    try:
        total = len(delays)
        rate = 1000 * total / sum(delays) if all(delays) else DEFAULT_VIDEO_FPS
        _check_video(total, width, height, total / rate, item, limits)
        _check_decoded(total, width, height, item, limits)
        with Image.open(io.BytesIO(data)) as image:
            if video_frames is None and total > limits.max_video_frames:
                raise MediaLimitError(
                    f"{total} frames, over the {limits.max_video_frames}-frame limit "
                    "(pass video_frames to subsample)",
                    item=item,
                )
            wanted = _uniform_indices(total, video_frames) if video_frames is not None else None
            frames = []
            at = 0
            for index in wanted if wanted is not None else range(total):
                while at < index:  # Pillow decodes every frame on the way: one at a time, timed
                    at += 1
                    image.seek(at)
                    clock.check()
                image.seek(int(index))
                frames.append(np.asarray(image.convert("RGB")))
    except MediaLimitError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaLimitError(str(exc), item=item) from None
    except Exception as exc:  # noqa: BLE001 — Pillow says "damaged" many ways (SyntaxError...)
        raise MediaDecodeError(f"not a readable GIF ({exc})", item=item) from None
    if len({f.shape for f in frames}) > 1:  # a frame reaching past the screen grew the canvas
        raise MediaDecodeError(
            f"GIF frames differ in size: {sorted({f.shape for f in frames})}", item=item
        )
    meta: dict[str, Any] = {"format": "gif", "source_fps": rate, "source_frames": total}
    if wanted is not None:
        rate *= len(wanted) / total
        meta["frame_indices"] = wanted.tolist()
    return np.stack(frames), rate, meta


def _count_frames(path: Path, item: str, clock: DecodeClock) -> int:
    """Frames of the first video stream, counted from its packets: ``-c copy`` decodes
    nothing (imageio-ffmpeg's counter decoded the whole file: 58 s for a 1 MB bomb)."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-c", "copy", "-f", "null", "-"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        with clock.watch(proc):
            _, err = proc.communicate()
    text = err.decode(errors="replace")
    counts = re.findall(r"frame=\s*(\d+)", text)
    if proc.returncode != 0 or not counts:
        raise MediaDecodeError(f"cannot count frames ({_ffmpeg_reason(text)})", item=item)
    return int(counts[-1])


def _video_header(path: Path, data: bytes, item: str) -> tuple[int, int, float, float | None]:
    """(width, height, fps, duration) from ffmpeg's reading of the header."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        info = next(reader)
    except (OSError, RuntimeError, StopIteration) as e:
        reason = _ffmpeg_reason(str(e))
        raise MediaDecodeError(
            f"not a readable video ({reason}){_what_it_is(data, 'video')}", item=item
        ) from e
    finally:
        reader.close()  # stops that ffmpeg process
    (width, height), rate = info["size"], float(info.get("fps") or DEFAULT_VIDEO_FPS)
    return int(width), int(height), rate, info.get("duration")


def _read_frames(
    path: Path,
    log: Path,
    width: int,
    height: int,
    wanted: np.ndarray | None,
    item: str,
    limits: MediaLimits,
    clock: DecodeClock,
) -> tuple[list[np.ndarray], int]:
    """Decode the first video stream; keep all frames or those at ``wanted`` indices.

    ffmpeg decodes what it can of a damaged file and exits 0, so its error log (not its exit
    status) tells a cut-off or corrupt video from a good one.
    """
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
           "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
    size = width * height * 3
    frames: list[np.ndarray] = []
    decoded = 0
    with log.open("wb") as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:
        assert proc.stdout is not None
        try:
            with clock.watch(proc):  # killed at the deadline, or when the request is cancelled
                while buf := proc.stdout.read(size):
                    if len(buf) < size:
                        break  # a partial last frame: ffmpeg's log says why
                    if wanted is None or decoded in wanted:
                        frame = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
                        frames += [frame] * (
                            1 if wanted is None else int((wanted == decoded).sum())
                        )
                    decoded += 1
                    if wanted is None and decoded > limits.max_video_frames:
                        raise MediaLimitError(
                            f"more than {limits.max_video_frames} frames, over the "
                            f"{limits.max_video_frames}-frame limit (pass video_frames to subsample)",
                            item=item,
                        )
                    # the header may understate the length: bound what is decoded as it goes
                    _check_decoded(decoded, width, height, item, limits)
        except BaseException:
            proc.kill()  # leaving the with-block then closes the pipe and reaps ffmpeg
            raise
    problems = log.read_text(errors="replace").strip()
    if proc.returncode != 0 or problems:
        reason = (
            _ffmpeg_reason(problems) if problems else f"ffmpeg exited with status {proc.returncode}"
        )
        raise MediaDecodeError(
            f"corrupt or truncated video after {decoded} frames ({reason})", item=item
        )
    return frames, decoded
