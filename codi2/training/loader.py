"""Feeding the trainer: the seeded epoch sampler, the collate function and derived seeds.

The data order of epoch ``e`` is a permutation drawn from ``(seed, e)``, so it is the same in
every process and after a resume; Accelerate shards the batches across processes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from codi2.core.model import Batch, CoDi2Model
from codi2.errors import Codi2Error, DatasetError
from codi2.training.data import Sample


class EpochSampler(torch.utils.data.Sampler):
    """Indices of epoch ``e``: a permutation drawn from ``(seed, e)`` (or in order)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.size))
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", self.epoch))
        return iter(torch.randperm(self.size, generator=gen).tolist())

    def __len__(self) -> int:
        return self.size


@dataclass
class TrainBatch:
    """A collated batch (None when every sample in it was skipped) and what was left out."""

    batch: Batch | None
    size: int
    skipped: list[str]


class Collator:
    """Turns samples into a :class:`Batch` with ``model.collate`` (media are read here, in the
    data-loader workers). A sample that fails (unreadable media, too long...) stops the run
    naming its file and line, or with ``on_error="skip"`` is left out and reported."""

    def __init__(self, model: CoDi2Model, on_error: str = "raise"):
        self.model, self.on_error = model, on_error

    def __call__(self, samples: Sequence[Sample]) -> TrainBatch:
        try:
            return TrainBatch(self.model.collate([s.messages for s in samples]), len(samples), [])
        except Codi2Error:
            pass  # find which sample(s) failed, to name them
        good, skipped = [], []
        for sample in samples:
            try:
                self.model.collate([sample.messages])
                good.append(sample)
            except Codi2Error as exc:
                message = f"{sample.where}: {str(exc).removeprefix('conversation 0: ')}"
                if self.on_error == "raise":
                    raise DatasetError(f"{message} (set data.on_error: skip to leave such samples out)") from None
                skipped.append(message)
        batch = self.model.collate([s.messages for s in good]) if good else None
        return TrainBatch(batch, len(good), skipped)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any values (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class LRFactor:
    """Multiplier of the base learning rate at a step: linear warm-up, then constant, linear or
    cosine decay to 0 at ``total``. A callable object so the scheduler's state stays plain data."""

    def __init__(self, kind: str, warmup: int, total: int):
        self.kind, self.warmup, self.total = kind, warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))
