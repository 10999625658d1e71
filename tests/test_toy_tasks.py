"""The toy tasks added for the paper's remaining task shapes, and the clip rule whose next frame
is never a shown frame (issue 14: a task a copy of an input solves measures nothing)."""

from __future__ import annotations

import random

import pytest

from codi2.toy import world as w
from codi2.toy.bench import answer_copy
from codi2.toy.controls import copy_candidates, mismatched, unedited_pair
from codi2.toy.tasks import TASKS, make_samples
from codi2.toy.world import AudioItem, ImageItem

NEW_TASKS = ("sound_edit", "exemplar_image_to_audio", "exemplar_audio_to_image", "interleaved")


@pytest.mark.parametrize("rule", w.RULES)
def test_the_next_frame_of_every_clip_is_new(rule):
    """Over every start frame: the answer differs from each of the 4 shown frames."""
    for start in w.all_image_items():
        clip = w.video_sequence(start, rule, 4)
        assert clip.following not in clip.frames, (start, rule)
        assert len(set(clip.frames)) == 4
    # the shape rule also alternates the size; everything else stays
    clip = w.video_sequence(ImageItem("circle", "red", "small"), "shape", 3)
    assert clip.frames == (ImageItem("circle", "red", "small"), ImageItem("square", "red", "large"), ImageItem("triangle", "red", "small"))


@pytest.mark.parametrize("task", ["video_next", "interleaved"])
def test_no_input_of_a_clip_task_is_its_answer(task):
    """Copying any input (any frame, the image, the sound) solves no case, seen or held-out."""
    for held_out in (False, True):
        for s in make_samples(task, 40, seed=3, split="eval", held_out=held_out):
            frames = s.inputs["v"].frames
            assert s.expected[0] not in frames and s.expected[0] != s.inputs.get("b")
    from codi2.toy.bench import score_turns

    for s in make_samples(task, 12, seed=4, split="eval"):
        assert not any(score_turns(s, c)[0] for c in copy_candidates(s))


def test_sound_edit_takes_the_attribute_the_sound_names():
    samples = make_samples("sound_edit", 40, seed=0, split="eval")
    assert {s.variant for s in samples} == {"colour", "shape"}
    for s in samples:
        a, b = s.inputs["a"], s.inputs["b"]
        look = w.look_of(b)
        if s.variant == "colour":
            assert s.prompt == "Make {a} the colour that {b} sounds like." and s.expected == [a.with_(colour=look.colour)]
        else:
            assert s.prompt == "Turn {a} into the shape that {b} sounds like." and s.expected == [a.with_(shape=look.shape)]
        assert s.expected[0] != a  # the edit changes the image
        assert s.expected[0].size == a.size


def _as_sound(item):
    return w.sound_of(item) if isinstance(item, ImageItem) else item


@pytest.mark.parametrize("task", ["exemplar_image_to_audio", "exemplar_audio_to_image"])
def test_cross_modal_exemplar_transfers_the_edit_through_the_rule(task):
    """The pair changes one shared attribute (colour = pitch, shape = waveform) to a value; the
    query gets that value in its own modality and keeps everything else (size, overlay)."""
    samples = make_samples(task, 40, seed=0, split="eval")
    assert {s.variant for s in samples} == {"colour", "shape"} and TASKS[task].exemplar
    for s in samples:
        a, b, c = (s.inputs[k] for k in "abc")
        (answer,) = s.expected
        pair_modality = ImageItem if task == "exemplar_image_to_audio" else AudioItem
        assert isinstance(a, pair_modality) and isinstance(b, pair_modality) and type(c) is type(answer) is not pair_modality
        before, after, query, got = (_as_sound(x) for x in (a, b, c, answer))
        changed = [f for f in ("pitch", "waveform") if getattr(before, f) != getattr(after, f)]
        assert len(changed) == 1 and getattr(got, changed[0]) == getattr(after, changed[0]) != getattr(query, changed[0])
        kept = {"pitch", "waveform"} - set(changed)
        assert all(getattr(got, f) == getattr(query, f) for f in kept)
        if isinstance(c, ImageItem):
            assert answer.size == c.size
        else:
            assert answer.overlay == c.overlay
        # the controls: a mismatched pair shows another shared edit, an unedited pair none
        wrong, follows = mismatched(s, random.Random(0), lambda item, name: w.to_media(item, name=name))
        assert wrong.inputs["b"] != b and follows.expected != s.expected and follows.expected[0] != c
        assert type(wrong.inputs["b"]) is pair_modality
        assert unedited_pair(s).inputs["b"] == a


def test_interleaved_reads_every_modality():
    """Shape from the clip's rule, colour from the sound's pitch, size from the image: change any
    one input and the answer changes."""
    samples = make_samples("interleaved", 40, seed=0, split="eval")
    for s in samples:
        clip, a, b = s.inputs["v"], s.inputs["a"], s.inputs["b"]
        assert clip.rule == "shape"
        assert s.expected == [ImageItem(clip.following.shape, w.COLOUR_OF_PITCH[a.pitch], b.size)]
        assert answer_copy(s)[0][0] and len(s.media) == 3
    kinds = {m.modality for m in samples[0].media.values()}
    assert kinds == {"video", "audio", "image"}
    assert {s.expected[0].size for s in samples} == set(w.SIZES)


@pytest.mark.parametrize("task", NEW_TASKS)
def test_new_tasks_have_held_out_splits_and_train_without_them(task):
    held = make_samples(task, 6, seed=2, split="eval", held_out=True)
    assert all(s.held_out for s in held)
    train = make_samples(task, 60, seed=2, split="train")
    assert not any(s.held_out for s in train)
    # the training conversation ends with the answer in the fixed answer form
    content = train[0].conversation[-1]["content"]
    assert content[0] == {"type": "text", "text": "Here it is: "} and len(content) == 2


def test_training_mix_includes_the_new_tasks():
    """The MLLM phase writes its conversations from make_samples over every task, weighted."""
    from codi2.toy.recipe import RecipeSettings

    settings = RecipeSettings.full()
    total = sum(settings.task_weight.get(t, 1) for t in TASKS)
    assert all(t in TASKS for t in settings.task_weight)
    assert settings.task_weight["multi_round"] >= 2
    # appended after the older tasks: the older tasks' training seeds (seed + task index) stay the same
    assert list(TASKS)[-len(NEW_TASKS) :] == list(NEW_TASKS)
    assert settings.samples_per_task * total <= 20000  # the MLLM phase (1600 x 48) sees each conversation a few times


def test_training_chats_end_after_every_round_from_the_second():
    """Only a conversation's last round is a generation target, so a training chat that always
    ran all three rounds would never teach the LLM its middle round (the recolour) in chat form."""
    train = make_samples("multi_round", 80, seed=3, split="train")
    lengths = {len(s.rounds) for s in train}
    assert lengths == {2, 3}
    for s in train:
        assistant = [m for m in s.conversation if m["role"] == "assistant"]
        assert len(assistant) == len(s.rounds) == len(s.followups) + 1 == len(s.expected)
        targets = [part.get("target", True) for m in assistant for part in m["content"] if part["type"] == "image"]
        assert targets == [False] * (len(targets) - 1) + [True]
        # the last kept round's answer is the target, and it is that round's expected item
        assert s.targets[-1].name == f"target{len(s.expected) - 1}"
    # evaluation keeps every round: the bench asks them all
    assert {len(s.rounds) for s in make_samples("multi_round", 20, seed=3, split="eval")} == {3}
