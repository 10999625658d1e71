"""The audio modality: mono float32 in [-1, 1] at a sample rate; WAV, FLAC, OGG, MP3, M4A files."""

from __future__ import annotations

import numbers
from typing import Any

from codi2.core.media import audio_bytes, load_audio
from codi2.core.modality import ModalitySpec
from codi2.plugins.modalities import saves, sniffs
from codi2.registry import hookimpl

#: container formats recognised by their magic bytes (all decoded by soundfile)
READS = ("wav", "flac", "ogg", "mp3", "m4a")
#: suffix -> format of the files it writes; the first is the default
WRITES = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg"}


def _load(source: Any, *, name: str | None = None, limits: Any = None, sample_rate: int | None = 16000, **_: Any) -> Any:
    return load_audio(source, name=name, sample_rate=sample_rate, limits=limits)


def _claims(obj: Any) -> bool:
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], numbers.Integral):
        return True  # (samples, sample_rate)
    shape = getattr(obj, "shape", None)
    return shape is not None and (len(shape) == 1 or (len(shape) == 2 and min(shape) <= 2))


def _describe(media: Any) -> dict[str, Any]:
    return {"sample_rate": media.sample_rate, "seconds": round(media.duration or 0.0, 4)}


def spec() -> ModalitySpec:
    return ModalitySpec(
        name="audio",
        description="mono audio (float32 in [-1, 1] at a sample rate); WAV, FLAC, OGG, MP3, M4A",
        load=_load,
        encode=audio_bytes,
        suffixes=(".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aiff", ".aif"),
        mime_type="audio/wav",
        mime_types=("audio/x-wav", "audio/wave", "audio/flac", "audio/ogg", "audio/mpeg", "audio/mp4"),
        sniff=sniffs(READS),
        claims=_claims,
        describe=_describe,
        display="audio",
        noun="an audio clip",
        writes=tuple(WRITES),
        save=saves(WRITES, audio_bytes),
    )


@hookimpl
def codi2_register_modalities(register: Any) -> None:
    register("audio", load=lambda options: spec(), description="mono audio: WAV, FLAC, OGG, MP3, M4A")
