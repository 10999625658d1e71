"""``toy-encoder``: ImageBind's architecture at a tiny size, trained on the shapes & tones world.

The network is the imagebind plugin's own :class:`ImageBindModel` (same towers, same input
pipelines: 224 x 224 images, Kaldi log-mel audio, CLIP BPE text) with every tower 32 wide and
two blocks deep (one block never learnt to tell shapes apart), projecting into a 64-d shared space. Departures from the imagebind
component, all for the toy world:

- ``vision_stem="conv"`` (the recipe's choice) replaces the linear patch embedding by a small
  convolutional stem (:class:`ConvStem`): a tower trained from scratch for minutes does not
  learn to read shape at any scale from linear patches (foreign drawings 0.85 right), with
  local convolutions first it does (1.00; docs/toy-model.md);
- audio is read as one 2-second clip (a world item lasts 1 s; three identical clips add nothing);
- a video item is ``video_frames`` tokens, one still-image embedding per evenly spaced frame,
  so the order of the frames reaches the LLM (ImageBind averages its clips into one vector).

Weights are a safetensors state dict stored in float16 (the recipe rounds them before any
downstream phase reads features, so everything trained on them saw exactly these values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, MediaError
from codi2.plugins.encoders.imagebind import ImageBindSize
from codi2.plugins.encoders.imagebind import preprocess as pre
from codi2.plugins.encoders.imagebind.encoder import ImageBindEncoder, load_weights, read_state_dict
from codi2.plugins.encoders.imagebind.model import (
    IMAGE_SIZE,
    ImageBindModel,
    PatchPreprocessor,
    PatchStem,
)

NAME = "toy-encoder"
TOWERS = ("vision", "audio", "text")
#: ``audio_loudness="rms"``: every clip is scaled to this RMS (about a world tone's), by at most
#: MAX_GAIN, so near-silence is not blown up into noise
TARGET_RMS, MAX_GAIN = 0.25, 100.0


def toy_size(options: Any) -> ImageBindSize:
    """The ImageBind size config of a ``ToyEncoderOptions``."""
    w, h, b = options.width, options.heads, options.blocks
    return ImageBindSize(
        out_embed_dim=options.embed_dim,
        vision_embed_dim=w, vision_num_blocks=b, vision_num_heads=h,
        text_embed_dim=w, text_num_blocks=b, text_num_heads=h,
        audio_embed_dim=w, audio_num_blocks=b, audio_num_heads=h,
    )


class ToyEncoder(ImageBindEncoder):
    """The toy encoder component (see the module docstring)."""

    name = NAME

    def __init__(self, model: ImageBindModel, options: Any, weights: str):
        super().__init__(model, modalities=("image", "audio", "video", "text"), audio_clips=1,
                         batch_size=64, weights=weights, size_tag=toy_size(options).model_dump_json())
        self.options = options
        self.video_frames = options.video_frames

    @classmethod
    def from_options(cls, options: Any, weights_path: str) -> ToyEncoder:
        if options.random_init:
            torch.manual_seed(options.seed)
            return cls(build_network(options), options, "random")
        path = Path(weights_path)
        if not path.is_file():
            raise ComponentLoadError(
                f"encoder {NAME!r}: weights file {path} does not exist (train it with `codi2 train --preset toy`)"
            )
        state = {k: v.float() for k, v in read_state_dict(path).items()}
        with torch.device("meta"):
            model = build_network(options)
        try:
            load_weights(model, state, str(path))
        except ComponentLoadError as error:  # name the options that decide the layout
            raise ComponentLoadError(
                f"{error} [{NAME} options: vision_stem={options.vision_stem!r}, width={options.width}, "
                f"blocks={options.blocks}, embed_dim={options.embed_dim}; they must be the ones it was trained with]"
            ) from None
        stat = path.stat()
        return cls(model, options, f"{path.resolve()}@{stat.st_size}:{stat.st_mtime_ns}")

    @property
    def identity(self) -> str:
        weights = f"random-{id(self):x}" if self.weights == "random" else self.weights
        return f"{NAME}(size={self.size_tag};weights={weights};video_frames={self.video_frames};audio_loudness={self.options.audio_loudness};image_centring={self.options.image_centring};vision_stem={self.options.vision_stem})"

    def tokens_per_item(self, modality: str) -> int:
        self.check_modality(modality)
        return self.video_frames if modality == "video" else 1

    def frames(self, item: Media) -> np.ndarray:
        """``video_frames`` evenly spaced frames of a video item (uint8 ``[F, H, W, 3]``)."""
        data = np.asarray(item.data)
        if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8 or 0 in data.shape:
            raise MediaError(f"video must be uint8 [frames, H, W, 3], got {data.dtype} {data.shape}", item=item.label)
        picks = np.linspace(0, len(data) - 1, self.video_frames).round().astype(int)
        return np.stack([self._placed(frame) for frame in data[picks]])

    def _placed(self, image: np.ndarray) -> np.ndarray:
        return content_centred(image) if self.options.image_centring == "content" else image

    def _views(self, item: Media, modality: str) -> torch.Tensor:
        if modality == "audio" and self.options.audio_loudness == "rms" and isinstance(item.data, np.ndarray):
            item = Media("audio", loudness_normalised(item.data), sample_rate=item.sample_rate, name=item.name)
        if modality == "image" and isinstance(item.data, np.ndarray) and item.data.ndim == 3:
            item = Media("image", self._placed(item.data), name=item.name)
        return super()._views(item, modality)

    def inputs(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """The network inputs of ``items`` (one view each; video: one per frame), for training."""
        if modality == "video":
            return torch.cat([torch.stack([pre.image_tensor(f) for f in self.frames(m)]) for m in items])
        return torch.cat([self._views(m, modality) for m in items])

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """Unit features ``[B, tokens_per_item(modality), embed_dim]``."""
        items = self.check_items(items, modality)
        param = next(self.model.parameters())
        tokens = self.tokens_per_item(modality)
        if not items:
            return torch.zeros(0, tokens, self.embed_dim, device=param.device)
        tower = "text" if modality == "text" else "audio" if modality == "audio" else "vision"
        x = self.inputs(items, modality)
        if modality != "text":
            x = x.to(dtype=param.dtype)
        out = torch.cat([self.model.embed(tower, chunk.to(param.device)) for chunk in x.split(self.batch_size)])
        return out.float().view(len(items), tokens, self.embed_dim)


class ConvStem(torch.nn.Module):
    """Pixels ``[B, 3, 224, 224]`` (or ImageBind's still clips ``[B, 3, T, 224, 224]``, first
    frame) -> ``[B, dim, 14, 14]``: four 3 x 3 convolutions of stride 2 (8, 16, 32, 32 channels,
    GELU) and a 1 x 1 projection to the tower's width -- the "convolutional stem" of Xiao et al.
    2021, *Early Convolutions Help Transformers See Better*, at the toy's size."""

    CHANNELS = (3, 8, 16, 32, 32)
    TOKENS = (IMAGE_SIZE // 16) ** 2

    def __init__(self, dim: int):
        super().__init__()
        layers: list[torch.nn.Module] = []
        for a, b in zip(self.CHANNELS, self.CHANNELS[1:]):
            layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.GELU()]
        self.layers = torch.nn.Sequential(*layers, torch.nn.Conv2d(self.CHANNELS[-1], dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x[:, :, 0] if x.ndim == 5 else x)


def build_network(options: Any) -> ImageBindModel:
    """The untrained network of a ``ToyEncoderOptions`` (its vision stem swapped if asked)."""
    model = ImageBindModel(toy_size(options), TOWERS)
    if options.vision_stem == "conv":
        dim = options.width
        model.modality_preprocessors["vision"] = PatchPreprocessor(
            PatchStem(ConvStem(dim), torch.nn.LayerNorm(dim)), "rgbt_stem", ConvStem.TOKENS, dim)
    return model


def loudness_normalised(wave: np.ndarray) -> np.ndarray:
    """``wave`` scaled to :data:`TARGET_RMS` (gain capped at :data:`MAX_GAIN`); a log-mel input
    then no longer depends on the recording's level."""
    wave = np.asarray(wave, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms == 0.0:
        return wave
    return wave * np.float32(min(TARGET_RMS / rms, MAX_GAIN))


def content_centred(image: np.ndarray) -> np.ndarray:
    """``image`` (uint8 ``[H, W, 3]``) moved so that the bounding box of its content sits at the
    centre, the uncovered border filled with the background colour.

    The background is the median colour of the outermost pixels; content is every pixel that
    differs from it by more than half the largest difference (so anti-aliased edges, JPEG
    ringing and a colour off by a few levels do not move the box). An image with no content
    (uniform) comes back unchanged."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or min(image.shape[:2]) < 3:
        return image
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = np.median(border, axis=0).astype(np.int16)
    distance = np.abs(image.astype(np.int16) - background).sum(axis=-1)
    peak = int(distance.max())
    if peak < 24:  # uniform up to noise: nothing to place
        return image
    rows, cols = np.nonzero(distance > peak / 2)
    height, width = distance.shape
    # a box of even/odd parity off the centre by half a pixel always resolves the same way
    # (ceil), so every shifted copy of one drawing lands on the same pixels
    dy = math.ceil((height - 1 - int(rows.min()) - int(rows.max())) / 2)
    dx = math.ceil((width - 1 - int(cols.min()) - int(cols.max())) / 2)
    if dy == 0 and dx == 0:
        return image
    out = np.empty_like(image)
    out[:] = background.astype(np.uint8)
    src_y, dst_y = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
    out[dst_y, dst_x] = image[src_y, src_x]
    return out


def save_encoder(encoder_model: ImageBindModel, path: str | Path) -> Path:
    """Write the network's state dict (float16) to ``path``; round the live weights to match."""
    from safetensors.torch import save_file

    with torch.no_grad():
        for tensor in list(encoder_model.parameters()) + list(encoder_model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in encoder_model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "codi2-toy-encoder"})
    return path
