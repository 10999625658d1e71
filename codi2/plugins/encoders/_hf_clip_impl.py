"""The ``hf-clip`` encoder component (imports torch and transformers; see ``hf_clip.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, MediaError
from codi2.plugins.base import FrozenEncoder
from codi2.plugins.encoders.hf_clip import NAME, HFClipOptions

#: the feature method of each modality's tower
FEATURES = {"image": "get_image_features", "text": "get_text_features", "audio": "get_audio_features"}
#: model types whose text tower was trained on text padded to its full length, unmasked
PAD_TO_MAX = ("siglip", "siglip2")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def _vector(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output with the projected vector in pooler_output; 4.x a tensor
    return output.pooler_output if hasattr(output, "pooler_output") else output


class HFContrastiveEncoder(FrozenEncoder):
    """A transformers contrastive model as a codi2 encoder: one vector per item."""

    name = NAME

    def __init__(self, model: torch.nn.Module, processors: dict[str, Any], options: HFClipOptions, identity: str):
        super().__init__()
        self.model, self.processors, self.options = model, processors, options
        towers = tuple(m for m in ("image", "audio", "text") if hasattr(model, FEATURES[m]))
        wanted = options.modalities or towers
        missing = [m for m in wanted if m not in towers]
        if missing:
            raise ComponentLoadError(
                f"encoder {NAME!r}: {type(model).__name__} ({options.model!r}) has no {', '.join(missing)} tower; "
                f"it encodes {', '.join(towers)}"
            )
        self.modalities = tuple(m for m in towers if m in wanted)
        config = model.config
        self.embed_dim = int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)
        extractor = processors.get("audio")
        self.sample_rate = int(extractor.sampling_rate) if extractor is not None else 16000
        self._identity = identity
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_options(cls, options: HFClipOptions) -> HFContrastiveEncoder:
        from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel, AutoTokenizer

        local = options.local_files_only if options.local_files_only is not None else _offline()
        common = {"revision": options.revision, "local_files_only": local}
        try:
            model = AutoModel.from_pretrained(options.model, dtype=getattr(torch, options.dtype), **common)
            processors: dict[str, Any] = {"text": AutoTokenizer.from_pretrained(options.model, **common)}
            if hasattr(model, FEATURES["image"]):
                processors["image"] = AutoImageProcessor.from_pretrained(options.model, **common)
            if hasattr(model, FEATURES["audio"]):
                processors["audio"] = AutoFeatureExtractor.from_pretrained(options.model, **common)
        except (OSError, ValueError, KeyError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ComponentLoadError(f"encoder {NAME!r}: cannot load {options.model!r}: {reason}") from None
        if not any(hasattr(model, FEATURES[m]) for m in ("image", "audio")):
            raise ComponentLoadError(
                f"encoder {NAME!r}: {type(model).__name__} ({options.model!r}) is not a CLIP, SigLIP or CLAP model"
            )
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(options.model).expanduser()
        source = str(path.resolve()) if path.is_dir() else f"{options.model}@{options.revision or 'main'}"
        identity = f"hf-clip(model={source};dtype={options.dtype};normalize={options.normalize})"
        return cls(model.to(device), processors, options, identity)

    @property
    def identity(self) -> str:
        return self._identity

    def tokens_per_item(self, modality: str) -> int:
        self.check_modality(modality)
        return 1

    def _inputs(self, items: Sequence[Media], modality: str) -> dict[str, torch.Tensor]:
        """The checkpoint's own preprocessing of ``items`` as keyword tensors."""
        processor = self.processors[modality]
        if modality == "text":
            texts = []
            for item in items:
                if not isinstance(item.data, str):
                    raise MediaError("text item must hold a str", item=item.label)
                texts.append(item.data)
            if self.model.config.model_type in PAD_TO_MAX:  # and no attention mask: padding is part of the text
                return {"input_ids": processor(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids}
            return dict(processor(texts, padding=True, truncation=True, return_tensors="pt"))
        if modality == "image":
            images = []
            for item in items:
                data = np.asarray(item.data)
                if data.ndim != 3 or data.shape[-1] != 3 or data.dtype != np.uint8 or 0 in data.shape:
                    raise MediaError(f"image must be uint8 [H, W, 3], got {data.dtype} {data.shape}", item=item.label)
                images.append(data)
            return {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}
        waves = []
        for item in items:
            data = np.asarray(item.data, dtype=np.float32)
            if data.ndim != 1 or data.size == 0 or item.sample_rate != self.sample_rate:
                raise MediaError(
                    f"audio must be a non-empty 1-D wave at {self.sample_rate} Hz (see load_media), "
                    f"got shape {data.shape} at {item.sample_rate} Hz",
                    item=item.label,
                )
            waves.append(data)
        features = processor(waves, sampling_rate=self.sample_rate, return_tensors="pt")
        return {k: features[k] for k in ("input_features", "is_longer") if k in features}

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """Embeddings ``[B, 1, embed_dim]`` (float32, no gradient; unit vectors by default)."""
        items = self.check_items(items, modality)
        param = next(self.model.parameters())
        out = [torch.zeros(0, self.embed_dim, device=param.device)]
        for start in range(0, len(items), self.options.batch_size):
            inputs = self._inputs(items[start : start + self.options.batch_size], modality)
            inputs = {k: v.to(param.device, param.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
            vectors = _vector(getattr(self.model, FEATURES[modality])(**inputs)).float()
            out.append(F.normalize(vectors, dim=-1) if self.options.normalize else vectors)
        return torch.cat(out)[:, None]
