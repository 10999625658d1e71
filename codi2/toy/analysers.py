"""Deterministic readers of toy-world media: what item does an image or a sound show?

No learned judge — every decision is a measurement with a fixed threshold, so the demo's
pass/fail marks and the benchmark's accuracies mean the same thing on every machine.

**Images** (:func:`analyse_image`):

- foreground = pixels that some channel puts well below white (``255 - min channel > 100``),
  cleaned of isolated specks (a pixel stays if at least 3 of its 8 neighbours are foreground);
- colour = the palette colour nearest (RGB distance) to the median of the foreground's
  *core* pixels (those far from white, so blurred edges do not pull it toward pink);
- shape and size = the (shape, size) template of the world with the highest intersection
  over union with the foreground mask, allowing a shift of up to 3 pixels.

**Audio** (:func:`analyse_audio`):

- pitch = the strongest spectral peak between 200 and 700 Hz (Welch average of 4096-point
  Hann-windowed frames, parabolic interpolation), named
  by the nearest world pitch on a log scale (more than 100 cents away: not a world tone);
- waveform = the odd-harmonic ratio: the level of the 3rd and 5th harmonics of the named
  pitch relative to the fundamental (summed magnitude within +-3 % (at least 20 Hz) above the
  local floor;
  a harmonic near the 2 kHz bell or in the rain band is left out). Both below 0.035: sine;
  otherwise square (1/n) or triangle (1/n^2) by which side of a calibrated boundary the
  ratios fall on (on a log scale, averaged);
- overlay = band energy: *rain* when the median short-time magnitude over 3-6 kHz (lines of
  the tone's own harmonics do not move a median) is loud relative to the fundamental;
  *bell* when the 2 kHz band carries transients — its short-time envelope swings (95th minus
  10th percentile) loud relative to the fundamental; a stationary harmonic near 2 kHz has a
  flat envelope.

:func:`lsd` is the log-spectral distance used for audio edits. Each ``analyse_*`` returns a
:class:`Reading` ``(item, confidence, details)``; ``item`` is None when the input does not
look like any world item. Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from codi2.toy import world as w
from codi2.toy.world import AudioItem, ImageItem


class Reading(NamedTuple):
    """What an analyser saw: the item (or None), a confidence in [0, 1], and measurements."""

    item: ImageItem | AudioItem | None
    confidence: float
    details: dict[str, Any]


def _array(media: Any) -> np.ndarray:
    return np.asarray(getattr(media, "data", media))


# --- images ----------------------------------------------------------------------------------

FOREGROUND_DEFICIT = 100  # 255 - min channel above this: not background
CORE_DEFICIT = 150
MIN_FOREGROUND = 12  # pixels
MIN_IOU = 0.45
MAX_SHIFT = 3

_PALETTE_NAMES = list(w.COLOURS)
_PALETTE = np.array([w.COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float64)
_TEMPLATES = [(s, z, w.shape_mask(s, z)) for s in w.SHAPES for z in w.SIZES]


def _to_world_size(image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resample to 32 x 32 (decoders may render at another size)."""
    h, wd = image.shape[:2]
    if (h, wd) == (w.IMAGE_SIDE, w.IMAGE_SIDE):
        return image
    rows = ((np.arange(w.IMAGE_SIDE) + 0.5) * h / w.IMAGE_SIDE).astype(int)
    cols = ((np.arange(w.IMAGE_SIDE) + 0.5) * wd / w.IMAGE_SIDE).astype(int)
    return image[rows][:, cols]


def _neighbours(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask.astype(np.int16), 1)
    h, wd = mask.shape
    return sum(padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + wd] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, wd = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : wd + min(dx, 0)] = mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : wd - max(dx, 0)]
    return out


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """The shape's pixels of a world-like image (``[32, 32]`` bool), specks removed."""
    rgb = _to_world_size(_array(image)).astype(np.int16)
    mask = (255 - rgb.min(-1)) > FOREGROUND_DEFICIT
    return mask & (_neighbours(mask) >= 3)


def analyse_image(image: Any) -> Reading:
    """Read an image (``uint8 [H, W, 3]`` or a Media): its shape, colour and size.

    ``confidence`` is the best template IoU; ``details`` holds ``iou`` per (shape, size),
    ``rgb`` (the core median colour), ``colour_distance`` and ``foreground`` (pixel count).
    """
    data = _array(image)
    if data.ndim != 3 or data.shape[-1] != 3:
        raise ValueError(f"analyse_image expects an RGB array [H, W, 3], got shape {data.shape}")
    rgb = _to_world_size(data).astype(np.float64)
    mask = foreground_mask(data)
    details: dict[str, Any] = {"foreground": int(mask.sum())}
    if mask.sum() < MIN_FOREGROUND:
        return Reading(None, 0.0, details)
    core = mask & ((255 - rgb.min(-1)) > CORE_DEFICIT)
    pixels = rgb[core] if core.sum() >= MIN_FOREGROUND // 2 else rgb[mask]
    median = np.median(pixels, axis=0)
    distances = np.linalg.norm(_PALETTE - median, axis=1)
    colour = _PALETTE_NAMES[int(distances.argmin())]
    details.update(rgb=[round(float(v), 1) for v in median], colour_distance=round(float(distances.min()), 1))

    ious = {}
    for shape, size, template in _TEMPLATES:
        best = 0.0
        for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
            for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                moved = _shifted(template, dy, dx)
                best = max(best, (moved & mask).sum() / (moved | mask).sum())
        ious[(shape, size)] = float(best)
    details["iou"] = {f"{s}/{z}": round(v, 3) for (s, z), v in ious.items()}
    (shape, size), iou = max(ious.items(), key=lambda kv: kv[1])
    if iou < MIN_IOU:
        return Reading(None, iou, details)
    # confidence: the template fit, lowered when the colour is far from every palette entry
    confidence = iou * float(np.clip(1.5 - distances.min() / 100, 0, 1))
    return Reading(ImageItem(shape, colour, size), round(float(confidence), 3), details)


# --- audio -----------------------------------------------------------------------------------

PITCH_RANGE_HZ = (200.0, 700.0)
MAX_CENTS = 100.0
# Harmonic level = summed magnitude within +-3 % of n * f0 above the local floor. Square
# (1/n) and triangle (1/n^2) are told apart at these ratios, calibrated on clean items
# (3rd: 0.33 vs 0.11, 5th: 0.20 vs 0.04) and on items after a log-mel -> Griffin-Lim round
# trip, which lifts harmonics by about 1.6x (3rd: 0.4-0.6 vs 0.13-0.21, 5th: 0.26-0.41 vs 0.05-0.08).
SQUARE_TRIANGLE_BOUNDARY = {3: 0.26, 5: 0.10}
SINE_MAX = 0.035  # both ratios below this: no harmonics, a sine
HARMONIC_BAND, HARMONIC_MIN_HZ = 0.03, 20.0  # half-width: 3 % of the frequency, at least 20 Hz
# harmonics near the bell (2 kHz) or inside the rain band (from 2.95 kHz) are not used
HARMONIC_EXCLUDE_HZ = ((w.BELL_HZ - 80.0, w.BELL_HZ + 80.0), (2950.0, float(w.SAMPLE_RATE)))
RAIN_THRESHOLD = 0.006  # median 3-6 kHz STFT magnitude / fundamental STFT magnitude
BELL_THRESHOLD = 0.1  # 2 kHz envelope swing / fundamental STFT magnitude
STFT_SIZE, STFT_HOP = 1024, 128  # for the overlays
PITCH_FFT = 4096  # for pitch and harmonics: 3.9 Hz bins


def _stft(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``|STFT|`` ``[frames, n_fft // 2 + 1]``, periodic Hann window, no padding."""
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    frames = 1 + (wave.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(wave[index] * window, axis=-1))


def _audio_wave(audio: Any) -> np.ndarray:
    rate = getattr(audio, "sample_rate", None) or w.SAMPLE_RATE
    wave = np.asarray(getattr(audio, "data", audio), dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"analyse_audio expects mono samples [N], got shape {wave.shape}")
    if rate != w.SAMPLE_RATE:
        from codi2.core.audio import resample

        wave = np.asarray(resample(wave, int(rate), w.SAMPLE_RATE), dtype=np.float64)
    return wave


def _harmonic_level(spectrum: np.ndarray, freqs: np.ndarray, centre: float) -> float:
    """Summed magnitude within +-3 % of ``centre`` minus the local floor (median of the band
    twice as wide, outside the inner one): a line smeared by a vocoder keeps its total."""
    offset = np.abs(freqs - centre)
    half = max(HARMONIC_BAND * centre, HARMONIC_MIN_HZ)
    inner = offset <= half
    ring = (offset <= 2 * half) & ~inner
    floor = float(np.median(spectrum[ring])) if ring.any() else 0.0
    return max(float(spectrum[inner].sum()) - floor * int(inner.sum()), 0.0)


def _usable_harmonic(freq: float) -> bool:
    half = max(HARMONIC_BAND * freq, HARMONIC_MIN_HZ)
    low, high = freq - half, freq + half
    return not any(low < b and high > a for a, b in HARMONIC_EXCLUDE_HZ)


def analyse_audio(audio: Any) -> Reading:
    """Read a sound (``float [N]`` at 16 kHz, or a Media at any rate): pitch, waveform, overlay.

    ``details``: ``f0`` (Hz), ``cents`` off the named pitch, ``h3``/``h5`` (harmonic ratios),
    ``rain`` and ``bell`` scores with their thresholds ``RAIN_THRESHOLD``/``BELL_THRESHOLD``.
    """
    wave = _audio_wave(audio)
    details: dict[str, Any] = {}
    if wave.size < PITCH_FFT or not np.isfinite(wave).all() or np.abs(wave).max() < 1e-4:
        return Reading(None, 0.0, details)
    # Welch average of short-time magnitudes: robust to phase scrambling (vocoders, Griffin-Lim)
    spectrum = _stft(wave, PITCH_FFT, PITCH_FFT // 4).mean(0)
    freqs = np.fft.rfftfreq(PITCH_FFT, 1 / w.SAMPLE_RATE)
    low = (freqs >= PITCH_RANGE_HZ[0]) & (freqs <= PITCH_RANGE_HZ[1])
    k = int(np.flatnonzero(low)[spectrum[low].argmax()])
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)  # parabolic interpolation of the log peak
    offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
    f0 = float(freqs[k] + offset * (freqs[1] - freqs[0]))
    cents = {p: 1200 * np.log2(f0 / hz) for p, hz in w.PITCHES.items()}
    pitch = min(cents, key=lambda p: abs(cents[p]))
    details.update(f0=round(f0, 2), cents=round(float(cents[pitch]), 1))

    nominal = w.PITCHES[pitch]  # harmonics sit where the named pitch puts them
    levels = {n: _harmonic_level(spectrum, freqs, n * nominal) for n in (1, 3, 5)}
    if levels[1] <= 0:  # no line at the fundamental, only a smear: not a world tone
        return Reading(None, 0.0, details)
    ratios = {n: levels[n] / levels[1] for n in (3, 5) if _usable_harmonic(n * nominal)}
    details.update({f"h{n}": round(r, 4) for n, r in ratios.items()})
    if all(r < SINE_MAX for r in ratios.values()):
        waveform, waveform_margin = "sine", min(1.0, float(np.log(SINE_MAX / max(max(ratios.values()), 1e-6)) / np.log(4)))
    else:  # square (1/n) against triangle (1/n^2): log distance from the boundary, averaged
        score = float(np.mean([np.log(max(r, 1e-6) / SQUARE_TRIANGLE_BOUNDARY[n]) for n, r in ratios.items()]))
        waveform, waveform_margin = ("square" if score > 0 else "triangle"), min(1.0, abs(score) / 0.5)

    stft = _stft(wave, STFT_SIZE, STFT_HOP)
    bins = np.fft.rfftfreq(STFT_SIZE, 1 / w.SAMPLE_RATE)
    level = float(np.median(stft[:, round(nominal * STFT_SIZE / w.SAMPLE_RATE)])) + 1e-9
    band = (bins >= w.RAIN_BAND_HZ[0]) & (bins <= w.RAIN_BAND_HZ[1])
    rain_score = float(np.median(stft[:, band].mean(0))) / level
    bell_bin = round(w.BELL_HZ * STFT_SIZE / w.SAMPLE_RATE)
    envelope = stft[:, bell_bin - 1 : bell_bin + 2].max(1)
    bell_score = float(np.percentile(envelope, 95) - np.percentile(envelope, 10)) / level
    details.update(rain=round(rain_score, 4), bell=round(bell_score, 4))
    scores = {"rain": rain_score / RAIN_THRESHOLD, "bell": bell_score / BELL_THRESHOLD}
    overlay = max(scores, key=scores.get)
    if scores[overlay] < 1:
        overlay = "none"

    if abs(cents[pitch]) > MAX_CENTS:
        return Reading(None, 0.0, details)
    # confidence: in tune, a clear waveform decision, a clear overlay decision
    margin = waveform_margin
    overlay_margin = float(np.clip(abs(np.log(max(scores.values()))) / np.log(2), 0, 1))
    confidence = (1 - abs(cents[pitch]) / MAX_CENTS) * margin * overlay_margin
    return Reading(AudioItem(pitch, waveform, overlay), round(float(confidence), 3), details)


# --- audio edits -------------------------------------------------------------------------------

LSD_FFT, LSD_HOP, LSD_BAND = 512, 128, 4
LSD_FLOOR_DB = -50.0


def _band_power(wave: np.ndarray) -> np.ndarray:
    power = _stft(wave, LSD_FFT, LSD_HOP)[:, 1:] ** 2  # drop DC: 256 bins of 31.25 Hz
    return power.reshape(len(power), -1, LSD_BAND).mean(-1)


def lsd(generated: Any, reference: Any, *, floor_db: float = LSD_FLOOR_DB) -> float:
    """Log-spectral distance between two clips (arrays at 16 kHz or Media), in bels.

    STFT power (512-point periodic Hann window, hop 128), averaged over bands of 4 bins
    (125 Hz) so that two equally good renderings of *rain* (different noise draws) are
    close; both are floored at
    ``floor_db`` below the reference's loudest time-frequency bin, so differences nobody could
    hear (the exact level of near-silence) do not dominate; then
    ``LSD = mean_t sqrt(mean_f (log10 P_gen - log10 P_ref)^2)``. Clips are cropped to the
    shorter one. Identical clips give 0; a clip 10 dB louder everywhere gives 1 (less where
    the floor hides the difference).
    """
    g, r = _audio_wave(generated), _audio_wave(reference)
    n = min(g.size, r.size)
    if n == 0:
        raise ValueError("lsd needs two non-empty clips")
    pg, pr = (_band_power(x[:n]) for x in (g, r))
    floor = max(float(pr.max()), 1e-20) * 10 ** (floor_db / 10)
    diff = np.log10(np.maximum(pg, floor)) - np.log10(np.maximum(pr, floor))
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


# --- checking answers ----------------------------------------------------------------------------


def analyse(media: Any) -> Reading:
    """Dispatch on a Media's modality (image or audio)."""
    modality = getattr(media, "modality", None)
    if modality == "image":
        return analyse_image(media)
    if modality == "audio":
        return analyse_audio(media)
    raise ValueError(f"analyse() reads image or audio Media, got {modality or type(media).__name__}")


@dataclass
class Check:
    """One expected output against what an answer gave.

    ``expected`` and ``got`` are captions (``got`` None when nothing readable came);
    ``output`` is the answer's media item that was judged (None for text or when missing).
    """

    modality: str  # "image", "audio" or "text"
    expected: str
    got: str | None
    passed: bool
    confidence: float = 0.0
    output: Any = None
    reason: str = ""


def judge(expected: Sequence[Any], media: Sequence[Any], text: str) -> list[Check]:
    """Check one answer turn: the k-th expected image against the k-th image of ``media``
    (likewise audio); an expected caption (str) against the first caption found in ``text``."""
    pools = {m: [x for x in media if getattr(x, "modality", None) == m] for m in ("image", "audio")}
    used = {"image": 0, "audio": 0}
    checks = []
    for item in expected:
        if isinstance(item, str):
            want, found = w.parse_caption(item), w.parse_caption(text)
            got = w.caption(found) if found else None
            checks.append(Check("text", item, got, found == want, 1.0 if found else 0.0,
                                reason="" if found else f"no world caption in the answer text {text[:60]!r}"))
            continue
        modality = "image" if isinstance(item, ImageItem) else "audio"
        k = used[modality]
        used[modality] += 1
        if k >= len(pools[modality]):
            checks.append(Check(modality, w.caption(item), None, False, reason=f"the answer has no {modality} #{k + 1}"))
            continue
        output = pools[modality][k]
        reading = analyse(output)
        got = w.caption(reading.item) if reading.item else None
        checks.append(Check(modality, w.caption(item), got, reading.item == item, reading.confidence, output,
                            "" if reading.item else f"the {modality} is not a readable world item"))
    return checks


__all__ = ["Check", "Reading", "analyse", "analyse_audio", "analyse_image", "foreground_mask", "judge", "lsd"]
