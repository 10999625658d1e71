"""Image metrics of the paper's Table 4: DINO, CLIP-I, CLIP-T (DreamBench) and CLIPSIM (editing).

Definitions (DreamBooth, Ruiz et al. 2023, §4.1 — the DreamBench protocol):

- **DINO**: cosine similarity between the DINO ViT-S/16 CLS embeddings of a generated image
  and a real image of the subject; reported as the mean over all (generated, real) pairs.
- **CLIP-I**: the same with CLIP image embeddings (ViT-B/32).
- **CLIP-T**: cosine similarity between the CLIP embeddings of a generated image and of its
  prompt (the prompt with the subject's class noun, no identifier token), averaged.
- **CLIPSIM** (editing): cosine similarity between the CLIP embeddings of the edited image and
  of the target caption, averaged — CLIP-T applied to edits.

Raw cosines (not CLIPScore's ``2.5 * max(cos, 0)``), so 0.311 in the paper is a cosine of 0.311.
Pairing is the caller's job: pass ``generated[i]`` with ``references[i]`` (DreamBench expands
every generated image against every real image; repeated images are embedded once).

The metrics take an *embedder* (:mod:`codi2.evaluation.networks`): ``embed_images(items)`` and,
for the text metrics, ``embed_texts(texts)``. This module imports no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codi2.core.types import Media
from codi2.evaluation.base import MetricResult, check_items
from codi2.evaluation.stats import cosine_rows

__all__ = ["ImageSimilarity", "TextImageSimilarity"]


class ImageSimilarity:
    """Cosine similarity of paired images in an embedder's space (DINO, CLIP-I)."""

    higher_is_better = True
    modality = "image"
    needs = ("references",)

    def __init__(self, name: str, embedder: Any):
        self.name = name
        self.embedder = embedder

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        check_items(self, generated, references, texts)
        gen = self.embedder.embed_images(list(generated))
        ref = self.embedder.embed_images(list(references or []))
        values = cosine_rows(gen, ref).tolist()
        return MetricResult(float(np.mean(values)), values)


class TextImageSimilarity:
    """Cosine similarity of each image with its text in CLIP's joint space (CLIP-T, CLIPSIM)."""

    higher_is_better = True
    modality = "image"
    needs = ("texts",)

    def __init__(self, name: str, embedder: Any):
        self.name = name
        self.embedder = embedder

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        check_items(self, generated, None, texts)
        image = self.embedder.embed_images(list(generated))
        text = self.embedder.embed_texts(list(texts or []))
        values = cosine_rows(image, text).tolist()
        return MetricResult(float(np.mean(values)), values)
