"""Image metrics of the paper's Table 4: DINO, CLIP-I, CLIP-T (DreamBench) and CLIPSIM (editing).

Definitions (DreamBooth, Ruiz et al. 2023, §4.1 — the DreamBench protocol):

- **DINO**: cosine similarity between the DINO ViT-S/16 CLS embeddings of a generated image
  and a real image of the subject; reported as the mean over all (generated, real) pairs.
- **CLIP-I**: the same with CLIP image embeddings (ViT-B/32).
- **CLIP-T**: cosine similarity between the CLIP embeddings of a generated image and of its
  prompt (the prompt with the subject's class noun, no identifier token), averaged.
- **CLIPSIM** (editing): cosine similarity between the CLIP embeddings of the edited image and
  of the target caption, averaged — CLIP-T applied to edits.

Raw cosines (not CLIPScore's ``w * max(cos, 0)``), so 0.311 in the paper is a cosine of 0.311.
**clip-score** is the CLIPScore of ``torchmetrics`` (``max(100 * mean(cos), 0)``: the mean is
clamped, not each item) on the same CLIP features, for comparison with papers that report it.
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
from codi2.evaluation.toolkits import cite

__all__ = ["ImageSimilarity", "TextImageSimilarity"]

#: what each cosine metric's number is (none of DreamBench's has a reference toolkit)
DEFINITIONS = {
    "dino": "DreamBooth (Ruiz et al. 2023) §4.1 DINO: mean cosine over (generated, real) pairs; no toolkit",
    "clip-i": "DreamBooth (Ruiz et al. 2023) §4.1 CLIP-I: mean cosine over (generated, real) pairs; "
              "no toolkit",
    "clip-t": "DreamBooth §4.1 CLIP-T, the raw mean cosine = "
              + cite("torchmetrics", "CLIPScore / 100 when the mean is >= 0"),
    "clipsim": "CLIPSIM, the raw mean cosine with the target caption = "
               + cite("torchmetrics", "CLIPScore / 100 when the mean is >= 0"),
    "clip-score": cite("torchmetrics", "CLIPScore, max(100 * mean cosine, 0)"),
}


def _network(embedder: Any) -> str:
    name = getattr(embedder, "name", type(embedder).__name__)
    return getattr(embedder, "network", None) or f"{name} {getattr(embedder, 'source', '')}".strip()


class ImageSimilarity:
    """Cosine similarity of paired images in an embedder's space (DINO, CLIP-I)."""

    higher_is_better = True
    modality = "image"
    needs = ("references",)

    def __init__(self, name: str, embedder: Any):
        self.name = name
        self.embedder = embedder
        self.matches = DEFINITIONS.get(name, f"{name}: cosine of paired image embeddings")
        self.network = _network(embedder)

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

    def __init__(self, name: str, embedder: Any, *, scale: float = 1.0, clamp: bool = False):
        self.name = name
        self.embedder = embedder
        self.scale, self.clamp = scale, clamp  # clip-score: 100, True
        self.matches = DEFINITIONS.get(name, f"{name}: cosine of image and text embeddings")
        self.network = _network(embedder)

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        check_items(self, generated, None, texts)
        image = self.embedder.embed_images(list(generated))
        text = self.embedder.embed_texts(list(texts or []))
        values = (self.scale * cosine_rows(image, text)).tolist()
        mean = float(np.mean(values))
        # torchmetrics clamps the mean at 0, not each item (Hessel et al.'s CLIPScore clamps each)
        return MetricResult(max(mean, 0.0) if self.clamp else mean, values)
