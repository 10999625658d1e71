"""What every frozen, pretrained encoder plugin shares (imported lazily: it imports torch).

A frozen encoder never trains: ``set_trainable`` accepts only ``"frozen"``, its trained state
is empty, and it stays in eval mode even inside a model put in training mode (so no dropout
or batch statistics ever change its features).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from codi2.core.types import Media
from codi2.errors import CheckpointError, ConfigError, MediaError, UnknownModalityError


class FrozenEncoder(nn.Module):
    """Base class: modality checks, media loading, and the frozen trainable-state contract.

    Subclasses set ``name``, ``modalities``, ``embed_dim``, ``sample_rate`` and implement
    ``identity``, ``tokens_per_item`` and ``encode``."""

    name: str = "encoder"
    modalities: tuple[str, ...] = ()
    embed_dim: int = 0
    sample_rate: int = 16000

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise UnknownModalityError(
                f"encoder {self.name!r} does not encode {modality!r}; it encodes {', '.join(self.modalities)}"
            )

    def load_media(self, source: Any, modality: str, *, name: str | None = None) -> Media:
        """Read and validate one item (path, bytes, PIL image, array, tensor, Media; text: str),
        audio resampled to ``sample_rate``."""
        from codi2.core.modality import resolve_modalities

        self.check_modality(modality)  # read by the registered modality's spec (audio resampled to our rate)
        return resolve_modalities().load(source, modality, name=name, sample_rate=self.sample_rate)

    def check_items(self, items: Sequence[Media], modality: str) -> list[Media]:
        """Every item is a Media of ``modality`` (errors name the item)."""
        self.check_modality(modality)
        for index, item in enumerate(items):
            if not isinstance(item, Media):
                raise MediaError(f"encode() takes Media items (see load_media), got {type(item).__name__}", item=f"#{index}")
            if item.modality != modality:
                raise MediaError(f"is a {item.modality} item, encoded as {modality}", item=item.label)
        return list(items)

    # --- the frozen contract ----------------------------------------------------------------

    def set_trainable(self, policy: str) -> None:
        if policy != "frozen":
            raise ConfigError(f"encoder {self.name!r} is a frozen pretrained encoder; policy {policy!r} is not supported")
        self.requires_grad_(False)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise CheckpointError(
                f"encoder {self.name!r} is frozen and has no trained state, but the checkpoint holds "
                f"{len(state)} tensor(s) for it (first: {sorted(state)[0]!r})"
            )

    def train(self, mode: bool = True) -> FrozenEncoder:
        # Always eval: a parent model's .train() must not switch on dropout here.
        return super().train(False)
