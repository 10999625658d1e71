"""Distribution metrics of image sets: FID and KID.

Both compare the *sets* of generated and reference images (unpaired; any sizes) in the space of
a feature network — by default FID's InceptionV3 (:mod:`codi2.evaluation.networks.inception`):

- **FID** (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the two sets'
  features (:func:`codi2.evaluation.stats.frechet_distance_features`).
- **KID** (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)^3``, averaged over ``subsets`` random subsets of
  ``min(subset_size, n_gen, n_ref)`` items a side (:func:`codi2.evaluation.stats.kernel_distance`).

Both equal ``torchmetrics`` (``FrechetInceptionDistance``, ``KernelInceptionDistance``) and
``clean-fid`` (``fid_from_feats``, ``kernel_distance``) on the same features; which features a
toolkit computes depends on its resizing (torchmetrics: the network's own antialiased bilinear
resize, as here; clean-fid: PIL bicubic to 299 first — identical for 299 x 299 images).
This module imports no torch.
"""

from __future__ import annotations

from typing import Any

from codi2.core.types import Media
from codi2.errors import MediaError
from codi2.evaluation.base import MetricResult, check_items
from codi2.evaluation.stats import frechet_distance_features, kernel_distance
from codi2.evaluation.toolkits import cite

__all__ = ["FIDMetric", "KIDMetric"]


def _two_sets(metric: Any, generated: list[Media], references: list[Media] | None,
              texts: list[str] | None) -> list[Media]:
    check_items(metric, generated, references, texts, paired=False)
    refs = list(references or [])
    for role, items in (("generated", generated), ("reference", refs)):
        if len(items) < 2:
            raise MediaError(f"metric {metric.name!r} compares two sets: needs at least 2 {role} images, "
                             f"got {len(items)}")
    return refs


class FIDMetric:
    """Fréchet distance of two image sets in a feature network's space (lower is better)."""

    name = "fid"
    higher_is_better = False
    modality = "image"
    needs = ("references",)

    def __init__(self, embedder: Any):
        self.embedder = embedder
        self.network = getattr(embedder, "network", None) or getattr(embedder, "name", "embedder")
        self.matches = (cite("torchmetrics", "FrechetInceptionDistance") + "; "
                        + cite("clean-fid", "fid_from_feats (same features)"))

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        refs = _two_sets(self, generated, references, texts)
        value = frechet_distance_features(self.embedder.embed_images(list(generated)),
                                          self.embedder.embed_images(refs))
        return MetricResult(value, None, {"generated": len(generated), "references": len(refs)})


class KIDMetric:
    """Kernel Inception Distance of two image sets (lower is better); ``extra["std"]`` over subsets."""

    name = "kid"
    higher_is_better = False
    modality = "image"
    needs = ("references",)

    def __init__(self, embedder: Any, *, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                 gamma: float | None = None, coef0: float = 1.0, seed: int = 0):
        self.embedder = embedder
        self.kwargs = {"subsets": subsets, "subset_size": subset_size, "degree": degree, "gamma": gamma,
                       "coef0": coef0, "seed": seed}
        self.network = getattr(embedder, "network", None) or getattr(embedder, "name", "embedder")
        self.matches = (cite("torchmetrics", "KernelInceptionDistance (kid_mean)") + "; "
                        + cite("clean-fid", "kernel_distance (same features)"))
        if (degree, gamma, coef0) != (3, None, 1.0):
            self.matches = "codi2's KID with a non-default kernel (torchmetrics' options of the same names)"

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        refs = _two_sets(self, generated, references, texts)
        mean, std, size = kernel_distance(self.embedder.embed_images(list(generated)),
                                          self.embedder.embed_images(refs), **self.kwargs)
        return MetricResult(mean, None, {"std": std, "subset_size": size,
                                         "generated": len(generated), "references": len(refs)})
