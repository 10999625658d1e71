"""Guards on the shipped toy model (codi2/assets/toy): held-out exemplar edits and foreign inputs.

A regression in what the benchmark headlines -- exemplar edits whose answer is a held-out
combination, and inputs drawn by software other than the training renderer -- fails CI here.
Fixed seed, small n (the whole file runs in well under a minute on one core).

Thresholds sit *below* what the shipped model scores at this seed (measured when the guard
was written; see docs/toy-world.md for the full benchmark with intervals), leaving a margin of
at least two cases so that a harmless change of floating point does not trip them, while a
model that stops reading the pair or the images falls far below: copying the query image
(:func:`test_the_guard_can_fail`) scores at most 1 of 10 on the same cases, and copying *any*
input scores less than every threshold.
"""

from __future__ import annotations

import pytest

from codi2.toy.bench import answer_all, answer_copy, score_turns
from codi2.toy.controls import copy_candidates
from codi2.toy.foreign import foreign_inputs
from codi2.toy.tasks import make_samples

SEED = 0
N = 10
# Least number of the N cases that must pass, per (task, held-out answers, foreign inputs): the
# shipped model's score at SEED less a margin of two cases. Measured 2026-12-07 with the model
# whose encoder reads pixels through a convolutional stem (docs/toy-model.md): 10/10 on every
# case below, world and foreign inputs alike (copying the query image: at most 1/10; copying any
# input: 0/10). Before the stem, foreign images were the weak point (image_exemplar held-out
# 6/10, image_to_text held-out 8/10). image_to_text held-out on world inputs is guarded because
# it is the cell that varied between training runs (another run: 0.43 over 60 cases;
# docs/toy-world.md).
IMAGE_EXEMPLAR_HELD_OUT = 8
IMAGE_EXEMPLAR_HELD_OUT_FOREIGN = 8
IMAGE_TO_TEXT_HELD_OUT = 8
IMAGE_TO_TEXT_FOREIGN = 8
IMAGE_TO_TEXT_HELD_OUT_FOREIGN = 8
AUDIO_EXEMPLAR_HELD_OUT_FOREIGN = 8
VIDEO_NEXT_HELD_OUT = 8
VIDEO_NEXT_HELD_OUT_FOREIGN = 8
MULTI_ROUND_SEEN = 8
MULTI_ROUND_HELD_OUT = 8
SOUND_EDIT_HELD_OUT = 8
EXEMPLAR_IMAGE_TO_AUDIO_HELD_OUT = 8
EXEMPLAR_AUDIO_TO_IMAGE_HELD_OUT = 8
INTERLEAVED_HELD_OUT = 8
IMAGE_EDIT_HELD_OUT_FOREIGN = 8
COMPOSITION_HELD_OUT_FOREIGN = 8
EXEMPLAR_AUDIO_TO_IMAGE_HELD_OUT_FOREIGN = 8
INTERLEAVED_HELD_OUT_FOREIGN = 8

THRESHOLDS = {
    ("image_exemplar", True, False): IMAGE_EXEMPLAR_HELD_OUT,
    ("image_exemplar", True, True): IMAGE_EXEMPLAR_HELD_OUT_FOREIGN,
    ("image_to_text", True, False): IMAGE_TO_TEXT_HELD_OUT,
    ("image_to_text", None, True): IMAGE_TO_TEXT_FOREIGN,
    ("image_to_text", True, True): IMAGE_TO_TEXT_HELD_OUT_FOREIGN,
    ("audio_exemplar", True, True): AUDIO_EXEMPLAR_HELD_OUT_FOREIGN,
    ("video_next", True, False): VIDEO_NEXT_HELD_OUT,
    ("video_next", True, True): VIDEO_NEXT_HELD_OUT_FOREIGN,
    ("multi_round", False, False): MULTI_ROUND_SEEN,
    ("multi_round", True, False): MULTI_ROUND_HELD_OUT,
    ("sound_edit", True, False): SOUND_EDIT_HELD_OUT,
    ("exemplar_image_to_audio", True, False): EXEMPLAR_IMAGE_TO_AUDIO_HELD_OUT,
    ("exemplar_audio_to_image", True, False): EXEMPLAR_AUDIO_TO_IMAGE_HELD_OUT,
    ("interleaved", True, False): INTERLEAVED_HELD_OUT,
    ("image_edit", True, True): IMAGE_EDIT_HELD_OUT_FOREIGN,
    ("composition", True, True): COMPOSITION_HELD_OUT_FOREIGN,
    ("exemplar_audio_to_image", True, True): EXEMPLAR_AUDIO_TO_IMAGE_HELD_OUT_FOREIGN,
    ("interleaved", True, True): INTERLEAVED_HELD_OUT_FOREIGN,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shipped():
    import codi2

    return codi2.load("toy").eval()


def _cases(task, held_out, foreign):
    samples = make_samples(task, N, seed=SEED, split="eval", held_out=held_out)
    return [foreign_inputs(s, SEED, i) for i, s in enumerate(samples)] if foreign else samples


def _passed(sample, turns) -> bool:
    """Every expected output of every turn right (multi-round: each round judged on its own)."""
    return score_turns(sample, turns)[0]


@pytest.mark.parametrize(("task", "held_out", "foreign"), list(THRESHOLDS), ids=lambda v: str(v))
def test_shipped_model_keeps_its_measured_accuracy(shipped, task, held_out, foreign):
    samples = _cases(task, held_out, foreign)
    answers = answer_all(shipped, samples, {}, SEED, batch=N)
    passed = sum(_passed(s, a) for s, a in zip(samples, answers) if not isinstance(a, Exception))
    assert passed >= THRESHOLDS[(task, held_out, foreign)], f"{task}: {passed}/{N} (held_out={held_out}, foreign={foreign})"


def test_the_guard_can_fail():
    """The same scoring on the same cases gives the copy-the-input answer no pass: the threshold bites."""
    for (task, held_out, foreign), threshold in THRESHOLDS.items():
        samples = _cases(task, held_out, foreign)
        passed = sum(_passed(s, answer_copy(s)) for s in samples)
        best_copy = sum(any(_passed(s, c) for c in copy_candidates(s)) for s in samples)
        assert passed < threshold and best_copy < threshold, task
