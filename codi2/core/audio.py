"""The audio front end: band-limited resampling and Kaldi-style log-mel filterbanks.

Both follow the definitions of ``torchaudio.functional.resample`` (default arguments) and
``torchaudio.compliance.kaldi.fbank`` — the functions ImageBind's reference preprocessing
calls — without depending on torchaudio (which does not install beside the torch we use).
``tests/test_audio_dsp.py`` checks them against outputs of torchaudio itself.

:func:`resample` is numpy only, so reading a media file never imports torch;
:func:`kaldi_fbank` imports torch when called.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["resample", "kaldi_fbank", "mel_banks", "feature_window"]


#: elements of filter taps (or gathered input) handled at once: keeps the resampler's working
#: memory to a few MB whatever the rates (a kernel table of every phase at once took 0.47 GB
#: per MHz of an incommensurate input rate)
_RESAMPLE_BLOCK = 1 << 20


def _resample_starts(
    orig: int, new: int, phases: np.ndarray, half: float, width: int
) -> np.ndarray:
    """First padded-input index of each output phase's filter window."""
    centre = width + phases * orig / new  # where output phase i sits in the padded input
    return np.floor(centre - half).astype(np.int64)


def _resample_kernel(
    orig: int,
    new: int,
    phases: np.ndarray,
    starts: np.ndarray,
    taps: int,
    width: int,
    base_freq: float,
    lowpass_filter_width: int,
) -> np.ndarray:
    """Filter taps float32 ``[len(phases), taps]`` for the given output phases.

    A Hann-windowed sinc low-pass at ``base_freq``; torchaudio stores each phase over
    ``2 * width + orig`` taps, most of them zero, while here each phase keeps only the taps
    inside the window.
    """
    k = starts[:, None] + np.arange(taps)[None, :]
    t = np.clip(
        ((k - width) / orig - phases[:, None] / new) * base_freq,
        -lowpass_filter_width,
        lowpass_filter_width,
    )
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel *= window * (base_freq / orig)
    return kernel.astype(np.float32)


def resample(
    waveform: np.ndarray,
    orig_sr: int,
    new_sr: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> np.ndarray:
    """Resample a 1-D signal from ``orig_sr`` to ``new_sr`` Hz: float32 ``[ceil(n * new / orig)]``.

    Band-limited interpolation with a Hann-windowed sinc (torchaudio's ``sinc_interp_hann``):
    both rates are divided by their gcd, every output phase has its own filter, and the
    signal is zero-padded at both ends, so the output matches
    ``torchaudio.functional.resample(x, orig_sr, new_sr)`` to float32 precision.
    Equal rates return a float32 copy of the input.

    Cost is bounded by the output, whatever the rates: only the phases and frames that reach
    the output are computed, filters are built a block of phases at a time, and inputs are
    gathered a block of frames at a time, so working memory stays at a few MB beyond the
    input and output, and time is about ``output length * taps`` (taps ~ 12 x the
    down-sampling ratio).
    """
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D waveform, got shape {x.shape}")
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return x.copy()
    gcd = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // gcd, new_sr // gcd
    n_out = math.ceil(new * len(x) / orig)
    base_freq = min(orig, new) * rolloff
    half = lowpass_filter_width * orig / base_freq  # half the window, in input samples
    width = math.ceil(half)
    taps = width * 2 + 2
    # Output sample j * new + i is kernel[i] @ padded[j * orig + starts[i] :][:taps], where
    # ``padded`` is the input with ``width`` zeros in front; only n_out of them are kept.
    n_phases = min(new, n_out)
    all_starts = _resample_starts(orig, new, np.arange(n_phases), half, width)
    frames_of = (n_out - np.arange(n_phases) + new - 1) // new  # frames phase i contributes
    reach = int(((frames_of - 1) * orig + all_starts + taps).max()) if n_phases else 0
    padded = np.zeros(max(reach, width + len(x), taps), dtype=np.float32)
    padded[width : width + len(x)] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)
    out = np.zeros(n_out, dtype=np.float32)
    phase_block = max(1, _RESAMPLE_BLOCK // taps)
    frame_block = max(1, _RESAMPLE_BLOCK // taps)
    for p0 in range(0, n_phases, phase_block):
        phases = np.arange(p0, min(p0 + phase_block, n_phases))
        starts = all_starts[phases]
        kernel = _resample_kernel(
            orig, new, phases, starts, taps, width, base_freq, lowpass_filter_width
        )
        for row, i in enumerate(phases):  # one strided gather and mat-vec per phase
            count = int(frames_of[i])
            for f0 in range(0, count, frame_block):
                f1 = min(f0 + frame_block, count)
                rows = windows[starts[row] + f0 * orig :: orig][: f1 - f0]
                out[i + f0 * new : i + f1 * new : new] = rows @ kernel[row]
    return out


# --- Kaldi filterbank -----------------------------------------------------------------------

_WINDOWS = ("hanning", "hamming", "povey", "rectangular", "blackman")


def feature_window(window: str, size: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    """Kaldi's analysis window of ``size`` samples (symmetric, float32 tensor).

    Computed with torch's float32 window functions on purpose: low-energy mel bins are
    sensitive to the window's rounding, and this keeps the features equal to the reference.
    """
    import torch

    f32 = torch.float32
    if window in ("hanning", "povey"):
        hann = torch.hann_window(size, periodic=False, dtype=f32)
        # povey (Kaldi's default) is a Hann window raised to 0.85: nonzero at the edges
        return hann if window == "hanning" else hann.pow(0.85)
    if window == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=f32)
    if window == "rectangular":
        return torch.ones(size, dtype=f32)
    if window == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, dtype=f32)
        return (
            blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
        )
    raise ValueError(f"unknown window {window!r}; known: {', '.join(_WINDOWS)}")


def _mel_scalar(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


def mel_banks(
    num_bins: int, padded_window_size: int, sample_rate: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Triangular mel filters, float32 ``[num_bins, padded_window_size // 2 + 1]`` (Kaldi's
    layout: the Nyquist column is zero). ``high_freq <= 0`` counts back from Nyquist.

    Band edges are float64 scalars and the per-bin arithmetic is float32, as in the reference.
    """
    import torch

    if num_bins <= 3:
        raise ValueError(f"num_mel_bins must be > 3, got {num_bins}")
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(
            f"bad mel band edges low_freq={low_freq}, high_freq={high_freq} at nyquist {nyquist}"
        )
    mel_low, mel_high = _mel_scalar(low_freq), _mel_scalar(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float32)[:, None]
    left, center, right = (
        mel_low + b * delta,
        mel_low + (b + 1.0) * delta,
        mel_low + (b + 2.0) * delta,
    )
    fft_freqs = (sample_rate / padded_window_size) * torch.arange(
        padded_window_size // 2, dtype=torch.float32
    )
    mel = (1127.0 * (1.0 + fft_freqs / 700.0).log())[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(
    waveform: Any,
    sample_rate: float = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "hanning",
    dither: float = 0.0,
    htk_compat: bool = True,
    use_energy: bool = False,
    *,
    channel: int = -1,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    raw_energy: bool = True,
    energy_floor: float = 1.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    round_to_power_of_two: bool = True,
    snip_edges: bool = True,
    use_power: bool = True,
    use_log_fbank: bool = True,
    subtract_mean: bool = False,
    blackman_coeff: float = 0.42,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank features, float32 ``[frames, num_mel_bins]``.

    Same definition and option meanings as ``torchaudio.compliance.kaldi.fbank`` (defaults
    here are ImageBind's: 128 Hann-windowed bins, htk_compat, no energy). ``waveform`` is a
    numpy array or tensor, 1-D or ``[channels, samples]`` (``channel`` picks one; -1 -> 0).
    Per frame: optional dither, DC removal, pre-emphasis, window, zero-pad to a power of
    two, power spectrum, mel banks, log floored at float32 epsilon. VTLN warping is not
    supported. The result is on the input tensor's device. Raises ``ValueError`` for a
    signal shorter than one frame or bad options.
    """
    import torch

    x = waveform if isinstance(waveform, torch.Tensor) else torch.as_tensor(np.asarray(waveform))
    x = x.detach().to(dtype=torch.float32)
    if x.dim() == 2:
        x = x[max(channel, 0)]
    elif x.dim() != 1:
        raise ValueError(
            f"kaldi_fbank expects [samples] or [channels, samples], got {tuple(x.shape)}"
        )
    shift = int(sample_rate * frame_shift_ms * 0.001)
    size = int(sample_rate * frame_length_ms * 0.001)
    padded_size = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    if not 2 <= size <= x.numel():
        raise ValueError(
            f"kaldi_fbank needs at least one {size}-sample frame, got {x.numel()} samples"
        )
    if shift <= 0 or padded_size % 2:
        raise ValueError(f"bad frame shift {shift} or padded window size {padded_size}")
    device = x.device  # the result stays on the input's device
    eps = torch.tensor(torch.finfo(torch.float32).eps, device=device)

    # Frames: snip_edges keeps whole frames only; otherwise Kaldi reflects the signal at both
    # ends and centres frame m at m * shift + shift / 2.
    if snip_edges:
        count = 1 + (x.numel() - size) // shift
        src = x
    else:
        count = (x.numel() + shift // 2) // shift
        pad = size // 2 - shift // 2
        rev = torch.flip(x, [0])
        src = torch.cat((rev[-pad:], x, rev)) if pad > 0 else torch.cat((x[-pad:], rev))
    frames = src.contiguous().as_strided((count, size), (shift, 1)).clone()

    if dither != 0.0:
        frames = frames + dither * torch.randn(frames.shape, generator=generator, device=device)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    log_energy = None
    if use_energy and raw_energy:
        log_energy = _log_energy(frames, eps, energy_floor)
    if preemphasis_coefficient != 0.0:
        previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)  # first sample repeats
        frames = frames - preemphasis_coefficient * previous
    frames = frames * feature_window(window, size, blackman_coeff).to(device)
    if padded_size != size:
        frames = torch.nn.functional.pad(frames, (0, padded_size - size))
    if use_energy and not raw_energy:
        log_energy = _log_energy(frames, eps, energy_floor)

    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = mel_banks(num_mel_bins, padded_size, float(sample_rate), low_freq, high_freq)
    feats = spectrum @ banks.to(device).T
    if use_log_fbank:
        feats = torch.maximum(feats, eps).log()
    if log_energy is not None:
        e = log_energy[:, None]
        feats = torch.cat((feats, e) if htk_compat else (e, feats), dim=1)
    if subtract_mean:
        feats = feats - feats.mean(dim=0, keepdim=True)
    return feats


def _log_energy(frames: torch.Tensor, eps: torch.Tensor, energy_floor: float) -> torch.Tensor:
    import torch

    energy = torch.maximum(frames.pow(2).sum(1), eps).log()
    if energy_floor == 0.0:
        return energy
    return torch.clamp(energy, min=math.log(energy_floor))
