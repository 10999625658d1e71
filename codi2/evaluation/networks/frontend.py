"""The log-mel front end of PANNs (CNN14) in plain torch — no torchlibrosa, no torchaudio.

It reproduces torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` (the modules PANNs was
trained with) down to their parameter names, so the released checkpoints' front-end tensors
(``spectrogram_extractor.stft.conv_real.weight``, ``...conv_imag.weight``,
``logmel_extractor.melW``) load with ``strict=True``:

- STFT as two 1-D convolutions whose kernels are the real and imaginary DFT rows times a
  periodic Hann window, on the signal reflect-padded by ``n_fft // 2`` at both ends
  (``center=True``); power spectrogram ``re^2 + im^2``.
- mel filter bank: librosa's ``filters.mel`` (Slaney mel scale, Slaney area normalisation) —
  :func:`mel_filters` is that definition in numpy;
- log: ``10 * log10(max(mel, 1e-10))`` (``ref=1``, no ``top_db`` clipping).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LogMel", "Spectrogram", "hz_to_mel", "mel_filters", "mel_to_hz"]

# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                fmax: float | None = None) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters, as ``librosa.filters.mel`` (defaults).

    Band edges are ``n_mels + 2`` points evenly spaced on the Slaney mel scale between
    ``fmin`` and ``fmax``; each filter rises from edge ``i`` to ``i + 1`` and falls to ``i + 2``
    and is scaled by ``2 / (f[i + 2] - f[i])`` so every filter has the same area.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class _STFT(nn.Module):
    """Magnitude-free STFT as convolutions (keys ``conv_real.weight`` / ``conv_imag.weight``)."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)
        angle = 2 * math.pi * n[:, None] * k[None, :] / n_fft  # [n_fft, bins]
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)[:, None]
        with torch.no_grad():
            self.conv_real.weight.copy_((torch.cos(angle) * window).T[:, None, :].float())
            self.conv_imag.weight.copy_((-torch.sin(angle) * window).T[:, None, :].float())
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.n_fft // 2
        x = F.pad(waveform[:, None, :], (pad, pad), mode="reflect")
        return self.conv_real(x), self.conv_imag(x)  # [B, bins, frames] each


class Spectrogram(nn.Module):
    """``[B, samples]`` -> power spectrogram ``[B, 1, frames, n_fft // 2 + 1]``."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.stft = _STFT(n_fft, hop_length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(waveform)
        return (real**2 + imag**2).transpose(1, 2)[:, None]


class LogMel(nn.Module):
    """Power spectrogram ``[..., bins]`` -> log-mel ``[..., n_mels]`` in dB (key ``melW``)."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        weights = mel_filters(sample_rate, n_fft, n_mels, fmin, fmax).T  # [bins, n_mels]
        self.melW = nn.Parameter(torch.from_numpy(np.ascontiguousarray(weights)), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power, self.melW)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
