"""The ``imagebind`` encoder component: options -> weights -> features.

:class:`ImageBindEncoder` implements :class:`codi2.core.interfaces.Encoder`. Image, video,
audio, text, depth, thermal and IMU items become ``[B, T, D]`` features: one unit vector per
item (``pooled``, ``D = out_embed_dim``) or the vision tower's output tokens (``sequence``,
image and video only, ``D = vision_embed_dim``). Clip features (audio, video, IMU windows)
are averaged per item, as the reference model does.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, MediaError, MediaLimitError, pickle_refused
from codi2.plugins.base import FrozenEncoder
from codi2.plugins.encoders.imagebind import (
    CHECKPOINT_FILE,
    IMU_SAMPLE_RATE,
    KINECT_DISPARITY_SCALE,
    NAME,
    ImageBindOptions,
    ImageBindSize,
)
from codi2.plugins.encoders.imagebind import preprocess as pre
from codi2.plugins.encoders.imagebind.model import IMU_CHANNELS, TOWERS, ImageBindModel

TOWER_OF = {
    "image": "vision", "video": "vision", "audio": "audio", "text": "text",
    "depth": "depth", "thermal": "thermal", "imu": "imu",
}  # fmt: skip
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: shortest audio item: one 25 ms filterbank frame at 16 kHz
MIN_AUDIO_SAMPLES = 400


# --- checkpoints -----------------------------------------------------------------------------


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch.hub's rule)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch"


def default_checkpoint_paths() -> list[Path]:
    """Where an ``imagebind_huge`` checkpoint is looked for when none is named, in order."""
    stem = Path(CHECKPOINT_FILE).stem
    folders = [torch_home() / "checkpoints", torch_home() / "hub" / "checkpoints", Path(".checkpoints")]
    return [folder / f"{stem}{suffix}" for folder in folders for suffix in (".pth", ".safetensors")]


def resolve_checkpoint(options: ImageBindOptions) -> Path:
    """The checkpoint file to load; a clear ComponentLoadError when there is none (no download)."""
    if options.checkpoint:
        path = Path(options.checkpoint).expanduser()
        if not path.is_file():
            raise ComponentLoadError(f"encoder {NAME!r}: checkpoint file {path} does not exist")
        return path
    if options.size != "huge":
        raise ComponentLoadError(f"encoder {NAME!r}: a custom size needs options.checkpoint (a state dict of that size)")
    for path in default_checkpoint_paths():
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in default_checkpoint_paths()[::2])
    raise ComponentLoadError(
        f"encoder {NAME!r}: no ImageBind checkpoint found (looked for {looked}). codi2 never downloads "
        f"weights: fetch Meta's {CHECKPOINT_FILE} once (https://dl.fbaipublicfiles.com/imagebind/"
        f"{CHECKPOINT_FILE}), put it in {torch_home() / 'checkpoints'}, or pass options.checkpoint=PATH"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a plain ``torch.save``d state dict (no unpickling
    of code: ``weights_only=True``; memory-mapped where the file format allows)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file
    except pickle.UnpicklingError:
        raise ComponentLoadError(f"encoder {NAME!r}: {pickle_refused(str(path))}") from None
    except Exception as exc:  # corrupt or truncated files surface as many exception types
        raise ComponentLoadError(f"encoder {NAME!r}: cannot read {path}: {type(exc).__name__}: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ComponentLoadError(f"encoder {NAME!r}: {path} does not hold a state dict of tensors")
    return dict(state)


def load_weights(model: ImageBindModel, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``model`` (built on any device, ``meta`` included).

    Tensors of towers the model left out (``depth``, ``thermal``, ... or ``audio`` for an
    image-only encoder) are skipped; every other name and shape must match exactly."""
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    known_unbuilt = {t for t in TOWERS if t not in model.towers}
    kept = {k: v for k, v in state.items() if not (k.startswith("modality_") and k.split(".")[1] in known_unbuilt)}
    missing = sorted(own.keys() - kept.keys())
    unexpected = sorted(kept.keys() - own.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing (first: {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (first: {', '.join(unexpected[:4])})")
        raise ComponentLoadError(f"encoder {NAME!r}: {source} does not fit ImageBind: {'; '.join(parts)}")
    for key, value in kept.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ComponentLoadError(
                f"encoder {NAME!r}: tensor {key!r} in {source} has shape {tuple(value.shape)}, the model "
                f"expects {tuple(own[key].shape)} (check options.size and options.video_frames)"
            )
    model.load_state_dict(kept, strict=True, assign=True)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --- the component ---------------------------------------------------------------------------


class ImageBindEncoder(FrozenEncoder):
    """ImageBind as a codi2 encoder. Build with :meth:`from_options` (or wrap a model)."""

    name = NAME
    sample_rate = pre.AUDIO_SAMPLE_RATE

    def __init__(
        self,
        model: ImageBindModel,
        *,
        modalities: Sequence[str],
        image_tokens: str = "pooled",
        video_clips: int = 5,
        video_crops: int = 3,
        audio_clips: int = 3,
        depth_disparity_scale: float = KINECT_DISPARITY_SCALE,
        imu_clips: int = 3,
        batch_size: int = 16,
        weights: str = "random",
        size_tag: str = "custom",
    ):
        """``weights`` and ``size_tag`` describe the model for :attr:`identity` (feature caches)."""
        super().__init__()
        for m in modalities:
            if TOWER_OF[m] not in model.towers:
                raise ComponentLoadError(f"encoder {NAME!r}: modality {m!r} needs the {TOWER_OF[m]} tower")
        self.model = model
        self.modalities = tuple(modalities)
        self.image_tokens = image_tokens
        self.video_clips, self.video_crops, self.audio_clips = video_clips, video_crops, audio_clips
        self.depth_disparity_scale, self.imu_clips = depth_disparity_scale, imu_clips
        self.batch_size = batch_size
        self.weights, self.size_tag = weights, size_tag
        if image_tokens == "sequence":
            self.embed_dim = model.modality_preprocessors["vision"].cls_token.shape[-1]
            self.sequence_length = model.modality_preprocessors["vision"].pos_embedding_helper.pos_embed.shape[1]
        else:
            self.embed_dim = model.out_dim
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_options(cls, options: ImageBindOptions) -> ImageBindEncoder:
        modalities = options.served_modalities()
        size = ImageBindSize() if options.size == "huge" else options.size
        towers = {TOWER_OF[m] for m in modalities}
        device = torch.device(options.device or _default_device())
        dtype = DTYPES[options.dtype]
        if options.random_init:
            with device:
                model = ImageBindModel(size, towers, video_frames=options.video_frames)
            weights = "random"
        else:
            path = resolve_checkpoint(options)
            state = read_state_dict(path)
            with torch.device("meta"):  # no init, no second copy: the checkpoint's tensors are assigned
                model = ImageBindModel(size, towers, video_frames=options.video_frames)
            load_weights(model, state, str(path))
            stat = path.stat()
            weights = f"{path.resolve()}@{stat.st_size}:{stat.st_mtime_ns}"
        model = model.to(device=device, dtype=dtype)
        return cls(
            model,
            modalities=modalities,
            image_tokens=options.image_tokens,
            video_clips=options.video_clips,
            video_crops=options.video_crops,
            audio_clips=options.audio_clips,
            depth_disparity_scale=options.depth_disparity_scale,
            imu_clips=options.imu_clips,
            batch_size=options.batch_size,
            weights=weights,
            size_tag="huge" if options.size == "huge" else options.size.model_dump_json(),
        )

    @property
    def identity(self) -> str:
        weights = f"random-{id(self):x}" if self.weights == "random" else self.weights  # never reuse random features
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        # the depth and IMU settings only where they shape features (older identities unchanged)
        depth = f"depth={self.depth_disparity_scale!r};" if "depth" in self.modalities else ""
        imu = f"imu={self.imu_clips};" if "imu" in self.modalities else ""
        return (
            f"imagebind(size={self.size_tag};weights={weights};tokens={self.image_tokens};"
            f"video={self.model.video_frames}x{self.video_clips}x{self.video_crops};audio={self.audio_clips};"
            f"{depth}{imu}dtype={dtype})"
        )

    def tokens_per_item(self, modality: str) -> int:
        self.check_modality(modality)
        return self.sequence_length if self.image_tokens == "sequence" else 1

    # --- encoding ---------------------------------------------------------------------------

    def _views(self, item: Media, modality: str) -> torch.Tensor:
        """The model inputs of one item: ``[views, ...]`` (clips and crops are views)."""
        data = item.data
        if modality == "text":
            if not isinstance(data, str):
                raise MediaError("text item must hold a str", item=item.label)
            return pre.text_tokens([data])
        if modality == "audio":
            wave = np.asarray(data, dtype=np.float32)
            if wave.ndim != 1:
                raise MediaError(f"audio must be mono [samples], got shape {wave.shape}", item=item.label)
            if item.sample_rate != self.sample_rate:
                if not item.sample_rate:
                    raise MediaError("audio item has no sample_rate", item=item.label)
                from codi2.core.audio import resample

                wave = resample(wave, item.sample_rate, self.sample_rate)
            if len(wave) < MIN_AUDIO_SAMPLES:
                raise MediaLimitError(
                    f"audio is {len(wave) / self.sample_rate * 1000:.1f} ms long; ImageBind needs at least 25 ms",
                    item=item.label,
                )
            return pre.audio_clips(wave, self.sample_rate, self.audio_clips)
        if modality in ("depth", "thermal"):
            return self._map_view(item, modality)
        if modality == "imu":
            return self._imu_views(item)
        frames = np.asarray(data)
        want = 4 if modality == "video" else 3
        if frames.ndim != want or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
            layout = "[frames, H, W, 3]" if modality == "video" else "[H, W, 3]"
            raise MediaError(f"{modality} must be uint8 {layout}, got {frames.dtype} {frames.shape}", item=item.label)
        if modality == "image":
            return pre.image_tensor(frames)[None]
        if not item.fps or item.fps <= 0:
            raise MediaError("video item has no fps", item=item.label)
        return pre.video_clips(frames, item.fps, self.video_clips, self.model.video_frames, self.video_crops)

    def _map_view(self, item: Media, modality: str) -> torch.Tensor:
        """A depth map (metres) or thermal image ([0, 1]) ``[H, W]`` -> ``[1, 1, 224, 224]``."""
        values = np.asarray(item.data)
        if values.ndim != 2 or 0 in values.shape or not np.issubdtype(values.dtype, np.floating):
            what = f"{values.dtype} {values.shape}"
            raise MediaError(f"{modality} must be a float [H, W] map, got {what}", item=item.label)
        if not np.isfinite(values).all():
            raise MediaError(f"{modality} map contains NaN or infinite values", item=item.label)
        if modality == "depth":
            return pre.depth_tensor(values, self.depth_disparity_scale)[None]
        return pre.thermal_tensor(values)[None]

    def _imu_views(self, item: Media) -> torch.Tensor:
        """IMU ``[samples, 6]`` at ``item.sample_rate`` (else 400 Hz) -> windows ``[clips, 6, 2000]``."""
        series = np.asarray(item.data, dtype=np.float32)
        if series.ndim != 2 or series.shape[1] != IMU_CHANNELS or series.shape[0] == 0:
            raise MediaError(f"imu must be float [samples, 6], got shape {series.shape}", item=item.label)
        if not np.isfinite(series).all():
            raise MediaError("imu series contains NaN or infinite values", item=item.label)
        rate = item.sample_rate or IMU_SAMPLE_RATE
        if rate != IMU_SAMPLE_RATE:
            from codi2.core.audio import resample

            series = np.stack([resample(channel, rate, IMU_SAMPLE_RATE) for channel in series.T], axis=1)
        return pre.imu_windows(series.T, self.imu_clips)

    def _features(self, tower: str, x: torch.Tensor) -> torch.Tensor:
        """``[N, ...]`` views -> ``[N, T, D]``: unit vectors, or vision trunk tokens."""
        if self.image_tokens == "sequence":
            return self.model.trunk_tokens(tower, x)
        return self.model.embed(tower, x)[:, None]

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """Features ``[B, tokens_per_item(modality), embed_dim]`` (float32, no gradient)."""
        items = self.check_items(items, modality)
        tower = TOWER_OF[modality]
        param = next(self.model.parameters())
        if not items:
            return torch.zeros(0, self.tokens_per_item(modality), self.embed_dim, device=param.device)
        views = [self._views(item, modality) for item in items]
        counts = [len(v) for v in views]
        flat = torch.cat(views)
        if modality != "text":
            flat = flat.to(dtype=param.dtype)
        out = torch.cat(
            [self._features(tower, chunk.to(param.device)) for chunk in flat.split(self.batch_size)]
        ).float()
        # average the views (clips, crops) of each item, as the reference model does
        return torch.stack([part.mean(dim=0) for part in out.split(counts)])
