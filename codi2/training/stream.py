"""Streaming shards into the trainer: each rank and each data-loader worker reads its own
shards, every process stays in lockstep, and a resume continues from the exact sample.

The plan of epoch ``e`` is a pure function of ``(seed, e)``, the shard list (with its sample
counts, from the index) and the run's shape (processes, workers, batch size):

1. the shards are permuted by ``(seed, e)`` (in order with ``data.shuffle: false``);
2. rank ``r`` of ``R`` takes shards ``r, r + R, ...``; its worker ``w`` of ``W`` takes every
   ``W``-th of those;
3. a worker streams its shards' samples in order, each shard through a shuffle buffer seeded by
   ``(seed, e, shard)`` (so the order within a shard never depends on how shards were dealt),
   and batches its own samples (``batch_size``, the last batch of a worker may be short);
4. torch's ``DataLoader`` hands out the workers' batches round-robin, a worker that has run
   dry dropping out of the rotation; every rank stops after the *same* number of batches (the
   smallest rank's count), so no process waits for another at the end of an epoch.

A resume therefore needs only ``(epoch, batches consumed)``, which the checkpoint already
holds: replaying the round-robin on the sample counts says how many batches each worker had
delivered and whose turn was next. Each worker then skips whole shards by their counts and
only the consumed part of its current shard; the workers are renumbered so that the one
whose turn it was goes first. The batches that follow are exactly those of the uninterrupted
run.

Webdataset's own pipeline (``wds.WebDataset`` with its node/worker splitters) streams shards
too, but it cannot resume mid-epoch nor give every rank the same number of batches; this
module uses webdataset to read the tar files and adds those two properties.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from codi2.errors import DatasetError
from codi2.training.loader import Collator, TrainBatch, derive_seed
from codi2.training.shards import BadSample, Shard, read_shard, to_sample


@dataclass(frozen=True)
class StreamPlan:
    """Who reads which shards in an epoch, and how many batches that makes."""

    shards: tuple[Shard, ...]
    seed: int
    shuffle: bool
    world_size: int
    workers: int  # logical workers per rank (at least 1)
    batch_size: int

    def order(self, epoch: int) -> list[Shard]:
        if not self.shuffle:
            return list(self.shards)
        return [self.shards[i] for i in _permutation(len(self.shards), self.seed, epoch)]

    def worker_shards(self, epoch: int, rank: int, worker: int) -> list[Shard]:
        return self.order(epoch)[rank :: self.world_size][worker :: self.workers]

    def worker_batches(self, epoch: int, rank: int) -> list[int]:
        """Batches each logical worker of ``rank`` yields in ``epoch``."""
        return [-(-sum(s.samples for s in self.worker_shards(epoch, rank, w)) // self.batch_size) for w in range(self.workers)]

    def epoch_batches(self, epoch: int) -> int:
        """Batches every rank runs in ``epoch`` (the smallest rank's count)."""
        return min(sum(self.worker_batches(epoch, r)) for r in range(self.world_size))


@functools.lru_cache(maxsize=4)
def _permutation(size: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The shard order of an epoch (cached: the plan asks for it once per rank and worker)."""
    return tuple(torch.randperm(size, generator=torch.Generator().manual_seed(derive_seed(seed, "shards", epoch))).tolist())


def replay(counts: Sequence[int], consumed: int) -> tuple[list[int], int]:
    """After ``consumed`` batches of a round-robin over workers with ``counts`` batches each
    (a dry worker drops out): how many each had delivered, and whose turn is next."""
    delivered, turn, left = [0] * len(counts), 0, consumed
    while left > 0:
        if delivered[turn] < counts[turn]:
            delivered[turn] += 1
            left -= 1
        turn = (turn + 1) % len(counts)
        if left > 0 and all(d >= c for d, c in zip(delivered, counts)):
            raise ValueError(f"cannot skip {consumed} batches: the epoch holds {sum(counts)}")
    return delivered, turn


class _WorkerStream(torch.utils.data.IterableDataset):
    """The samples of one rank's logical worker (the physical worker ``p`` plays logical worker
    ``(p + first) % W``), from ``skip[w]`` samples on."""

    def __init__(self, plan: StreamPlan, rank: int, epoch: int, skip: list[int], first: int):
        self.plan, self.rank, self.epoch, self.skip, self.first = plan, rank, epoch, skip, first

    def __iter__(self) -> Iterator[object]:
        info = torch.utils.data.get_worker_info()
        physical = info.id if info is not None else 0
        worker = (physical + self.first) % self.plan.workers
        skip = self.skip[worker]
        for shard in self.plan.worker_shards(self.epoch, self.rank, worker):
            if skip >= shard.samples:  # a whole shard consumed before the resume: not opened
                skip -= shard.samples
                continue
            yield from self._shard(shard, skip)
            skip = 0

    def _shard(self, shard: Shard, skip: int) -> Iterator[object]:
        items = (to_sample(shard, *raw) for raw in read_shard(shard, 0 if self.plan.shuffle else skip))
        if self.plan.shuffle:  # replaying the seeded buffer from the shard's start skips exactly
            items = _shuffled(items, random.Random(derive_seed(self.plan.seed, "buffer", self.epoch, shard.name)))
            for _ in range(skip):
                next(items, None)
        count = 0
        for item in items:
            count += 1
            yield item
        if count + skip != shard.samples:
            raise DatasetError(f"{shard.name}: holds {count + skip} samples, its index says {shard.samples} "
                               "(rebuild the index: `codi2 data convert` writes it)")


def _shuffled(items: Iterator[object], rng: random.Random, size: int = 1000) -> Iterator[object]:
    """A shuffle buffer over ``items`` (one shard): fill, then emit a random one per arrival."""
    buffer: list[object] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class _ShardCollator:
    """Collates a worker's batch: checked samples go to :class:`Collator` (which skips those
    whose media fail to decode); samples that failed their check become skipped entries."""

    def __init__(self, collator: Collator):
        self.collator = collator

    def __call__(self, items: list[object]) -> TrainBatch:
        bad = [str(i) for i in items if isinstance(i, BadSample)]
        good = [i for i in items if not isinstance(i, BadSample)]
        if not good:
            return TrainBatch(None, 0, bad)
        batch = self.collator(good)
        return TrainBatch(batch.batch, batch.size, bad + batch.skipped)


class ShardedLoader:
    """The trainer's loader over shards: ``len()`` batches per epoch on every rank,
    ``set_epoch(e)``, and ``iter_from(n)`` to continue an epoch after ``n`` batches.

    ``on_error="raise"`` stops at the first bad sample (in this process, naming its shard and
    key); ``"skip"`` leaves it out of its batch and reports it in ``TrainBatch.skipped``.
    """

    def __init__(self, shards: Sequence[Shard], model: object, *, batch_size: int, seed: int, shuffle: bool,
                 rank: int, world_size: int, num_workers: int, on_error: str):
        self.plan = StreamPlan(tuple(shards), seed, shuffle, world_size, max(1, num_workers), batch_size)
        self.rank, self.num_workers, self.on_error = rank, num_workers, on_error
        self.collate = _ShardCollator(Collator(model, on_error="skip"))
        self.epoch = 0
        if len(shards) < world_size * self.plan.workers:
            raise DatasetError(f"{len(shards)} shard(s) for {world_size} process(es) x {self.plan.workers} worker(s): "
                               "every worker needs a shard of its own (write smaller shards: --shard-size)")
        if self.plan.epoch_batches(0) == 0:
            raise DatasetError("the shards hold no samples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.plan.epoch_batches(self.epoch)

    def __iter__(self) -> Iterator[TrainBatch]:
        return self.iter_from(0)

    def iter_from(self, consumed: int) -> Iterator[TrainBatch]:
        counts = self.plan.worker_batches(self.epoch, self.rank)
        delivered, first = replay(counts, consumed)
        skip = [d * self.plan.batch_size for d in delivered]
        # the workers are renumbered so that the one whose turn it was goes first
        stream = _WorkerStream(self.plan, self.rank, self.epoch, skip, first)
        loader = torch.utils.data.DataLoader(stream, batch_size=self.plan.batch_size, collate_fn=self.collate,
                                             num_workers=self.num_workers, persistent_workers=False)
        left = len(self) - consumed
        if left <= 0:
            return
        for item in loader:
            if item.skipped and self.on_error == "raise":
                raise DatasetError(f"{item.skipped[0]} (set data.on_error: skip to leave such samples out)")
            yield item
            left -= 1
            if left == 0:
                break
