"""Audio: soundfile decoding, truncation checks, mono mix-down, resampling."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from codi2.core.media._common import (
    _DEFAULT_LIMITS,
    MediaLimits,
    _filename,
    _is_encoded,
    _is_rate_pair,
    _is_tensor,
    _label,
    _read_encoded,
    _tensor_to_numpy,
    _unwrap,
    _what_it_is,
)
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError


def load_audio(
    source: Any,
    *,
    name: str | None = None,
    sample_rate: int | None = 16000,
    limits: MediaLimits | None = None,
) -> Media:
    """Mono float32 audio in [-1, 1] at ``sample_rate`` (``None``: keep the source rate).

    Files: WAV, FLAC, OGG, MP3 (via soundfile). Arrays: ``[samples]``, ``[channels, samples]``
    or ``[samples, channels]`` (up to 8 channels), float (peak-normalised if louder than
    full scale) or int16/int32/uint8 PCM. A bare array is taken to be at ``sample_rate``;
    pass ``(array, rate)`` otherwise.
    """
    from codi2.core.audio import resample

    limits = limits or _DEFAULT_LIMITS
    source, name, meta, rate = _unwrap(source, "audio", name, "sample_rate")
    if _is_rate_pair(source):
        source, rate = source
    item = _label(name, _filename(source), "audio")
    if _is_encoded(source):
        data = _read_encoded(source, item, limits)
        samples, rate, meta["format"] = _decode_audio(data, item, limits)
        samples = _full_scale(samples, item, meta)
    else:
        samples = _full_scale(_audio_samples(source, item), item, meta)
        rate = rate or sample_rate
        if not rate:
            raise MediaDecodeError(
                "an audio array needs a sample rate: pass (array, rate)", item=item
            )
    rate = _check_rate(rate, item, limits)
    if samples.size == 0:
        raise MediaLimitError("empty audio (0 samples)", item=item)
    seconds = samples.shape[0] / rate
    if seconds < limits.min_audio_seconds:
        raise MediaLimitError(
            f"audio is {seconds:.3f} s, shorter than {limits.min_audio_seconds} s", item=item
        )
    if seconds > limits.max_audio_seconds:
        raise MediaLimitError(
            f"audio is {seconds:.1f} s, longer than {limits.max_audio_seconds} s", item=item
        )
    if samples.ndim == 2:  # a view for one channel: no copy of a long file
        mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    else:
        mono = samples
    if sample_rate and rate != sample_rate:
        meta["source_sample_rate"] = rate
        # resampling can overshoot full scale slightly (ringing); clip that back
        mono = np.clip(resample(mono, rate, sample_rate), -1.0, 1.0)
        rate = sample_rate
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    return Media("audio", mono, sample_rate=rate, name=name or _filename(source), meta=meta)


def _check_rate(rate: Any, item: str, limits: MediaLimits) -> int:
    """The sample rate as an int within the limits (a huge rate makes resampling expensive)."""
    try:
        rate = int(rate)
    except (TypeError, ValueError, OverflowError):
        raise MediaDecodeError(f"bad sample rate {rate!r}", item=item) from None
    if rate <= 0:
        raise MediaDecodeError(f"bad sample rate {rate}", item=item)
    if not limits.min_audio_sample_rate <= rate <= limits.max_audio_sample_rate:
        raise MediaLimitError(
            f"sample rate {rate} Hz is outside {limits.min_audio_sample_rate}.."
            f"{limits.max_audio_sample_rate} Hz",
            item=item,
        )
    return rate


def _check_audio_header(
    rate: int, channels: int, frames: int, item: str, limits: MediaLimits
) -> None:
    """Refuse what would be expensive to decode, from the header alone."""
    _check_rate(rate, item, limits)
    if not 1 <= channels <= limits.max_audio_channels:
        raise MediaLimitError(
            f"{channels} channels, outside 1..{limits.max_audio_channels}", item=item
        )
    if frames > limits.max_audio_seconds * rate:
        raise MediaLimitError(
            f"audio is {frames / rate:.1f} s, longer than {limits.max_audio_seconds} s", item=item
        )
    if frames * channels > limits.max_audio_samples:
        raise MediaLimitError(
            f"{frames} x {channels} samples, over the {limits.max_audio_samples}-sample limit",
            item=item,
        )


def _decode_audio(data: bytes, item: str, limits: MediaLimits) -> tuple[np.ndarray, int, str]:
    import soundfile as sf

    if _wav_truncated(data):
        raise MediaDecodeError(
            "truncated WAV file (data chunk shorter than its header says)", item=item
        )
    try:
        with sf.SoundFile(io.BytesIO(data)) as fh:
            rate, fmt, log = fh.samplerate, fh.format.lower(), fh.extra_info
            _check_audio_header(rate, fh.channels, fh.frames, item, limits)  # before decoding
            samples = fh.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        reason = getattr(e, "error_string", None) or str(e).split(": ", 1)[-1]
        raise MediaDecodeError(
            f"not a readable audio file ({reason}){_what_it_is(data, 'audio')}", item=item
        ) from e
    if fmt == "ogg" and "lacks an end-of-stream" in log:
        raise MediaDecodeError("truncated OGG file (no end-of-stream page)", item=item)
    return samples, rate, fmt


def _wav_truncated(data: bytes) -> bool:
    """True if a RIFF/WAVE file's data chunk claims more bytes than the file holds.

    libsndfile reads such a file without error (only a log line), returning the part that is
    there; a cut-off upload must fail instead.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            # 0 and 0xFFFFFFFF mark streams written before their length was known
            return size not in (0, 0xFFFFFFFF) and pos + 8 + size > len(data)
        pos += 8 + size + (size & 1)
    return False  # no data chunk: libsndfile reports that itself


def _audio_samples(arr: Any, item: str) -> np.ndarray:
    """float32 ``[samples]`` or ``[samples, channels]`` from an audio array (PCM scaled)."""
    if _is_tensor(arr):
        arr = _tensor_to_numpy(arr)
    if isinstance(arr, list):
        arr = np.asarray(arr)
    if not isinstance(arr, np.ndarray):
        raise MediaDecodeError(f"unsupported source type {type(arr).__name__}", item=item)
    if arr.ndim == 2:
        if arr.shape[0] <= 8 and arr.shape[1] > arr.shape[0]:
            arr = arr.T  # [channels, samples] -> [samples, channels]
        elif arr.shape[1] > 8:
            raise MediaDecodeError(
                f"audio array has shape {arr.shape}: more than 8 channels", item=item
            )
    elif arr.ndim != 1:
        raise MediaDecodeError(
            f"audio array has shape {arr.shape}, expected [samples] or 2-D", item=item
        )
    pcm_scale = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}
    if np.issubdtype(arr.dtype, np.floating):
        samples = arr.astype(np.float32)
    elif arr.dtype in pcm_scale:
        samples = (arr / pcm_scale[arr.dtype]).astype(np.float32)
    elif arr.dtype == np.uint8:
        samples = ((arr.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    else:
        raise MediaDecodeError(
            f"audio array dtype {arr.dtype} unsupported: use float, int16, int32 or uint8",
            item=item,
        )
    return samples


def _full_scale(samples: np.ndarray, item: str, meta: dict) -> np.ndarray:
    """Reject NaN/inf; scale float audio louder than full scale down to a peak of 1."""
    if not np.isfinite(samples).all():
        raise MediaDecodeError("audio contains NaN or infinite samples", item=item)
    peak = max(float(samples.max(initial=0.0)), -float(samples.min(initial=0.0)))  # no temp copy
    if peak > 1.0:
        meta["peak_normalized_from"] = peak
        samples = samples / peak
    return samples
