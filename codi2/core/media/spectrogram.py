"""A small spectrogram picture of a sound, for galleries that show audio beside its player.

Time runs left to right, frequency bottom to top on a log scale from 50 Hz to the Nyquist
frequency (tones and their harmonics show as horizontal lines), loudness in dB as a dark-to-
yellow ramp over the 80 dB below the loudest cell. The web chat page draws the same picture in
JavaScript (``codi2/web/chat.js``). numpy and Pillow only.
"""

from __future__ import annotations

import io

import numpy as np

FFT_SIZE = 1024
LOWEST_HZ = 50.0
RANGE_DB = 80.0


def spectrogram(samples: np.ndarray, sample_rate: int, width: int = 160, height: int = 64) -> np.ndarray:
    """RGB ``uint8 [height, width, 3]`` picture of mono ``samples``."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    x = np.pad(x, (0, max(0, FFT_SIZE + width - len(x))))
    hop = max(1, (len(x) - FFT_SIZE) // width)
    starts = np.arange(width) * hop
    frames = x[starts[:, None] + np.arange(FFT_SIZE)[None, :]] * np.hanning(FFT_SIZE + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    # each row is the loudest FFT bin in its band (bands of equal width on the log scale)
    edges = np.exp(np.linspace(np.log(LOWEST_HZ), np.log(sample_rate / 2), height + 1)) * FFT_SIZE / sample_rate
    first = np.minimum(np.floor(edges[:-1]).astype(int), FFT_SIZE // 2)
    last = np.maximum(first + 1, np.ceil(edges[1:]).astype(int))
    rows = np.stack([power[:, a:b].max(axis=1) for a, b in zip(first, last)])[::-1]  # top row: highest
    db = 10 * np.log10(rows + 1e-10)  # [height, width]
    v = np.clip((db - db.max() + RANGE_DB) / RANGE_DB, 0, 1)
    rgb = np.stack([np.minimum(1, 2 * v), np.maximum(0, 2 * v - 1), 0.375 * (1 - v)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def spectrogram_png(samples: np.ndarray, sample_rate: int, width: int = 160, height: int = 64) -> bytes:
    """:func:`spectrogram` as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(spectrogram(samples, sample_rate, width, height)).save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["spectrogram", "spectrogram_png"]
