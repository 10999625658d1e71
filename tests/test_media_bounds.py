"""Hostile media headers fail fast and small: limits are read from the header before decoding,
and the resampler's memory is bounded by its output whatever the rates."""

from __future__ import annotations

import struct
import time
import tracemalloc

import numpy as np
import pytest

from codi2.core import audio as dsp
from codi2.core.media import MediaLimits, load_media
from codi2.errors import MediaLimitError


def _wav_bytes(rate: int, payload: int, channels: int = 1) -> bytes:
    """An 8-bit PCM WAV whose header says ``rate`` and ``channels``, with ``payload`` bytes."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * channels) & 0xFFFFFFFF, channels, 8)
    data = bytes((i * 37) & 0xFF for i in range(payload))
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", payload)
    return b"RIFF" + struct.pack("<I", len(body) + 8 + payload) + body + data


@pytest.mark.parametrize("rate", [3_000_001, 40_000_001])
def test_huge_sample_rate_is_refused_before_decoding(rate):
    # the attack of issue 13: rates coprime with 16 kHz made the resampler allocate ~0.47 GB/MHz
    data = _wav_bytes(rate, 180_000)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(MediaLimitError, match=rf"'evil': sample rate {rate} Hz is outside"):
        load_media(data, "audio", name="evil")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 20 * 2**20


def test_header_channels_samples_and_low_rate_are_checked():
    with pytest.raises(MediaLimitError, match="9 channels, outside 1..8"):
        load_media(_wav_bytes(16000, 9 * 1600, channels=9), "audio")
    with pytest.raises(MediaLimitError, match="over the 1000-sample limit"):
        load_media(_wav_bytes(16000, 1600), "audio", limits=MediaLimits(max_audio_samples=1000))
    with pytest.raises(MediaLimitError, match="sample rate 500 Hz"):
        load_media(_wav_bytes(500, 1600), "audio")
    with pytest.raises(MediaLimitError, match="sample rate 400000 Hz"):
        load_media((np.zeros(400_000, np.float32), 400_000), "audio")
    # a rate inside the limits still loads and resamples
    media = load_media(_wav_bytes(44_101, 44_101 // 5), "audio")
    assert media.sample_rate == 16000 and media.data.shape == (3200,)


@pytest.mark.parametrize("orig", [383_987, 3_000_001, 40_000_001])
def test_resampler_memory_is_bounded_by_its_output(orig):
    # called directly (the DSP function takes any rate): working memory stays a few MB
    x = np.random.default_rng(0).standard_normal(orig // 10).astype(np.float32)
    tracemalloc.start()
    out = dsp.resample(x, orig, 16000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == (1600,) and np.isfinite(out).all()
    # the padded input copy plus blocks of taps; the old table of every phase took 1.4-19 GB
    assert peak < 4 * x.nbytes + 64 * 2**20, peak


@pytest.mark.parametrize(("orig", "new"), [(44_100, 16_000), (16_000, 44_101), (3_001, 16_000)])
def test_blocked_resampler_matches_one_block(monkeypatch, orig, new):
    x = np.random.default_rng(1).standard_normal(5_000).astype(np.float32)
    whole = dsp.resample(x, orig, new)
    monkeypatch.setattr(dsp, "_RESAMPLE_BLOCK", 97)  # many tiny blocks of phases and frames
    # equal up to float32 summation order (BLAS blocks its dot products by length)
    np.testing.assert_allclose(dsp.resample(x, orig, new), whole, rtol=0, atol=1e-5)
    assert len(whole) == -(-len(x) * new // orig)
