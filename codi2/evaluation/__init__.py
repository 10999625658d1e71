"""Evaluation: the paper's metrics and the ``codi2 eval`` tasks.

- :mod:`~codi2.evaluation.base` — the :class:`Metric` protocol and :class:`MetricResult`;
- :mod:`~codi2.evaluation.image` — DINO, CLIP-I, CLIP-T, CLIPSIM, CLIP score;
- :mod:`~codi2.evaluation.distribution` — FID, KID (image sets);
- :mod:`~codi2.evaluation.audio` — LSD, KL, FD, FAD;
- :mod:`~codi2.evaluation.stats` — cosine, KL, Fréchet distance, KID's MMD (numpy);
- :mod:`~codi2.evaluation.toolkits` — the reference toolkits (and versions) the metrics equal;
- :mod:`~codi2.evaluation.networks` — DINO ViT, CLIP, PANNs CNN14, FID InceptionV3 loaders;
- :mod:`~codi2.evaluation.tasks` — ``dreambench``, ``edit``, ``audio-edit``, ``score``;
- :mod:`~codi2.evaluation.report` — tables, CSV/JSON and bar charts;
- :mod:`~codi2.evaluation.plugin` — the built-in metrics plugin;
- :mod:`~codi2.evaluation.commands` — the ``codi2 eval`` command line.

Definitions and reproduction steps: ``docs/evaluation.md``. Importing this package imports no torch.
"""

from __future__ import annotations

from codi2.evaluation.base import Metric, MetricResult

__all__ = ["Metric", "MetricResult"]
