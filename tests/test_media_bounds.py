"""Hostile media headers fail fast and small: limits are read from the header before decoding,
and the resampler's memory is bounded by its output whatever the rates."""

from __future__ import annotations

import os
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from codi2.core import audio as dsp
from codi2.core.media import MediaLimits, load_media
from codi2.errors import MediaDecodeError, MediaLimitError


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
    x = np.random.default_rng(0).standard_normal(orig // 100).astype(np.float32)
    tracemalloc.start()
    out = dsp.resample(x, orig, 16000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == (160,) and np.isfinite(out).all()
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


# --- video and GIF: frames x pixels bounded before decoding, wall time while decoding --------


def _ffmpeg(*args: str) -> None:
    import subprocess

    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def noisy_mp4(tmp_path_factory) -> Path:
    """4 s of 640x360 noise at 30 fps: slow enough to decode that a deadline lands mid-way."""
    path = tmp_path_factory.mktemp("video") / "noise.mp4"
    _ffmpeg("-f", "lavfi", "-i", "nullsrc=s=640x360:r=30:d=4,geq=random(1)*255:128:128",
            "-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p", str(path))
    return path


def _ffmpeg_children() -> list[int]:
    """ffmpeg processes started by this test process that are still alive."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if "(ffmpeg" in stat and int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


def test_video_decoding_bomb_is_refused_from_its_header(noisy_mp4):
    small = MediaLimits(max_video_decoded_pixels=640 * 360 * 60)  # 60 of its 120 frames
    start = time.perf_counter()
    with pytest.raises(MediaLimitError, match=r"120 frames of 640x360 = .* over the .*max_video_decoded_pixels"):
        load_media(noisy_mp4, "video", limits=small)
    with pytest.raises(MediaLimitError, match="120 frames of 640x360"):
        load_media(noisy_mp4, "video", limits=small, video_frames=4)  # counted, not decoded
    assert time.perf_counter() - start < 3.0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find ffmpeg processes")
def test_video_decoding_stops_at_the_deadline_and_kills_ffmpeg(noisy_mp4):
    from codi2.core.media import decode_deadline
    from codi2.errors import MediaTimeoutError

    with pytest.raises(MediaTimeoutError, match=r"decoding took longer than 0.05 s \(max_decode_seconds\)") as info:
        load_media(noisy_mp4, "video", limits=MediaLimits(max_decode_seconds=0.05), video_frames=4)
    assert not info.value.external and not _ffmpeg_children()
    cancelled = threading.Event()
    threading.Timer(0.05, cancelled.set).start()  # the client went away
    with decode_deadline(time.monotonic() + 60, cancelled), pytest.raises(MediaTimeoutError, match="cancelled"):
        load_media(noisy_mp4, "video")
    with decode_deadline(time.monotonic() + 0.05), pytest.raises(MediaTimeoutError, match="deadline passed") as info:
        load_media(noisy_mp4, "video")
    assert info.value.external and not _ffmpeg_children()
    assert load_media(noisy_mp4, "video", video_frames=4).data.shape == (4, 360, 640, 3)


def _gif(frames: int, size=(48, 32), duration=40) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).quantize(16)
              for _ in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buf.getvalue()


def test_gif_limits_are_checked_from_its_blocks_before_decoding(monkeypatch):
    from PIL import GifImagePlugin

    from codi2.core.media import _video

    data = _gif(300)
    assert _video._gif_frame_delays(data) == ([40] * 300, 48, 32)  # delays, the size frames fit in
    decoded = []
    original = GifImagePlugin.GifImageFile.load
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "load", lambda self: decoded.append(1) or original(self))
    with pytest.raises(MediaLimitError, match="300 frames of 48x32"):
        load_media(data, "video", limits=MediaLimits(max_video_decoded_pixels=48 * 32 * 100), video_frames=4)
    with pytest.raises(MediaLimitError, match="300 frames, over the 200-frame limit"):
        load_media(data, "video", limits=MediaLimits(max_video_frames=200))
    assert not decoded, "refused before decoding a frame"
    clip = load_media(data, "video", video_frames=4)
    assert clip.data.shape == (4, 32, 48, 3) and clip.fps == pytest.approx(25 * 4 / 300)
    with pytest.raises(MediaLimitError, match="decoding took longer"):
        load_media(data, "video", limits=MediaLimits(max_decode_seconds=0.0), video_frames=4)
    with pytest.raises(MediaDecodeError, match="not a readable GIF"):
        load_media(data[:13] + b"\x99" + data[14:40], "video")
