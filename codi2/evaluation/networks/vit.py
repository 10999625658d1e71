"""DINO ViT features (DreamBench's DINO metric): the CLS token of ``facebook/dino-vits16``.

Loaded with transformers' ``ViTModel`` (no pooling head: DINO has none; the CLS token after
the final layer norm is DINO's own image embedding) and the checkpoint's own
``ViTImageProcessor`` (resize to 224, ImageNet mean/std).
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, pickle_refused, pickled_weights
from codi2.evaluation.networks import cached, hub_error_hint, resolve_device

DEFAULT_DINO = "facebook/dino-vits16"


def media_to_pil(item: Media) -> Any:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(item.data, dtype=np.uint8))


class DinoEmbedder:
    """``embed_images(items) -> [N, D]`` DINO CLS features (float64, not normalised)."""

    name = "dino"

    def __init__(self, model: Any, processor: Any, device: str, batch_size: int = 32, source: str = ""):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self.network = f"DINO ViT (transformers ViTModel, CLS token) from {source}"
        self._cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def _run(self, items: list[Media]) -> np.ndarray:
        pixels = self.processor(images=[media_to_pil(m) for m in items], return_tensors="pt").pixel_values
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixels.to(self.device, dtype))
        return out.last_hidden_state[:, 0].float().cpu().numpy().astype(np.float64)

    def embed_images(self, items: list[Media]) -> np.ndarray:
        return embed_cached(self._cache, items, self._run, self.batch_size)


def embed_cached(cache: dict[str, np.ndarray], items: list[Any], run: Any, batch_size: int,
                 key: Any = None) -> np.ndarray:
    """Embed ``items`` with ``run(batch) -> [B, D]``, computing each distinct item once.

    ``key(item)`` identifies an item (default: ``Media.content_hash()``); repeated items —
    a reference image compared with every generated image — cost nothing after the first.
    """
    key = key or (lambda m: m.content_hash())
    keys = [key(m) for m in items]
    todo: dict[str, Any] = {}
    for k, m in zip(keys, items):
        if k not in cache and k not in todo:
            todo[k] = m
    pending = list(todo.items())
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        vectors = run([m for _, m in chunk])
        for (k, _), v in zip(chunk, vectors):
            cache[k] = v
    return np.stack([cache[k] for k in keys]) if keys else np.zeros((0, 0))


def load_dino(source: str = DEFAULT_DINO, *, device: str | None = None, allow_download: bool = False,
              batch_size: int = 32) -> DinoEmbedder:
    """A :class:`DinoEmbedder` from a hub id or a local directory (``save_pretrained`` layout)."""
    device = resolve_device(device)

    def build() -> DinoEmbedder:
        from transformers import ViTImageProcessor, ViTModel

        try:
            model = ViTModel.from_pretrained(source, add_pooling_layer=False,
                                             local_files_only=not allow_download)
            processor = ViTImageProcessor.from_pretrained(source, local_files_only=not allow_download)
        except pickle.UnpicklingError:
            raise ComponentLoadError(f"DINO network: {pickle_refused(pickled_weights(source))}") from None
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ComponentLoadError(
                f"DINO network {source!r} could not be loaded ({first}); {hub_error_hint(source)}"
            ) from exc
        return DinoEmbedder(model, processor, device, batch_size=batch_size, source=source)

    return cached(("dino", source, device, allow_download, batch_size), build)
