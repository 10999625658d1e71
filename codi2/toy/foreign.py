"""Foreign inputs: the world's items drawn and synthesised by code that is not the training renderer.

A user's own drawing of "a small red circle" is not the 32 x 32 hard-edged array of
:func:`codi2.toy.world.render_image`. This module draws the same items from the world's
*definition* (shape geometry, colours, pitches, waveforms in :mod:`codi2.toy.world`) with
other software and other choices, so that ``codi2 bench toy --inputs foreign`` measures whether
the model reads inputs it did not draw itself:

**Images** (Pillow, never the world's ``shape_mask``): the shape drawn as a polygon / ellipse at
4x supersampling and downsampled with a Lanczos filter (anti-aliased edges), on a square world
area of 24-160 px, shifted by up to 3 px (at 32 px scale), scaled by 0.90-1.10, its colour off by
up to 6 levels per channel; then padded with white to another aspect (up to 4:3, the square
area centred, so the encoder's centre crop sees it whole), optionally given an alpha channel
(transparent background) and saved as PNG or JPEG at quality 70-90. The file's bytes go through
:func:`codi2.core.media.load_image`, the path a user's file takes.

**Audio** (numpy, not the world's cached ``tone``): the tone's harmonics summed with a random
start phase, other fade lengths (2-40 ms, linear or raised cosine), gain -12..0 dB below the
world's peak, at a sample rate of 8, 11.025, 22.05, 32, 44.1 or 48 kHz (harmonics above the
Nyquist limit left out), mono or stereo, rain drawn from another noise generator and band
(FFT band-pass, same 3-6 kHz band), bells struck with a random phase; saved as WAV, FLAC,
OGG Vorbis or MP3 (every format the loader reads) and read back through :func:`codi2.core.media.load_audio` (resampled to 16 kHz, mixed to mono).

**Video**: every frame a foreign image of one shared drawing style (one clip, one software).

Everything is deterministic in the ``seed``: :func:`foreign_media` with the same item and seed
gives the same bytes.
"""

from __future__ import annotations

import io
import math
import random
from typing import TYPE_CHECKING

import numpy as np

from codi2.toy import world as w

if TYPE_CHECKING:
    from codi2.core.types import Media

SUPERSAMPLE = 4
MAX_SHIFT_PX = 3.0  # at the world's 32 px scale
SCALE_RANGE = (0.90, 1.10)
COLOUR_JITTER = 6  # levels per channel
JPEG_QUALITY = (70, 90)
SIDES = (24, 32, 48, 64, 96, 128, 160)
SAMPLE_RATES = (8000, 11025, 22050, 32000, 44100, 48000)
GAIN_DB = (-12.0, 0.0)
#: container -> soundfile subtype of the saved tone
AUDIO_CODECS = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}


def _style(rng: random.Random) -> dict:
    """One drawing style: the settings a piece of software (and its user) would fix for a file."""
    side = rng.choice(SIDES)
    aspect = rng.choice((1.0, 1.0, 4 / 3, 3 / 4, 5 / 4, 16 / 12))
    return {
        "side": side,
        "aspect": aspect,
        "dx": rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX),
        "dy": rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX),
        "scale": rng.uniform(*SCALE_RANGE),
        "jitter": tuple(rng.randint(-COLOUR_JITTER, COLOUR_JITTER) for _ in range(3)),
        "alpha": rng.random() < 0.25,
        "format": "PNG" if rng.random() < 0.4 else "JPEG",
        "quality": rng.randint(*JPEG_QUALITY),
    }


def draw_image(item: w.ImageItem, style: dict) -> bytes:
    """The encoded file (PNG or JPEG bytes) of ``item`` drawn in ``style`` (see the module docstring)."""
    from PIL import Image, ImageDraw

    side = style["side"]
    big = side * SUPERSAMPLE
    unit = big / w.IMAGE_SIDE  # one world pixel in supersampled pixels
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(w.COLOURS[item.colour], style["jitter"]))
    mode = "RGBA" if style["alpha"] else "RGB"
    background = (255, 255, 255, 0) if style["alpha"] else w.BACKGROUND
    fill = (*colour, 255) if style["alpha"] else colour
    canvas = Image.new(mode, (big, big), background)
    pen = ImageDraw.Draw(canvas)
    half = w.SIZE_FRACTION[item.size] * big * style["scale"] / 2
    cx = big / 2 + style["dx"] * unit
    cy = big / 2 + style["dy"] * unit
    if item.shape == "circle":
        pen.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif item.shape == "square":
        pen.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:  # upright isosceles triangle, base = height, in its bounding square
        pen.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    image = canvas.resize((side, side), Image.LANCZOS)
    if style["aspect"] != 1.0:  # pad the long side with background: the square area stays centred
        width = round(side * max(style["aspect"], 1.0))
        height = round(side / min(style["aspect"], 1.0))
        padded = Image.new(mode, (width, height), background)
        padded.paste(image, ((width - side) // 2, (height - side) // 2))
        image = padded
    buffer = io.BytesIO()
    if style["format"] == "JPEG":
        if style["alpha"]:  # JPEG has no alpha: flatten the way an editor exports it
            flat = Image.new("RGB", image.size, w.BACKGROUND)
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(buffer, "JPEG", quality=style["quality"])
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def foreign_image(item: w.ImageItem, seed: int | str, *, name: str | None = None, style: dict | None = None) -> Media:
    """``item`` drawn by the foreign renderer and read back by the media loader, as a ``Media``."""
    from codi2.core.media import load_image

    style = style or _style(random.Random(f"foreign-image/{seed}"))
    media = load_image(draw_image(item, style), name=name)
    media.meta.update(caption=w.caption(item), foreign=_describe(style))
    return media


def foreign_video(item: w.VideoItem, seed: int | str, *, name: str | None = None) -> Media:
    """Every frame of the clip drawn in one foreign style, at the world's frame rate."""
    from codi2.core.types import Media

    style = _style(random.Random(f"foreign-video/{seed}"))
    frames = [foreign_image(frame, seed, style=style).data for frame in item.frames]
    return Media("video", np.stack(frames), fps=w.VIDEO_FPS, name=name,
                 meta={"caption": w.caption(item), "foreign": _describe(style)})


def _describe(style: dict) -> str:
    fmt = f"JPEG q{style['quality']}" if style["format"] == "JPEG" else "PNG"
    return (f"{style['side']} px x{style['scale']:.2f}, shift ({style['dx']:+.1f}, {style['dy']:+.1f}), "
            f"aspect {style['aspect']:.2f}, {fmt}{', alpha' if style['alpha'] else ''}")


# --- tones -------------------------------------------------------------------------------


def synthesise(item: w.AudioItem, rng: random.Random) -> tuple[np.ndarray, int]:
    """``(samples [n] or [n, 2], sample_rate)`` of ``item``, synthesised independently."""
    rate = rng.choice(SAMPLE_RATES)
    n = round(w.DURATION * rate)
    t = np.arange(n) / rate
    f0 = w.PITCHES[item.pitch]
    phase = rng.uniform(0, 2 * math.pi)
    limit = min(w.HARMONIC_LIMIT_HZ, 0.45 * rate)
    wave = np.zeros(n)
    k = 1
    while k * f0 <= limit:  # the world's definition: sine; square 1/k; triangle +-1/k^2 (odd k)
        if item.waveform == "sine":
            amp = 1.0 if k == 1 else 0.0
        elif item.waveform == "square":
            amp = 1.0 / k
        else:
            amp = (-1) ** ((k - 1) // 2) / k**2
        wave += amp * np.sin(k * (2 * math.pi * f0 * t + phase))
        k += 2
    wave *= w.TONE_AMPLITUDE / np.abs(wave).max()
    fade = max(1, int(rng.uniform(0.002, 0.040) * rate))
    ramp = np.linspace(0, 1, fade) if rng.random() < 0.5 else np.sin(np.linspace(0, math.pi / 2, fade)) ** 2
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]
    noise_rng = np.random.default_rng(rng.randrange(2**31))
    if item.overlay == "rain":
        noise = noise_rng.uniform(-1, 1, n)
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(n, 1 / rate)
        spectrum[(freqs < w.RAIN_BAND_HZ[0]) | (freqs > min(w.RAIN_BAND_HZ[1], 0.45 * rate))] = 0
        band = np.fft.irfft(spectrum, n)
        wave += band * (w.RAIN_RMS / np.sqrt(np.mean(band**2)))
    elif item.overlay == "bell":
        offset = rng.uniform(0, 0.02)
        for start in np.arange(offset, w.DURATION, w.BELL_PERIOD_SECONDS):
            local = t - start
            on = local >= 0
            wave[on] += w.BELL_AMPLITUDE * np.exp(-local[on] / w.BELL_DECAY_SECONDS) * np.sin(2 * math.pi * w.BELL_HZ * local[on])
    wave *= 10 ** (rng.uniform(*GAIN_DB) / 20)
    wave = np.clip(wave, -1.0, 1.0)
    if rng.random() < 0.5:  # stereo: the right channel a little quieter
        wave = np.stack([wave, wave * rng.uniform(0.7, 1.0)], axis=1)
    return wave.astype(np.float32), rate


def foreign_audio(item: w.AudioItem, seed: int | str, *, name: str | None = None) -> Media:
    """``item`` synthesised independently, saved as WAV, FLAC, OGG or MP3 and read back by the media loader."""
    import soundfile

    from codi2.core.media import load_audio

    rng = random.Random(f"foreign-audio/{seed}")
    samples, rate = synthesise(item, rng)
    fmt = rng.choice(sorted(AUDIO_CODECS))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=AUDIO_CODECS[fmt])
    media = load_audio(buffer.getvalue(), name=name)
    media.meta.update(caption=w.caption(item), foreign=f"{rate} Hz, {'stereo' if samples.ndim == 2 else 'mono'}, {fmt}")
    return media


def foreign_media(item: w.Item, seed: int | str, *, name: str | None = None) -> Media:
    """Any world item as a foreign ``Media`` (image, audio or video), deterministic in ``seed``."""
    if isinstance(item, w.ImageItem):
        return foreign_image(item, seed, name=name)
    if isinstance(item, w.AudioItem):
        return foreign_audio(item, seed, name=name)
    if isinstance(item, w.VideoItem):
        return foreign_video(item, seed, name=name)
    raise TypeError(f"foreign_media() takes a world item, got {type(item).__name__}")


def foreign_inputs(sample, seed: int, index: int):
    """A copy of task sample number ``index`` whose input media are foreign drawings of the same
    items (each input its own style). Prompts, expected answers and targets are unchanged."""
    from dataclasses import replace

    media = {name: foreign_media(item, f"{seed}/{sample.task}/{index}/{name}", name=name) for name, item in sample.inputs.items()}
    return replace(sample, media=media)


__all__ = ["draw_image", "foreign_audio", "foreign_image", "foreign_inputs", "foreign_media", "foreign_video", "synthesise"]
