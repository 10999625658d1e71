"""What a metric is: the :class:`Metric` protocol and its :class:`MetricResult`.

A metric scores generated media, optionally against references and/or texts::

    result = metric.score(generated, references=refs, texts=None)
    result.mean        # the number a paper's table reports
    result.per_item    # one value per scored item (pair), or None for set-level metrics (FD)

Conventions every metric follows:

- ``generated`` and ``references`` are lists of :class:`~codi2.core.types.Media`; a *paired*
  metric (DINO, CLIP-I, LSD, KL) compares ``generated[i]`` with ``references[i]`` and needs two
  lists of one length; a *set* metric (FD) compares the two distributions.
- ``texts[i]`` is the text for ``generated[i]`` (CLIP-T, CLIPSIM).
- a metric checks what it needs and raises :class:`~codi2.errors.MediaError` naming the item
  (bad modality, missing reference) — it never skips an item silently.

Optionally a metric states what its number is — ``matches`` (toolkit, version and which of its
numbers; :func:`codi2.evaluation.toolkits.cite`) and ``network`` (its feature network) — which
``codi2 eval`` reports beside every number.

Metrics are registered through the ``codi2_register_metrics`` hook (see
:mod:`codi2.evaluation.plugin`): ``register(name, load=..., options=..., description=...,
modality=..., needs=..., default=...)`` where ``load(options)`` returns an object following
:class:`Metric` (with the ``modality`` and ``needs`` the registration declares; ``default=True``
makes it one of ``codi2 eval score``'s defaults for that modality). This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from codi2.core.types import Media
from codi2.errors import MediaError

__all__ = ["Metric", "MetricResult", "check_items"]


@dataclass
class MetricResult:
    """A metric's value over a set (``mean``) and, for per-item metrics, each item's value."""

    mean: float
    per_item: list[float] | None = None
    #: anything else worth reporting (e.g. ``{"pairs": 3000}``)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int | None:
        return len(self.per_item) if self.per_item is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "per_item": self.per_item, **({"extra": self.extra} if self.extra else {})}


@runtime_checkable
class Metric(Protocol):
    """A metric (see the module docstring).

    - ``name``: short id shown in tables (``"dino"``, ``"clip-t"``, ``"lsd"``);
    - ``higher_is_better``: which direction is good (DINO: True, LSD/KL/FD: False);
    - ``modality``: what it scores (``"image"``, ``"audio"``);
    - ``needs``: which of ``"references"`` and ``"texts"`` :meth:`score` requires.
    """

    name: str
    higher_is_better: bool
    modality: str
    needs: tuple[str, ...]

    def score(
        self,
        generated: list[Media],
        references: list[Media] | None = None,
        texts: list[str] | None = None,
    ) -> MetricResult: ...


def check_items(
    metric: Metric,
    generated: Sequence[Media],
    references: Sequence[Media] | None,
    texts: Sequence[str] | None,
    *,
    paired: bool = True,
) -> None:
    """Validate the inputs of ``metric.score``; errors name the metric and the item."""
    what = f"metric {metric.name!r}"
    if not generated:
        raise MediaError(f"{what}: nothing to score (no generated items)")
    for role, items in (("generated", generated), ("reference", references or [])):
        for i, item in enumerate(items):
            if not isinstance(item, Media):
                raise MediaError(f"{what}: {role} item {i} is a {type(item).__name__}, not a Media")
            if item.modality != metric.modality:
                raise MediaError(
                    f"{what} scores {metric.modality}, got {item.modality} ({role})", item=item.label
                )
    if "references" in metric.needs:
        if references is None:
            raise MediaError(f"{what} needs references to compare the generated items with")
        if paired and len(references) != len(generated):
            raise MediaError(
                f"{what} compares pairs: {len(generated)} generated but {len(references)} references"
            )
    if "texts" in metric.needs:
        if texts is None:
            raise MediaError(f"{what} needs a text for every generated item")
        if len(texts) != len(generated):
            raise MediaError(f"{what}: {len(generated)} generated items but {len(texts)} texts")
        for item, text in zip(generated, texts):
            if not isinstance(text, str) or not text.strip():
                raise MediaError(f"{what}: empty text", item=item.label)
