"""ImageBind's input pipelines, reproducing the reference preprocessing exactly.

- image: shorter side to 224 (bicubic, antialiased PIL resize), centre crop 224, CLIP mean/std;
- audio: 16 kHz mono, clips of 2 s at evenly spaced starts, each a Kaldi log-mel filterbank
  (128 bins, 25 ms Hann window, 10 ms shift) padded or cut to 204 frames, normalised with
  mean -4.268 and std 9.138;
- video: clips of 2 s at evenly spaced starts, 2 frames per clip picked uniformly, shorter side
  scaled to 224 (bilinear), CLIP mean/std, 3 spatial crops (start, centre, end of the longer side);
- text: CLIP byte-pair tokens, 77 per item (start token, text, end token, zero padding);
- depth (Meta publishes no loader; Omnivore's, whose recipe ImageBind follows): depth in metres
  clipped to [0.01, 50], disparity = baseline x focal / depth, clamped to [0.01, 75] and divided
  by 75, shorter side to 224 (bilinear, not antialiased), centre crop 224, mean 0.0418, std
  0.0295;
- thermal (no published loader; a documented choice): the image pipeline on one channel, i.e.
  intensities in [0, 1], shorter side to 224 (Pillow's bicubic), centre crop 224, clamped to
  [0, 1], no mean/std;
- IMU (no published loader; a documented choice): 6 x T at 400 Hz (2000 samples = the paper's
  5-second windows), distinct windows of 2000 samples at evenly spaced starts, zero-padded at
  the end.

Clip starts follow the reference's sampler: with ``D`` the item's duration and ``d`` the clip
length, clip ``i`` of ``n`` starts at ``i * max(D - d, 0) / n`` (so the last clip does not
reach the end); an item shorter than ``d`` gives ``n`` copies of the whole item.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from codi2.plugins.encoders.imagebind import KINECT_DISPARITY_SCALE
from codi2.plugins.encoders.imagebind.model import IMU_LENGTH as IMU_WINDOW

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224

AUDIO_SAMPLE_RATE = 16000
AUDIO_CLIP_SECONDS = 2
AUDIO_MEL_BINS = 128
AUDIO_FRAMES = 204
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138

VIDEO_CLIP_SECONDS = 2
TEXT_CONTEXT = 77


def clip_starts(duration: float, clip_seconds: float, clips: int) -> list[Fraction]:
    """Start times of ``clips`` clips of ``clip_seconds`` in an item of ``duration`` seconds.

    Exact fractions, as the reference computes them, so sample and frame indices agree to the
    last sample."""
    last_start = Fraction(max(duration - clip_seconds, 0))
    step = last_start / clips
    return [step * i for i in range(clips)]


# --- image -----------------------------------------------------------------------------------


def image_tensor(data: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` -> normalised float ``[3, size, size]``."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = Image.fromarray(np.ascontiguousarray(data, dtype=np.uint8), mode="RGB")
    image = TF.center_crop(TF.resize(image, size, interpolation=InterpolationMode.BICUBIC), size)
    return TF.normalize(TF.to_tensor(image), CLIP_MEAN, CLIP_STD)


# --- audio -----------------------------------------------------------------------------------


def audio_clips(
    waveform: np.ndarray, sample_rate: int = AUDIO_SAMPLE_RATE, clips: int = 3
) -> torch.Tensor:
    """Mono float waveform at ``sample_rate`` -> normalised filterbanks ``[clips, 1, 128, 204]``."""
    from codi2.core.audio import kaldi_fbank

    # The reference subtracts each clip's mean *in place* on a view of the waveform, so a
    # clip overlapping an earlier one sees samples already shifted by that clip's mean.
    # Clips overlap for items shorter than ~4 clip lengths; we keep the behaviour for parity.
    wave = torch.tensor(np.asarray(waveform, dtype=np.float32))
    out = []
    for start in clip_starts(len(wave) / sample_rate, AUDIO_CLIP_SECONDS, clips):
        end = start + AUDIO_CLIP_SECONDS
        segment = wave[int(start * sample_rate) : int(end * sample_rate)]
        segment -= segment.mean()
        fbank = kaldi_fbank(segment, sample_rate=sample_rate, num_mel_bins=AUDIO_MEL_BINS).T  # [bins, frames]
        missing = AUDIO_FRAMES - fbank.shape[1]
        fbank = F.pad(fbank, (0, missing)) if missing > 0 else fbank[:, :AUDIO_FRAMES]
        out.append(((fbank - AUDIO_MEAN) / AUDIO_STD)[None])
    return torch.stack(out)


# --- video -----------------------------------------------------------------------------------


def _short_side_scale(clip: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, T, H, W]`` -> shorter side ``size``, aspect kept (floor), bilinear."""
    h, w = clip.shape[-2:]
    new_h, new_w = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
    return F.interpolate(clip, size=(new_h, new_w), mode="bilinear", align_corners=False)


def _spatial_crops(clip: torch.Tensor, size: int, crops: int) -> list[torch.Tensor]:
    """Square crops along the longer side: start, centre, end (or centre only)."""
    h, w = clip.shape[-2:]
    centre_y, centre_x = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
    out = []
    for where in ((0, 1, 2) if crops == 3 else (1,)):
        y, x = centre_y, centre_x
        if h > w:
            y = {0: 0, 1: centre_y, 2: h - size}[where]
        else:
            x = {0: 0, 1: centre_x, 2: w - size}[where]
        out.append(clip[..., y : y + size, x : x + size])
    return out


def video_clips(
    frames: np.ndarray, fps: float, clips: int = 5, frames_per_clip: int = 2, crops: int = 3
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` at ``fps`` -> ``[clips * crops, 3, frames_per_clip, 224, 224]``."""
    total = len(frames)
    mean = torch.tensor(CLIP_MEAN)[:, None, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None, None]
    views = []
    for start in clip_starts(total / fps, VIDEO_CLIP_SECONDS, clips):
        first = math.ceil(fps * start)
        stop = min(math.ceil(fps * (start + VIDEO_CLIP_SECONDS)), total)
        # frames_per_clip indices spread evenly over the clip's frames (truncated, as torch.long)
        picks = torch.linspace(0, stop - first - 1, frames_per_clip).clamp(0, stop - first - 1).long() + first
        clip = torch.from_numpy(np.ascontiguousarray(frames[picks.numpy()])).permute(3, 0, 1, 2).float() / 255.0
        clip = (_short_side_scale(clip, IMAGE_SIZE) - mean) / std
        views.extend(_spatial_crops(clip, IMAGE_SIZE, crops))
    return torch.stack(views)


# --- text ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    # open_clip ships the CLIP BPE vocabulary: no download, and the same ids as ImageBind's copy
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=TEXT_CONTEXT)


def text_tokens(texts: list[str]) -> torch.Tensor:
    """CLIP token ids ``[B, 77]``; longer texts are cut and keep the end-of-text token."""
    return _tokenizer()(texts, context_length=TEXT_CONTEXT)


# --- depth -----------------------------------------------------------------------------------

DEPTH_RANGE_M = (0.01, 50.0)  # depth clipped to this before the division (Omnivore's converter)
DISPARITY_MAX = 75.0  # Omnivore's DepthNorm(max_depth=75, clamp_max_before_scale=True)
DISPARITY_MEAN, DISPARITY_STD = 0.0418, 0.0295  # Omnivore's released RGB-D inference transform


def depth_tensor(depth: np.ndarray, disparity_scale: float = KINECT_DISPARITY_SCALE) -> torch.Tensor:
    """Depth in metres ``[H, W]`` -> normalised disparity ``[1, 224, 224]``.

    Missing readings (0) become the nearest depth, as in Omnivore's converter: the clip to
    0.01 m turns them into the largest disparity, which the clamp at 75 then caps."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    metres = torch.from_numpy(np.asarray(depth, dtype=np.float32)).clamp(*DEPTH_RANGE_M)
    disparity = (disparity_scale / metres).clamp(DEPTH_RANGE_M[0], DISPARITY_MAX) / DISPARITY_MAX
    # torchvision's tensor resize did not antialias when Omnivore's transform was released
    disparity = TF.resize(disparity[None], IMAGE_SIZE, interpolation=InterpolationMode.BILINEAR, antialias=False)
    disparity = TF.center_crop(disparity, IMAGE_SIZE)
    return (disparity - DISPARITY_MEAN) / DISPARITY_STD


# --- thermal ---------------------------------------------------------------------------------


def thermal_tensor(intensity: np.ndarray) -> torch.Tensor:
    """Thermal intensities in [0, 1] ``[H, W]`` -> ``[1, 224, 224]``: the image pipeline's
    Pillow resize (bicubic) and centre crop on one float channel, clamped to [0, 1]; no
    mean/std, none being published."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = Image.fromarray(np.ascontiguousarray(intensity, dtype=np.float32))  # mode "F"
    image = TF.center_crop(TF.resize(image, IMAGE_SIZE, interpolation=InterpolationMode.BICUBIC), IMAGE_SIZE)
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy())[None].clamp(0.0, 1.0)


# --- IMU -------------------------------------------------------------------------------------

def imu_windows(series: np.ndarray, clips: int = 3) -> torch.Tensor:
    """IMU ``[6, T]`` at 400 Hz -> ``[windows, 6, 2000]``: up to ``clips`` distinct windows at
    evenly spaced starts (the clip rule above, in samples; a series that fits in one window
    gives one, not copies), a series shorter than a window zero-padded at the end."""
    x = torch.from_numpy(np.asarray(series, dtype=np.float32))
    starts = dict.fromkeys(int(start) for start in clip_starts(x.shape[-1], IMU_WINDOW, clips))
    windows = [x[:, start : start + IMU_WINDOW] for start in starts]
    return torch.stack([F.pad(w, (0, IMU_WINDOW - w.shape[-1])) for w in windows])
