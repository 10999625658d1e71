"""Fuzzing media loading: mutated PNG, WAV, GIF and MP4 files, and WAV headers that claim
anything. Each load returns a valid Media or raises a codi2 error, within the time and memory
bound of :func:`_fuzz.bounded` (a few hundred examples per target; ``--hypothesis-profile=long``
for a long local run)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from _fuzz import bounded, gif_seed, mp4_seed, mutated, png_seed, scaled, wav_header, wav_seed
from hypothesis import given, settings
from hypothesis import strategies as st

from codi2.core.media import MediaLimits, load_media
from codi2.core.types import Media

#: what a server allows, smaller still so every example stays cheap
LIMITS = MediaLimits(max_bytes=2**20, max_image_pixels=1_000_000, max_audio_seconds=30.0,
                     max_video_frames=64, max_video_pixels=640 * 480, max_video_seconds=30.0,
                     max_video_decoded_pixels=4_000_000, max_decode_seconds=5.0, max_audio_samples=2_000_000)  # fmt: skip

PNG, WAV, GIF, MP4 = png_seed(), wav_seed(), gif_seed(), mp4_seed()


def _check(result, modality: str) -> None:
    if isinstance(result, Media):
        assert result.modality == modality
        if modality == "audio":
            assert result.data.dtype == np.float32 and result.data.ndim == 1 and np.isfinite(result.data).all()
            assert result.sample_rate == 16000 and np.abs(result.data).max(initial=0) <= 1.0
        else:
            assert result.data.dtype == np.uint8 and result.data.shape[-1] == 3


@settings(max_examples=scaled(300))
@given(mutated(PNG, keep_head=8))
def test_mutated_png(data):
    _check(bounded(lambda: load_media(data, "image", limits=LIMITS)), "image")


@settings(max_examples=scaled(300))
@given(mutated(WAV, keep_head=12))
def test_mutated_wav(data):
    _check(bounded(lambda: load_media(data, "audio", limits=LIMITS)), "audio")


@settings(max_examples=scaled(300))
@given(
    rate=st.sampled_from([0, 1, 999, 8000, 16000, 44_101, 383_999, 384_001, 3_000_001, 40_000_001, 2**32 - 1])
    | st.integers(0, 2**32 - 1),
    channels=st.integers(0, 65_535) | st.sampled_from([1, 2, 8, 9]),
    bits=st.sampled_from([0, 8, 16, 24, 32, 64, 7]),
    data_size=st.sampled_from([0, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=4096),
    fmt_tag=st.sampled_from([1, 3, 0xFFFE, 2, 0]),
)
def test_wav_headers_claiming_anything(rate, channels, bits, data_size, payload, fmt_tag):
    data = wav_header(rate, channels, bits, data_size, payload, fmt_tag)
    _check(bounded(lambda: load_media(data, "audio", limits=LIMITS)), "audio")


@settings(max_examples=scaled(200))
@given(mutated(GIF, keep_head=6), st.sampled_from([None, 3]))
def test_mutated_gif_as_image_and_video(data, frames):
    _check(bounded(lambda: load_media(data, "image", limits=LIMITS)), "image")
    _check(bounded(lambda: load_media(data, "video", limits=LIMITS, video_frames=frames)), "video")


@settings(max_examples=scaled(50))  # each example runs ffmpeg: fewer, still a real sample
@given(mutated(MP4, keep_head=12), st.sampled_from([None, 3]))
def test_mutated_mp4(data, frames):
    _check(bounded(lambda: load_media(data, "video", limits=LIMITS, video_frames=frames)), "video")


@settings(max_examples=scaled(200))
@given(st.binary(max_size=512), st.sampled_from(["image", "audio", "video", "text"]))
def test_arbitrary_bytes_as_any_modality(data, modality):
    bounded(lambda: load_media(data, modality, limits=LIMITS))


def test_the_memory_bound_counts_each_example_alone(monkeypatch):
    """The bound itself: an example that allocates past it fails, and memory the process used
    before the example (other tests, in any order) does not count against it."""
    import _fuzz

    monkeypatch.setattr(_fuzz, "PEAK_GROWTH", 96 * 2**20)
    before = np.ones(160 * 2**20 // 8)
    before[::512] = 2.0  # touched: resident
    del before
    assert bounded(lambda: 7) == 7
    with pytest.raises(AssertionError, match="peaked"):
        bounded(lambda: np.full(160 * 2**20 // 8, 2.0).sum())
