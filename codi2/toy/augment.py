"""Training augmentation: world items as other software would hand them to the model.

The toy recipe trains on these views so that the model reads a user's own drawing or recording
of a world item (``codi2 bench toy --inputs foreign`` measures that with an *independent*
renderer, :mod:`codi2.toy.foreign`, which this module neither imports nor copies: the test split
stays unseen). Every view goes through the loader a user's file takes
(:func:`codi2.core.media.load_image` / :func:`~codi2.core.media.load_audio`), so decoding,
alpha compositing, mixing to mono and resampling are the real ones.

**Images** — the world's geometry (:data:`~codi2.toy.world.SIZE_FRACTION`, the shape outlines of
:func:`~codi2.toy.world.shape_mask`) evaluated on a canvas of 20-192 px at 1-4 samples per pixel
per axis (1: hard edges; more: anti-aliased coverage, box-filtered), shifted by up to 3.5 px and
scaled by 0.88-1.12 (at 32 px scale), its colour off by up to 8 levels per channel, sometimes
blurred (Gaussian, up to 0.8 px), padded to an aspect of 3:4..16:9 around the world square,
sometimes with an alpha channel (transparent background), and saved as PNG, JPEG
(quality 60-95) or WebP (quality 60-95).

**Audio** — the world's harmonics with a random start phase and fades of 1-50 ms (linear or
raised cosine), overlays shifted in time (rain from a fresh seed), gain -18..0 dB, then
resampled to 8-48 kHz (band-limited; at 8 kHz the rain band is partly lost, as in a real
recording), mono or stereo, and saved as WAV (16/24-bit), FLAC, OGG Vorbis or MP3 — every
format :func:`~codi2.core.media.load_audio` reads.

Views are deterministic in ``(item, seed)``. :func:`view_pool` precomputes ``k`` views per item
once, so the training loops only index into it.
"""

from __future__ import annotations

import io
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from codi2.toy import world as w

if TYPE_CHECKING:
    from codi2.core.types import Media

MAX_SHIFT = 3.5  # world pixels (at 32 px scale)
SCALE = (0.88, 1.12)
JITTER = 8  # colour levels per channel
SIDE = (20, 192)
ASPECTS = (1.0, 1.0, 1.0, 4 / 3, 3 / 4, 16 / 9, 5 / 4)
IMAGE_FORMATS = ("PNG", "JPEG", "JPEG", "WEBP")
QUALITY = (60, 95)
RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
GAIN_DB = (-18.0, 0.0)
#: (soundfile format, subtype): every container :func:`codi2.core.media.load_audio` decodes
AUDIO_FORMATS = (("WAV", "PCM_16"), ("WAV", "PCM_24"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"))


# --- images ------------------------------------------------------------------------------------


def image_style(rng: random.Random) -> dict[str, Any]:
    """The settings one file's software and user fix (a clip shares one style across frames)."""
    return {
        "side": rng.randint(*SIDE), "samples": rng.choice((1, 2, 3, 4)),
        "dx": rng.uniform(-MAX_SHIFT, MAX_SHIFT), "dy": rng.uniform(-MAX_SHIFT, MAX_SHIFT),
        "scale": rng.uniform(*SCALE), "jitter": [rng.randint(-JITTER, JITTER) for _ in range(3)],
        "blur": rng.uniform(0.2, 0.8) if rng.random() < 0.3 else 0.0,
        "aspect": rng.choice(ASPECTS), "alpha": rng.random() < 0.25,
        "format": rng.choice(IMAGE_FORMATS), "quality": rng.randint(*QUALITY),
    }


def coverage(shape: str, size: str, side: int, samples: int, dx: float, dy: float, scale: float) -> np.ndarray:
    """Float ``[side, side]`` in [0, 1]: the fraction of each pixel inside the world's outline of
    ``shape`` (``samples`` x ``samples`` points per pixel), shifted and scaled in world pixels."""
    n = side * samples
    unit = w.IMAGE_SIDE / side  # world pixels per canvas pixel
    coords = (np.arange(n) + 0.5) / samples * unit  # sample points in world pixels
    x = coords[None, :] - (w.IMAGE_SIDE / 2 + dx)
    y = coords[:, None] - (w.IMAGE_SIDE / 2 + dy)
    half = w.SIZE_FRACTION[size] * w.IMAGE_SIDE * scale / 2
    if shape == "circle":
        inside = x**2 + y**2 <= half**2
    elif shape == "square":
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    else:  # the world's upright triangle: apex at the top, base = height
        depth = y + half
        inside = (depth >= 0) & (depth <= 2 * half) & (np.abs(x) <= depth / 2)
    return inside.reshape(side, samples, side, samples).mean(axis=(1, 3))


def image_file(item: w.ImageItem, style: dict[str, Any]) -> bytes:
    """The encoded file of ``item`` drawn in ``style``."""
    from PIL import Image, ImageFilter

    side = style["side"]
    a = coverage(item.shape, item.size, side, style["samples"], style["dx"], style["dy"], style["scale"])
    colour = np.clip(np.array(w.COLOURS[item.colour]) + style["jitter"], 0, 255)
    if style["alpha"]:
        pixels = np.concatenate([np.broadcast_to(colour, (side, side, 3)), 255 * a[..., None]], axis=-1)
    else:
        pixels = np.array(w.BACKGROUND) * (1 - a[..., None]) + colour * a[..., None]
    image = Image.fromarray(np.round(pixels).astype(np.uint8), "RGBA" if style["alpha"] else "RGB")
    if style["blur"]:
        image = image.filter(ImageFilter.GaussianBlur(style["blur"] * side / w.IMAGE_SIDE))
    aspect = style["aspect"]
    if aspect != 1.0:  # pad around the world square (the encoder's centre crop keeps it whole)
        size = (round(side * max(aspect, 1.0)), round(side / min(aspect, 1.0)))
        canvas = Image.new(image.mode, size, (255, 255, 255, 0) if style["alpha"] else w.BACKGROUND)
        canvas.paste(image, ((size[0] - side) // 2, (size[1] - side) // 2))
        image = canvas
    fmt = style["format"]
    if fmt == "JPEG" and image.mode == "RGBA":  # no alpha in JPEG: flattened on white
        flat = Image.new("RGB", image.size, w.BACKGROUND)
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({} if fmt == "PNG" else {"quality": style["quality"]}))
    return buffer.getvalue()


def image_view(item: w.ImageItem, seed: int | str, *, style: dict[str, Any] | None = None) -> Media:
    """One augmented view of ``item``, read back by :func:`codi2.core.media.load_image`."""
    from codi2.core.media import load_image

    style = style or image_style(random.Random(f"augment-image/{seed}"))
    media = load_image(image_file(item, style))
    media.meta.update(caption=w.caption(item))
    return media


def video_view(item: w.VideoItem, seed: int | str) -> Media:
    """Every frame of the clip in one augmented style (frames share size and software)."""
    from codi2.core.types import Media

    style = image_style(random.Random(f"augment-video/{seed}"))
    frames = np.stack([image_view(f, seed, style=style).data for f in item.frames])
    return Media("video", frames, fps=w.VIDEO_FPS, meta={"caption": w.caption(item)})


# --- audio -------------------------------------------------------------------------------------


def audio_samples(item: w.AudioItem, rng: random.Random) -> np.ndarray:
    """The item at 16 kHz with a random start phase, fades, overlay timing and gain."""
    t = np.arange(w.NUM_SAMPLES) / w.SAMPLE_RATE
    start = rng.uniform(0, 1 / w.PITCHES[item.pitch])  # a time offset = a start phase
    wave = np.zeros(w.NUM_SAMPLES)
    for freq, amp in w._harmonics(item.waveform, w.PITCHES[item.pitch]):
        wave += amp * np.sin(2 * np.pi * freq * (t + start))
    wave *= w.TONE_AMPLITUDE / np.abs(wave).max()
    fade = max(1, int(rng.uniform(0.001, 0.050) * w.SAMPLE_RATE))
    ramp = np.linspace(0, 1, fade) if rng.random() < 0.5 else 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]
    if item.overlay == "rain":
        wave += w.rain(rng.randrange(10**6, 2 * 10**6))  # seeds the world's own rain never uses
    elif item.overlay == "bell":
        wave += np.roll(w.bells(), rng.randrange(0, int(0.03 * w.SAMPLE_RATE)))
    return np.clip(wave * 10 ** (rng.uniform(*GAIN_DB) / 20), -1.0, 1.0)


def audio_file(item: w.AudioItem, seed: int | str) -> bytes:
    """The encoded file of one augmented recording of ``item`` (see the module docstring)."""
    import soundfile

    from codi2.core.audio import resample

    rng = random.Random(f"augment-audio/{seed}")
    wave = audio_samples(item, rng)
    rate = rng.choice(RATES)
    if rate != w.SAMPLE_RATE:
        wave = np.clip(resample(wave.astype(np.float32), w.SAMPLE_RATE, rate), -1.0, 1.0)
    if rng.random() < 0.4:  # stereo, the channels a little unbalanced
        wave = np.stack([wave, wave * rng.uniform(0.6, 1.0)], axis=1)
    fmt, subtype = rng.choice(AUDIO_FORMATS)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def audio_view(item: w.AudioItem, seed: int | str) -> Media:
    """One augmented view of ``item``, read back (16 kHz mono) by :func:`codi2.core.media.load_audio`."""
    from codi2.core.media import load_audio

    media = load_audio(audio_file(item, seed))
    media.meta.update(caption=w.caption(item))
    return media


def view(item: w.Item, seed: int | str) -> Media:
    """An augmented view of any world item (image, audio or video)."""
    if isinstance(item, w.ImageItem):
        return image_view(item, seed)
    if isinstance(item, w.AudioItem):
        return audio_view(item, seed)
    if isinstance(item, w.VideoItem):
        return video_view(item, seed)
    raise TypeError(f"view() takes a world item, got {type(item).__name__}")


class ViewPool:
    """``k`` augmented views per world item, made on first use and kept: the MLLM dataset picks
    one per input at random (or the world's own render, with probability ``exact``)."""

    def __init__(self, k: int, seed: int = 0, exact: float = 0.25):
        self.k, self.seed, self.exact = k, seed, exact
        self._views: dict[tuple[Any, int], Media] = {}

    def pick(self, item: w.Item, rng: random.Random) -> Media | None:
        """A pooled view of ``item``, or None where the world's own render should be used."""
        if self.k < 1 or rng.random() < self.exact:
            return None
        j = rng.randrange(self.k)
        if (item, j) not in self._views:
            self._views[item, j] = view(item, f"{self.seed}/{j}/{item}")
        return self._views[item, j]


def encoder_views(encoder: Any, items: list[Any], k: int, seed: int) -> tuple[Any, list[Any]]:
    """The encoder's network inputs of ``k`` views of every item (one modality), made once before
    the encoder phase, and the item behind each row."""
    import torch

    order = [item for item in items for _ in range(k)]
    if not order:
        return torch.zeros(0), []
    modality = "image" if isinstance(items[0], w.ImageItem) else "audio"
    views = [view(item, f"encoder/{seed}/{j}/{item}") for item in items for j in range(k)]
    return encoder.inputs(views, modality), order


def rolled(x: Any, most: int, generator: Any) -> Any:
    """Each image tensor of ``x`` ``[B, C, H, W]`` rolled by its own random shift of up to
    ``most`` pixels per axis (what wraps around is the white margin of a world image)."""
    import torch

    shifts = torch.randint(-most, most + 1, (len(x), 2), generator=generator).tolist()
    return torch.stack([torch.roll(img, (dy, dx), dims=(1, 2)) for img, (dy, dx) in zip(x, shifts)])


def augment_conversation(sample: Any, pool: ViewPool, rng: random.Random) -> list[dict[str, Any]]:
    """``sample.conversation`` with each user-supplied input (a part named after one of
    ``sample.inputs``) replaced by a pooled view of its item; answers and targets stay exact."""
    chosen: dict[str, Media | None] = {}
    out = []
    for message in sample.conversation:
        content = message["content"]
        if message["role"] == "user" and isinstance(content, list):
            parts = []
            for part in content:
                name = part.get("name")
                if name in sample.inputs and part.get("data") is not None:
                    if name not in chosen:
                        chosen[name] = pool.pick(sample.inputs[name], rng)
                    if chosen[name] is not None:
                        part = {**part, "data": chosen[name]}
                parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


__all__ = ["ViewPool", "audio_file", "audio_view", "augment_conversation", "coverage", "encoder_views", "image_file", "image_view", "rolled", "video_view", "view"]
