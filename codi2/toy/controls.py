"""The benchmark's controls and intervals: what a sceptic needs before believing an accuracy.

Controls (each scored by the same analysers as the model):

- **copy-any-input** (:func:`copy_candidates`) — every answer made only of the sample's own
  input items (as the world renders them) (each input image, each frame of an input clip, each input sound; in multi-round,
  the previous round's ground truth; for text answers the prompt). A case counts as solved when
  *any* such answer passes: the best input per case, so a task whose answer is often one of its
  inputs would show it (the planners of :mod:`codi2.toy.tasks` now never answer with an input:
  a clip's next frame is never a shown frame, composition's colour source is never the answer).
- **mismatched exemplars** (:func:`mismatched`) — the exemplar pair shows a *different* edit
  than the one whose result is scored (another attribute or another value; for audio the other
  overlay; for the cross-modal exemplars another shared attribute or value: colour = pitch,
  shape = waveform). A model that reads the pair scores near 0 on the right answer and high on
  "follows the pair" (the answer the shown edit implies); a model that guesses the edit from
  the query alone scores the same as without the mismatch.
- **no-examples, training form** (:func:`unedited_pair`) — the exemplar prompt exactly as
  training writes it, with the pair replaced by an *unedited* pair (``b`` = ``a``), so the
  prompt carries no example of the edit. Training has no prompt form that asks for an edit
  without either naming it (instruction editing, which gives the answer away) or showing it
  (the exemplar pair); the unedited pair is the nearest fair form (docs/toy-world.md).

Intervals: :func:`wilson` for proportions (95 %, also right at 0 and 1), :func:`mean_interval`
for means of continuous values (normal approximation, 1.96 standard errors).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from codi2.core.types import Media
from codi2.toy import world as w
from codi2.toy.tasks import Sample

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` out of ``n`` (None when ``n`` is 0)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float] | None:
    """A 95 % interval of the mean (normal approximation; None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = z * sd / math.sqrt(len(values))
    return mean - half, mean + half


def proportion(flags: Sequence[bool]) -> dict[str, Any] | None:
    """``{"value", "k", "n", "ci95"}`` of a list of pass/fail flags (None if empty)."""
    if not flags:
        return None
    k = int(sum(bool(f) for f in flags))
    low, high = wilson(k, len(flags))
    return {"value": k / len(flags), "k": k, "n": len(flags), "ci95": [round(low, 4), round(high, 4)]}


# --- copy-any-input --------------------------------------------------------------------------


def _modality(expected: Any) -> str:
    return "text" if isinstance(expected, str) else "image" if isinstance(expected, w.ImageItem) else "audio"


def copy_candidates(sample: Sample) -> list[list[tuple[list[Media], str]]]:
    """Every answer (one ``(media, text)`` per user turn) built only from the sample's inputs."""
    per_turn = []
    previous: list[Media] = []
    start = 0
    for k, prompt in enumerate(sample.prompts):
        # the input *items*, rendered by the world: on foreign inputs a copy is judged on what it
        # shows, not on how well the analysers read another renderer's drawing
        inputs = [w.to_media(item, name=name) for name, item in sample.inputs.items() if "{" + name + "}" in prompt] if k == 0 else previous
        wanted = {_modality(e) for e in sample.expected[start : start + sample.rounds[k]]}
        pools = []
        for modality in ("image", "audio"):
            if modality not in wanted:
                continue
            pool = [m for m in inputs if m.modality == modality]
            if modality == "image":
                pool += [Media("image", frame, name=m.name) for m in inputs if m.modality == "video" for frame in m.data]
            pools.append([[m] for m in pool] or [[]])
        per_turn.append([([m for part in choice for m in part], prompt) for choice in itertools.product(*pools)] if pools else [([], prompt)])
        previous = [t for t in sample.targets[start : start + sample.rounds[k]] if isinstance(t, Media)]
        start += sample.rounds[k]
    return [list(turns) for turns in itertools.product(*per_turn)]


# --- exemplar controls -----------------------------------------------------------------------

Render = Callable[[w.Item, str], Media]  # (item, input name) -> Media


def mismatched(sample: Sample, rng: random.Random, render: Render) -> tuple[Sample, Sample]:
    """The exemplar sample with a pair that shows another edit: ``(scored on the right answer,
    scored on the answer the shown edit implies)``. The query ``c`` and its media stay the same."""
    a, b, c = (sample.inputs[k] for k in "abc")
    if sample.task == "audio_exemplar":
        other = "bell" if b.overlay == "rain" else "rain"
        pair_b, implied = a.with_(overlay=other), c.with_(overlay=other)
    elif sample.task in ("exemplar_image_to_audio", "exemplar_audio_to_image"):
        pair_b, implied = _cross_mismatch(a, c, sample.expected[0], rng)
    else:
        right = sample.expected[0]
        options = [(attr, value) for attr, values in (("colour", list(w.COLOURS)), ("shape", list(w.SHAPES)), ("size", list(w.SIZES)))
                   for value in values
                   if getattr(a, attr) != value and getattr(c, attr) != value and c.with_(**{attr: value}) != right]
        attr, value = rng.choice(options)
        pair_b, implied = a.with_(**{attr: value}), c.with_(**{attr: value})
    media = dict(sample.media, b=render(pair_b, "b"))
    wrong_pair = replace(sample, media=media, inputs=dict(sample.inputs, b=pair_b))
    follows = replace(wrong_pair, expected=[implied], targets=[w.to_media(implied, name="target0")])
    return wrong_pair, follows


def _cross_mismatch(a: w.Item, c: w.Item, right: w.Item, rng: random.Random) -> tuple[w.Item, w.Item]:
    """A cross-modal pair ``a -> b`` showing another edit of a shared attribute (colour = pitch,
    shape = waveform) than the right one, and the answer it implies for ``c``."""
    shared = (("colour", "pitch", w.PITCH_OF_COLOUR), ("shape", "waveform", w.WAVEFORM_OF_SHAPE))
    options = []
    for image_attr, sound_attr, to_sound in shared:
        for value, sound_value in to_sound.items():
            if isinstance(a, w.ImageItem):  # image pair, sound query
                pair_b, implied = a.with_(**{image_attr: value}), c.with_(**{sound_attr: sound_value})
            else:  # sound pair, image query
                pair_b, implied = a.with_(**{sound_attr: sound_value}), c.with_(**{image_attr: value})
            if pair_b != a and implied not in (right, c):
                options.append((pair_b, implied))
    return rng.choice(options)


def unedited_pair(sample: Sample) -> Sample:
    """The exemplar prompt in its training form with ``b`` = ``a``: no example of the edit shown."""
    return replace(sample, media=dict(sample.media, b=sample.media["a"]), inputs=dict(sample.inputs, b=sample.inputs["a"]))


__all__ = ["copy_candidates", "mean_interval", "mismatched", "proportion", "unedited_pair", "wilson"]
