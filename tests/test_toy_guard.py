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
# Least number of the N cases that must pass, per (task, held-out answers, foreign inputs).
# Measured at SEED with the shipped model: image_exemplar held-out 10/10 on world inputs and
# 7/10 on foreign inputs (the shipped model is trained on world renders only; docs/toy-world.md);
# image_to_text on foreign inputs 9/10. Copying the input scores 0, 1 and 0 on these cases.
IMAGE_EXEMPLAR_HELD_OUT = 8
IMAGE_EXEMPLAR_HELD_OUT_FOREIGN = 5
IMAGE_TO_TEXT_FOREIGN = 7
# Issue 14's tasks and rules (sound_edit, the cross-modal exemplars, interleaved, the period-6
# clip rule of video_next, multi-round held-out): PROVISIONAL until the shipped model is retrained
# on them (`codi2 train --preset toy`); the lead sets each to the retrained model's score at SEED
# less a margin of two cases. Copying any input scores 0 on all of these cases.
VIDEO_NEXT_HELD_OUT = 8
MULTI_ROUND_HELD_OUT = 8
SOUND_EDIT_HELD_OUT = 7
EXEMPLAR_IMAGE_TO_AUDIO_HELD_OUT = 6
EXEMPLAR_AUDIO_TO_IMAGE_HELD_OUT = 6
INTERLEAVED_HELD_OUT = 6

THRESHOLDS = {
    ("image_exemplar", True, False): IMAGE_EXEMPLAR_HELD_OUT,
    ("image_exemplar", True, True): IMAGE_EXEMPLAR_HELD_OUT_FOREIGN,
    ("image_to_text", None, True): IMAGE_TO_TEXT_FOREIGN,
    ("video_next", True, False): VIDEO_NEXT_HELD_OUT,
    ("multi_round", True, False): MULTI_ROUND_HELD_OUT,
    ("sound_edit", True, False): SOUND_EDIT_HELD_OUT,
    ("exemplar_image_to_audio", True, False): EXEMPLAR_IMAGE_TO_AUDIO_HELD_OUT,
    ("exemplar_audio_to_image", True, False): EXEMPLAR_AUDIO_TO_IMAGE_HELD_OUT,
    ("interleaved", True, False): INTERLEAVED_HELD_OUT,
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
