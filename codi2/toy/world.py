"""The "shapes & tones" world: a small procedural universe the toy CoDi-2 is trained on.

Everything here is numpy only and deterministic (audio overlays of random noise take a
``seed``; the same seed gives the same samples).

**Images** — ``uint8 [32, 32, 3]``, white background ``(255, 255, 255)``, one filled shape,
centred, hard edges (every pixel is either white or exactly the shape's colour):

- shapes: ``circle``, ``square``, ``triangle`` (upright isosceles, base = height);
- sizes: ``small`` (the shape spans 40 % of the width: 12.8 px), ``large`` (75 %: 24 px);
- colours (exact RGB): red (220, 40, 40), green (40, 170, 60), blue (40, 80, 220),
  yellow (230, 200, 40), purple (150, 60, 190), orange (240, 130, 30).

**Audio** — ``float32 [16000]``, 16 kHz mono, 1.0 s:

- a tone at pitch C4 261.63 Hz, E4 329.63, G4 392.00, A4 440.00, C5 523.25 or D5 587.33,
  peak amplitude 0.45, 10 ms raised-cosine fade in and out;
- waveform ``sine``, ``square`` (odd harmonics at 1/n) or ``triangle`` (odd harmonics at
  1/n^2, alternating sign), band-limited (harmonics above 7.5 kHz are left out, so nothing
  aliases);
- overlay ``none``, ``rain`` (white noise band-passed to 3-6 kHz, RMS 0.08, drawn from
  ``seed``) or ``bell`` (a 2 kHz sine, amplitude 0.35, decaying with a 60 ms time constant,
  struck at 0, 250, 500 and 750 ms).

**Text** — captions: ``"a large red circle"``, ``"a sine tone at E4"``,
``"a square tone at G4 with bells"``, ``"a triangle tone at C5 with rain"``.
:func:`parse_caption` reads them back.

**The cross-modal rule** — colour sets the pitch (red C4, green E4, blue G4, yellow A4,
purple C5, orange D5); shape sets the waveform (circle sine, square square, triangle
triangle). :func:`sound_of` maps an image item to its tone (overlay ``none``);
:func:`look_of` maps a tone to its image item, always ``large`` (sound carries no size) and
ignoring the overlay.

**Video** — :func:`video_sequence` gives ``n`` frames (default 4) of world images whose colour
steps through :data:`COLOUR_ORDER` (wrapping; rule ``colour``) or whose shape cycles through
:data:`SHAPE_ORDER` *while the size alternates* (rule ``shape``), everything else fixed;
``VideoItem.following`` is the next frame. Both rules have period 6, longer than a clip of 4
frames plus the next one, so the next frame is never a copy of a shown frame (a shape cycle
alone has period 3: its fifth frame would equal the second).

**Held-out combinations** — :data:`HELD_OUT`: purple triangles and orange circles (any size)
as image targets, the G4 square tone with bells as an audio target. No training conversation
has one of these as its answer (see :mod:`codi2.toy.tasks`); :func:`is_held_out` tells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from codi2.core.types import Media

# --- the vocabulary of the world -----------------------------------------------------------

IMAGE_SIDE = 32
BACKGROUND = (255, 255, 255)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
SIZE_FRACTION: dict[str, float] = {"small": 0.40, "large": 0.75}  # of the image width
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 190),
    "orange": (240, 130, 30),
}
COLOUR_ORDER: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPE_ORDER: tuple[str, ...] = ("circle", "square", "triangle")

SAMPLE_RATE = 16000
DURATION = 1.0
NUM_SAMPLES = int(SAMPLE_RATE * DURATION)
PITCHES: dict[str, float] = {"C4": 261.63, "E4": 329.63, "G4": 392.00, "A4": 440.00, "C5": 523.25, "D5": 587.33}
WAVEFORMS: tuple[str, ...] = ("sine", "square", "triangle")
OVERLAYS: tuple[str, ...] = ("none", "rain", "bell")
OVERLAY_WORDS: dict[str, str] = {"none": "", "rain": "rain", "bell": "bells"}  # as captions say them

TONE_AMPLITUDE = 0.45
FADE_SECONDS = 0.010
HARMONIC_LIMIT_HZ = 7500.0
RAIN_BAND_HZ = (3000.0, 6000.0)
RAIN_RMS = 0.08
BELL_HZ = 2000.0
BELL_AMPLITUDE = 0.35
BELL_DECAY_SECONDS = 0.060
BELL_PERIOD_SECONDS = 0.250

VIDEO_FPS = 2.0

# the cross-modal rule
PITCH_OF_COLOUR: dict[str, str] = {"red": "C4", "green": "E4", "blue": "G4", "yellow": "A4", "purple": "C5", "orange": "D5"}
WAVEFORM_OF_SHAPE: dict[str, str] = {"circle": "sine", "square": "square", "triangle": "triangle"}
COLOUR_OF_PITCH: dict[str, str] = {p: c for c, p in PITCH_OF_COLOUR.items()}
SHAPE_OF_WAVEFORM: dict[str, str] = {w: s for s, w in WAVEFORM_OF_SHAPE.items()}
LOOK_SIZE = "large"  # the size :func:`look_of` draws (a sound has no size)


# --- items ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageItem:
    """One world image: a ``shape`` of a ``colour`` and ``size`` (names from SHAPES, COLOURS, SIZES)."""

    shape: str
    colour: str
    size: str = "large"

    def __post_init__(self) -> None:
        _check("shape", self.shape, SHAPES)
        _check("colour", self.colour, tuple(COLOURS))
        _check("size", self.size, SIZES)

    def with_(self, **changes: str) -> ImageItem:
        """A copy with some attributes changed: ``item.with_(colour="green")``."""
        return replace(self, **changes)


@dataclass(frozen=True)
class AudioItem:
    """One world sound: a tone at ``pitch`` with ``waveform``, plus an ``overlay``."""

    pitch: str
    waveform: str
    overlay: str = "none"

    def __post_init__(self) -> None:
        _check("pitch", self.pitch, tuple(PITCHES))
        _check("waveform", self.waveform, WAVEFORMS)
        _check("overlay", self.overlay, OVERLAYS)

    def with_(self, **changes: str) -> AudioItem:
        return replace(self, **changes)


@dataclass(frozen=True)
class VideoItem:
    """A clip of world frames; ``rule`` ("colour" or "shape") says what changes frame to frame."""

    frames: tuple[ImageItem, ...]
    rule: str

    def __post_init__(self) -> None:
        _check("rule", self.rule, RULES)
        if not self.frames:
            raise ValueError("a VideoItem needs at least one frame")

    @property
    def following(self) -> ImageItem:
        """The frame that comes next under the clip's rule."""
        return next_frame(self.frames[-1], self.rule)


Item = ImageItem | AudioItem | VideoItem
RULES: tuple[str, ...] = ("colour", "shape")


def _check(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {field} {value!r}; the world has {', '.join(allowed)}")


def all_image_items() -> list[ImageItem]:
    """Every world image item (36), in a fixed order."""
    return [ImageItem(s, c, z) for s in SHAPES for c in COLOURS for z in SIZES]


def all_audio_items() -> list[AudioItem]:
    """Every world audio item (54), in a fixed order."""
    return [AudioItem(p, w, o) for p in PITCHES for w in WAVEFORMS for o in OVERLAYS]


# --- the cross-modal rule, videos, held-out -----------------------------------------------------


def sound_of(item: ImageItem) -> AudioItem:
    """The tone an image makes: colour -> pitch, shape -> waveform, no overlay."""
    return AudioItem(PITCH_OF_COLOUR[item.colour], WAVEFORM_OF_SHAPE[item.shape], "none")


def look_of(item: AudioItem) -> ImageItem:
    """The image a tone looks like: pitch -> colour, waveform -> shape, size ``large``."""
    return ImageItem(SHAPE_OF_WAVEFORM[item.waveform], COLOUR_OF_PITCH[item.pitch], LOOK_SIZE)


def next_frame(item: ImageItem, rule: str) -> ImageItem:
    """One step of a clip: the next colour of COLOUR_ORDER, or the next shape of SHAPE_ORDER
    together with the other size (period 6, so no clip of up to 5 frames repeats a frame)."""
    _check("rule", rule, RULES)
    if rule == "colour":
        return item.with_(colour=COLOUR_ORDER[(COLOUR_ORDER.index(item.colour) + 1) % len(COLOUR_ORDER)])
    other_size = SIZES[(SIZES.index(item.size) + 1) % len(SIZES)]
    return item.with_(shape=SHAPE_ORDER[(SHAPE_ORDER.index(item.shape) + 1) % len(SHAPE_ORDER)], size=other_size)


def video_sequence(start: ImageItem, rule: str, n: int = 4) -> VideoItem:
    """``n`` frames from ``start`` following ``rule``; ``.following`` is frame ``n + 1``."""
    if n < 1:
        raise ValueError(f"a clip needs n >= 1 frames, got {n}")
    frames = [start]
    for _ in range(n - 1):
        frames.append(next_frame(frames[-1], rule))
    return VideoItem(tuple(frames), rule)


HELD_OUT: dict[str, tuple] = {
    "image": (("triangle", "purple"), ("circle", "orange")),  # (shape, colour), any size
    "audio": (("G4", "square", "bell"),),  # (pitch, waveform, overlay)
}


def is_held_out(item: object) -> bool:
    """True for a held-out combination (an image or audio item; other values are never held out)."""
    if isinstance(item, ImageItem):
        return (item.shape, item.colour) in HELD_OUT["image"]
    if isinstance(item, AudioItem):
        return (item.pitch, item.waveform, item.overlay) in HELD_OUT["audio"]
    return False


# --- captions ------------------------------------------------------------------------------


def caption(item: Item) -> str:
    """``"a large red circle"``, ``"a sine tone at E4 with rain"``, ``"a clip of 4 frames"``."""
    if isinstance(item, ImageItem):
        return f"a {item.size} {item.colour} {item.shape}"
    if isinstance(item, AudioItem):
        text = f"a {item.waveform} tone at {item.pitch}"
        return text + (f" with {OVERLAY_WORDS[item.overlay]}" if item.overlay != "none" else "")
    if isinstance(item, VideoItem):
        return f"a clip of {len(item.frames)} frames"
    raise TypeError(f"caption() takes a world item, got {type(item).__name__}")


_IMAGE_CAPTION = re.compile(rf"\b({'|'.join(SIZES)})\s+({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})\b", re.IGNORECASE)
_AUDIO_CAPTION = re.compile(
    rf"\b({'|'.join(WAVEFORMS)})\s+tone\s+at\s+({'|'.join(PITCHES)})\b(?:\s+with\s+(rain|bells?))?", re.IGNORECASE
)


def parse_caption(text: str) -> ImageItem | AudioItem | None:
    """The first world item described in ``text`` (a caption anywhere inside it), else None."""
    audio = _AUDIO_CAPTION.search(text)
    image = _IMAGE_CAPTION.search(text)
    if audio and (not image or audio.start() < image.start()):
        overlay = {"rain": "rain", "bell": "bell", "bells": "bell"}.get((audio.group(3) or "").lower(), "none")
        return AudioItem(audio.group(2).upper(), audio.group(1).lower(), overlay)
    if image:
        return ImageItem(image.group(3).lower(), image.group(2).lower(), image.group(1).lower())
    return None


# --- rendering -------------------------------------------------------------------------------


def shape_mask(shape: str, size: str) -> np.ndarray:
    """The boolean ``[32, 32]`` footprint of a shape: pixel centres inside the outline."""
    _check("shape", shape, SHAPES)
    _check("size", size, SIZES)
    side = SIZE_FRACTION[size] * IMAGE_SIDE
    centre = IMAGE_SIDE / 2
    y, x = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE] + 0.5  # pixel centres
    dx, dy = x - centre, y - centre
    half = side / 2
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # upright triangle, apex at the top centre, base at the bottom of its bounding square
    depth = dy + half  # 0 at the apex row, `side` at the base
    return (depth >= 0) & (depth <= side) & (np.abs(dx) <= depth / 2)


def render_image(item: ImageItem) -> np.ndarray:
    """The world image of ``item``: ``uint8 [32, 32, 3]``."""
    image = np.empty((IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image[shape_mask(item.shape, item.size)] = COLOURS[item.colour]
    return image


def render_video(item: VideoItem) -> np.ndarray:
    """The frames of a clip: ``uint8 [n, 32, 32, 3]``."""
    return np.stack([render_image(f) for f in item.frames])


def _harmonics(waveform: str, f0: float) -> list[tuple[float, float]]:
    """(frequency, amplitude) of a band-limited waveform with fundamental amplitude 1."""
    if waveform == "sine":
        return [(f0, 1.0)]
    out = []
    n = 1
    while n * f0 <= HARMONIC_LIMIT_HZ:
        if waveform == "square":
            out.append((n * f0, 1.0 / n))
        else:  # triangle: odd harmonics at 1/n^2 with alternating sign
            out.append((n * f0, (-1) ** ((n - 1) // 2) / n**2))
        n += 2
    return out


def tone(pitch: str, waveform: str) -> np.ndarray:
    """The bare tone (no overlay), ``float64 [16000]``, peak :data:`TONE_AMPLITUDE`."""
    _check("pitch", pitch, tuple(PITCHES))
    _check("waveform", waveform, WAVEFORMS)
    return _tone(pitch, waveform).copy()


@cache  # 18 tones in all; training renders them over and over
def _tone(pitch: str, waveform: str) -> np.ndarray:
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    wave = np.zeros(NUM_SAMPLES)
    for freq, amp in _harmonics(waveform, PITCHES[pitch]):
        wave += amp * np.sin(2 * np.pi * freq * t)
    wave *= TONE_AMPLITUDE / np.abs(wave).max()
    fade = int(FADE_SECONDS * SAMPLE_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]
    return wave


def rain(seed: int = 0) -> np.ndarray:
    """Band-limited noise (3-6 kHz), RMS :data:`RAIN_RMS`, from ``seed``."""
    noise = np.random.default_rng(seed).standard_normal(NUM_SAMPLES)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(NUM_SAMPLES, 1 / SAMPLE_RATE)
    spectrum[(freqs < RAIN_BAND_HZ[0]) | (freqs > RAIN_BAND_HZ[1])] = 0
    band = np.fft.irfft(spectrum, NUM_SAMPLES)
    return band * (RAIN_RMS / np.sqrt(np.mean(band**2)))


def bells() -> np.ndarray:
    """Decaying 2 kHz strikes every 250 ms."""
    return _bells().copy()


@lru_cache(maxsize=1)
def _bells() -> np.ndarray:
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    out = np.zeros(NUM_SAMPLES)
    for start in np.arange(0.0, DURATION, BELL_PERIOD_SECONDS):
        local = t - start
        on = local >= 0
        out[on] += BELL_AMPLITUDE * np.exp(-local[on] / BELL_DECAY_SECONDS) * np.sin(2 * np.pi * BELL_HZ * local[on])
    return out


def render_audio(item: AudioItem, seed: int = 0) -> np.ndarray:
    """The world sound of ``item``: ``float32 [16000]`` in [-1, 1] (``seed`` draws the rain)."""
    wave = tone(item.pitch, item.waveform)
    if item.overlay == "rain":
        wave = wave + rain(seed)
    elif item.overlay == "bell":
        wave = wave + bells()
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def to_media(item: Item, *, name: str | None = None, seed: int = 0) -> Media:
    """The item as a :class:`~codi2.core.types.Media` (image, audio at 16 kHz, or video at 2 fps).

    ``meta["caption"]`` holds its caption; ``seed`` draws audio rain.
    """
    from codi2.core.types import Media

    meta = {"caption": caption(item)}
    if isinstance(item, ImageItem):
        return Media("image", render_image(item), name=name, meta=meta)
    if isinstance(item, AudioItem):
        return Media("audio", render_audio(item, seed), sample_rate=SAMPLE_RATE, name=name, meta=meta)
    if isinstance(item, VideoItem):
        return Media("video", render_video(item), fps=VIDEO_FPS, name=name, meta=meta)
    raise TypeError(f"to_media() takes a world item, got {type(item).__name__}")


__all__ = [
    "COLOURS", "COLOUR_ORDER", "HELD_OUT", "OVERLAYS", "PITCHES", "SAMPLE_RATE", "SHAPES", "SHAPE_ORDER",
    "SIZES", "WAVEFORMS", "AudioItem", "ImageItem", "Item", "VideoItem", "all_audio_items", "all_image_items",
    "caption", "is_held_out", "look_of", "next_frame", "parse_caption", "render_audio", "render_image",
    "render_video", "sound_of", "to_media", "video_sequence",
]
