"""What every phase of the toy recipe (:mod:`codi2.toy.recipe`) shares: its settings and
per-phase budgets, the clock that holds a phase to its budget, the toy-encoder options every
phase's configuration repeats, and the world items the encoder and decoders train on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PhaseBudget:
    minutes: float
    steps: int
    batch: int
    lr: float


@dataclass
class RecipeSettings:
    """Sizes and budgets. :meth:`full` is the shipped model's recipe (about 30 min on 2 cores),
    :meth:`smoke` a seconds-long run of the same code (tests)."""

    encoder: PhaseBudget
    image_decoder: PhaseBudget
    audio_decoder: PhaseBudget
    mllm: PhaseBudget
    threads: int = 2
    seed: int = 0
    rain_seeds: int = 3
    #: toy-encoder architecture options (width, heads, blocks, embed_dim)
    encoder_size: dict[str, int] = field(default_factory=dict)
    #: the toy encoder's audio loudness normalisation (``ToyEncoderOptions.audio_loudness``)
    audio_loudness: str = "rms"
    #: the toy encoder's image position normalisation (``ToyEncoderOptions.image_centring``)
    image_centring: str = "content"
    #: the toy encoder's vision stem (``ToyEncoderOptions.vision_stem``)
    vision_stem: str = "conv"
    #: augmented views (:mod:`codi2.toy.augment`) per world item in the encoder phase's pool
    encoder_views: int = 16
    #: augmented views per vision/audio minibatch of the encoder phase (beside ``encoder.batch`` exact ones)
    encoder_view_batch: int = 24
    #: the augmented images also rolled by up to this many pixels of the 224-px input per step
    #: (the white margin wraps around), so the pool's shifts are not memorised
    encoder_roll: int = 12
    #: a pool of this many augmented views per item for the MLLM dataset's inputs (each input the
    #: exact render with probability ``mllm_exact``). 0: exact renders only -- with 8 / 0.3 the
    #: held-out combinations fell from 0.98-1.00 to 0.43-0.62 on world inputs (docs/toy-model.md)
    mllm_views: int = 0
    mllm_exact: float = 0.3
    image_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    audio_channels: list[int] = field(default_factory=lambda: [64])
    llm_hidden: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    samples_per_task: int = 600
    #: tasks that get more training conversations (relational tasks learn slowest)
    task_weight: dict[str, int] = field(default_factory=lambda: {
        "image_exemplar": 4, "audio_exemplar": 2, "video_next": 2, "multi_round": 3,
        "exemplar_image_to_audio": 2, "exemplar_audio_to_image": 2, "interleaved": 2})
    #: prompts per task and split in the final evaluation (0: no evaluation)
    eval_per_task: int = 6
    eval_steps: int = 20

    @classmethod
    def full(cls, minutes: float = 30.0, threads: int = 2) -> RecipeSettings:
        share = minutes / 30.0
        return cls(
            # 5 min: the augmented views (24 per image/audio minibatch) make a step about 1.4x dearer
            encoder=PhaseBudget(5.0 * share, 1100, 12, 3e-3),
            image_decoder=PhaseBudget(5.0 * share, 20000, 32, 1e-3),
            audio_decoder=PhaseBudget(4.0 * share, 20000, 32, 1e-3),
            # steps, not minutes, set the MLLM's schedule (about 0.47 s a step here); the
            # minutes only stop a slower machine at its budget
            mllm=PhaseBudget(14.0 * share, round(1600 * share), 48, 1e-3),
            threads=threads,
        )

    @classmethod
    def smoke(cls) -> RecipeSettings:
        return cls(
            encoder=PhaseBudget(0.2, 3, 4, 2e-3),
            image_decoder=PhaseBudget(0.2, 3, 4, 1e-3),
            audio_decoder=PhaseBudget(0.2, 3, 4, 1e-3),
            mllm=PhaseBudget(0.3, 6, 4, 1e-3),
            threads=1, rain_seeds=1, encoder_views=1, encoder_view_batch=2, mllm_views=2, image_channels=[8, 16], audio_channels=[16], llm_hidden=32, llm_layers=1, llm_heads=2,
            samples_per_task=2, eval_per_task=1, eval_steps=2,
        )


class PhaseClock:
    """Stops a phase at its time budget or step cap, whichever comes first."""

    def __init__(self, budget: PhaseBudget):
        self.budget, self.start, self.step = budget, time.monotonic(), 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def fraction(self) -> float:
        return max(self.step / self.budget.steps, self.elapsed / (60 * self.budget.minutes))

    def running(self) -> bool:
        return self.step < self.budget.steps and self.elapsed < 60 * self.budget.minutes

    def lr(self) -> float:
        """Constant, then a linear decay over the last 30 % of the phase."""
        return self.budget.lr * min(1.0, max(0.05, (1 - self.fraction) / 0.3))


def world_items(rain_seeds: int) -> tuple[list[Any], list[Any]]:
    """``[(ImageItem, Media)]`` for every image item, ``[(AudioItem, Media)]`` for every audio
    item (rain items once per seed)."""
    from codi2.toy import world as w

    images = [(item, w.to_media(item)) for item in w.all_image_items()]
    audio = []
    for item in w.all_audio_items():
        for seed in range(rain_seeds if item.overlay == "rain" else 1):
            audio.append((item, w.to_media(item, seed=1000 + seed)))
    return images, audio


def encoder_options(settings: RecipeSettings) -> dict[str, Any]:
    """The toy-encoder options every phase's configuration repeats (size and preprocessing)."""
    return {**settings.encoder_size, "audio_loudness": settings.audio_loudness, "image_centring": settings.image_centring,
            "vision_stem": settings.vision_stem}
