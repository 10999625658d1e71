"""CLIP image and text features (CLIP-I, CLIP-T, CLIPSIM).

Two back ends behind one :class:`ClipEmbedder`:

- ``transformers`` (default): ``CLIPModel`` + the checkpoint's own ``CLIPImageProcessor`` and
  tokenizer, from a hub id (``openai/clip-vit-base-patch32``, DreamBench's ViT-B/32) or a local
  directory. Features are ``get_image_features`` / ``get_text_features`` (the projected
  embeddings CLIP's contrastive loss compares).
- ``open_clip``: ``open_clip.create_model_and_transforms(arch, pretrained=FILE)`` with
  open_clip's tokenizer for ``arch`` (its BPE vocabulary ships with the package, so this works
  offline given a local weights file).
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, pickle_refused, pickled_weights
from codi2.evaluation.networks import cached, hub_error_hint, resolve_device
from codi2.evaluation.networks.vit import embed_cached, media_to_pil

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def _features(out: Any) -> torch.Tensor:
    # transformers < 5 returns the projected tensor; 5.x returns an output whose pooler_output it is
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEmbedder:
    """``embed_images(items)`` / ``embed_texts(texts)`` -> ``[N, D]`` CLIP embeddings (float64)."""

    name = "clip"

    def __init__(self, *, encode_images: Any, encode_texts: Any, batch_size: int = 32, source: str = ""):
        self._encode_images = encode_images
        self._encode_texts = encode_texts
        self.batch_size = batch_size
        self.source = source
        kind = source if source.startswith("open_clip:") else f"transformers CLIPModel from {source}"
        self.network = f"CLIP ({kind}; projected image/text embeddings)"
        self._image_cache: dict[str, np.ndarray] = {}
        self._text_cache: dict[str, np.ndarray] = {}

    def embed_images(self, items: list[Media]) -> np.ndarray:
        return embed_cached(self._image_cache, items, self._encode_images, self.batch_size)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return embed_cached(self._text_cache, texts, self._encode_texts, self.batch_size, key=str)


def _transformers_embedder(source: str, device: str, allow_download: bool, batch_size: int) -> ClipEmbedder:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    local = not allow_download
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=local).eval().to(device)
        processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    except pickle.UnpicklingError:
        raise ComponentLoadError(f"CLIP network: {pickle_refused(pickled_weights(source))}") from None
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ComponentLoadError(
            f"CLIP network {source!r} could not be loaded ({first}); {hub_error_hint(source)}"
        ) from exc
    max_length = min(int(model.config.text_config.max_position_embeddings), 77)
    dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def encode_images(items: list[Media]) -> np.ndarray:
        pixels = processor(images=[media_to_pil(m) for m in items], return_tensors="pt").pixel_values
        feats = _features(model.get_image_features(pixel_values=pixels.to(device, dtype)))
        return feats.float().cpu().numpy().astype(np.float64)

    @torch.inference_mode()
    def encode_texts(texts: list[str]) -> np.ndarray:
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        feats = _features(model.get_text_features(input_ids=batch["input_ids"].to(device),
                                                  attention_mask=batch["attention_mask"].to(device)))
        return feats.float().cpu().numpy().astype(np.float64)

    return ClipEmbedder(encode_images=encode_images, encode_texts=encode_texts,
                        batch_size=batch_size, source=source)


def _open_clip_embedder(arch: str, pretrained: str | None, device: str, batch_size: int) -> ClipEmbedder:
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    except (RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ComponentLoadError(
            f"open_clip model {arch!r} (weights {pretrained!r}) could not be loaded: {first}"
        ) from exc
    model.eval()

    @torch.inference_mode()
    def encode_images(items: list[Media]) -> np.ndarray:
        pixels = torch.stack([preprocess(media_to_pil(m)) for m in items]).to(device)
        return model.encode_image(pixels).float().cpu().numpy().astype(np.float64)

    @torch.inference_mode()
    def encode_texts(texts: list[str]) -> np.ndarray:
        return model.encode_text(tokenizer(list(texts)).to(device)).float().cpu().numpy().astype(np.float64)

    return ClipEmbedder(encode_images=encode_images, encode_texts=encode_texts,
                        batch_size=batch_size, source=f"open_clip:{arch}")


def load_clip(
    source: str = DEFAULT_CLIP,
    *,
    backend: str = "transformers",
    pretrained: str | None = None,
    device: str | None = None,
    allow_download: bool = False,
    batch_size: int = 32,
) -> ClipEmbedder:
    """A :class:`ClipEmbedder`.

    ``backend="transformers"``: ``source`` is a hub id or a ``save_pretrained`` directory.
    ``backend="open_clip"``: ``source`` is an open_clip architecture (``"ViT-B-32"``) and
    ``pretrained`` a local weights file (or an open_clip tag, which downloads — only with
    ``allow_download``).
    """
    device = resolve_device(device)
    if backend == "transformers":
        return cached(("clip", source, device, allow_download, batch_size),
                      lambda: _transformers_embedder(source, device, allow_download, batch_size))
    if backend == "open_clip":
        if pretrained is not None and not allow_download:
            from pathlib import Path

            if not Path(pretrained).is_file():
                raise ComponentLoadError(
                    f"open_clip weights {pretrained!r} is not a local file and downloads are off "
                    f"(allow_download=true to let open_clip fetch a pretrained tag)"
                )
        return cached(("open_clip", source, pretrained, device, batch_size),
                      lambda: _open_clip_embedder(source, pretrained, device, batch_size))
    raise ComponentLoadError(f"unknown CLIP backend {backend!r}; known: transformers, open_clip")
