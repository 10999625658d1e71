"""The video modality: RGB uint8 frames ``[F, H, W, 3]`` at an fps; MP4, WebM, MOV, AVI files."""

from __future__ import annotations

from typing import Any

from codi2.core.media import load_video, video_bytes
from codi2.core.modality import ModalitySpec
from codi2.plugins.modalities import saves, sniffs
from codi2.registry import hookimpl

#: container formats recognised by their magic bytes (decoded by ffmpeg)
READS = ("mp4", "mov", "webm", "avi")
#: suffix -> format of the files it writes; the first is the default. GIF is read too (through
#: Pillow, lossless) when an item is named video, but a .gif file is an image unless named.
WRITES = {".mp4": "mp4", ".gif": "gif"}


def _load(source: Any, *, name: str | None = None, limits: Any = None, video_frames: int | None = None,
          fps: float | None = None, **_: Any) -> Any:
    return load_video(source, name=name, limits=limits, video_frames=video_frames, fps=fps, formats=(*READS, "gif"))


def _claims(obj: Any) -> bool:
    shape = getattr(obj, "shape", None)
    return shape is not None and len(shape) == 4


def _describe(media: Any) -> dict[str, Any]:
    frames, height, width = media.data.shape[:3]
    return {"frames": int(frames), "width": int(width), "height": int(height), "fps": media.fps}


def spec() -> ModalitySpec:
    return ModalitySpec(
        name="video",
        description="RGB video (uint8 [F, H, W, 3] at an fps); MP4, WebM, MOV, AVI (GIF when named)",
        load=_load,
        encode=video_bytes,
        suffixes=(".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"),
        mime_type="video/mp4",
        mime_types=("video/webm", "video/quicktime", "video/x-msvideo", "video/x-matroska"),
        sniff=sniffs(READS),
        claims=_claims,
        describe=_describe,
        display="video",
        writes=tuple(WRITES),
        save=saves(WRITES, video_bytes),
    )


@hookimpl
def codi2_register_modalities(register: Any) -> None:
    register("video", load=lambda options: spec(), description="RGB video: MP4, WebM, MOV, AVI")
