"""The foreign renderer and tone synthesiser (codi2.toy.foreign) and the bench's controls (codi2.toy.controls)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from codi2.toy import foreign as f
from codi2.toy import world as w
from codi2.toy.analysers import analyse_audio, analyse_image
from codi2.toy.controls import (
    copy_candidates,
    mean_interval,
    mismatched,
    proportion,
    unedited_pair,
    wilson,
)
from codi2.toy.tasks import make_samples
from codi2.toy.world import AudioItem, ImageItem

PLAIN = {"side": 32, "aspect": 1.0, "dx": 0.0, "dy": 0.0, "scale": 1.0, "jitter": (0, 0, 0), "alpha": False, "format": "PNG", "quality": 90}


def _square32(data: np.ndarray) -> np.ndarray:
    """The centre square resized to 32 px: what the encoder's resize-and-centre-crop sees."""
    h, wd = data.shape[:2]
    s = min(h, wd)
    top, left = (h - s) // 2, (wd - s) // 2
    return np.asarray(Image.fromarray(data[top : top + s, left : left + s]).resize((32, 32), Image.BOX))


@pytest.mark.parametrize("item", w.all_image_items(), ids=w.caption)
def test_foreign_geometry_comes_from_the_definition(item):
    """Drawn without shift or scale, every item reads back as itself, yet differs from the training render."""
    for side in (32, 96):
        media = f.foreign_image(item, 0, style={**PLAIN, "side": side})
        assert media.data.shape == (side, side, 3)
        assert analyse_image(_square32(media.data)).item == item
    drawn = f.foreign_image(item, 0, style=PLAIN).data
    assert not np.array_equal(drawn, w.render_image(item))  # anti-aliased edges: another renderer
    assert (np.abs(drawn.astype(int) - w.render_image(item)).max(axis=-1) > 0).sum() >= 8


def test_foreign_images_vary_and_are_deterministic():
    item = ImageItem("triangle", "purple", "small")
    styles = [f.foreign_image(item, seed).meta["foreign"] for seed in range(40)]
    assert f.foreign_image(item, 7).data.tobytes() == f.foreign_image(item, 7).data.tobytes()
    assert len(set(styles)) == 40
    assert any("JPEG" in s for s in styles) and any("PNG" in s for s in styles) and any("alpha" in s for s in styles)
    shapes = {f.foreign_image(item, seed).data.shape for seed in range(40)}
    assert len(shapes) > 5 and any(h != wd for h, wd, _ in shapes)
    # the shape stays where the definition puts it: centre within 3 px, area within +-10 % scale
    for seed in range(40):
        square = _square32(f.foreign_image(item, seed).data)
        mask = (255 - square.min(axis=-1)) > 100
        _, xs = np.nonzero(mask)
        assert abs(xs.mean() + 0.5 - 16) < 3.5
        assert 0.6 < mask.sum() / w.shape_mask("triangle", "small").sum() < 1.5


def test_foreign_video_has_one_style_per_clip():
    clip = w.video_sequence(ImageItem("circle", "red", "large"), "colour", 4)
    media = f.foreign_media(clip, 3)
    assert media.modality == "video" and media.data.shape[0] == 4 and media.fps == w.VIDEO_FPS
    assert analyse_image(_square32(media.data[0])).item.colour == "red"


def test_foreign_tones_read_back_and_vary():
    rates, channels, formats = set(), set(), set()
    for k, item in enumerate(w.all_audio_items()[::3]):
        media = f.foreign_audio(item, k)
        assert media.sample_rate == w.SAMPLE_RATE and media.data.shape == (w.NUM_SAMPLES,)
        assert analyse_audio(media).item == item, media.meta
        assert not np.allclose(media.data, w.render_audio(item)[: media.data.size], atol=1e-2)
        rates.add(media.meta.get("source_sample_rate", w.SAMPLE_RATE))
        channels.add(media.meta["foreign"].split(", ")[1])
        formats.add(media.meta["format"])
    assert len(rates) >= 3 and channels == {"mono", "stereo"}
    assert formats == {"wav", "flac", "ogg", "mp3"}
    item = AudioItem("G4", "square", "bell")
    assert np.array_equal(f.foreign_audio(item, 1).data, f.foreign_audio(item, 1).data)
    samples, _ = f.synthesise(item, random.Random(0))
    assert np.abs(samples).max() <= 10 ** (f.GAIN_DB[1] / 20) + 1e-6


def test_foreign_inputs_keep_the_case():
    sample = make_samples("image_exemplar", 1, seed=0, split="eval", held_out=True)[0]
    other = f.foreign_inputs(sample, 0, 0)
    assert other.expected == sample.expected and other.prompt == sample.prompt and other.inputs == sample.inputs
    assert set(other.media) == set(sample.media) and all("foreign" in m.meta for m in other.media.values())
    with pytest.raises(TypeError, match="world item"):
        f.foreign_media("a red circle", 0)


def test_wilson_and_mean_intervals():
    low, high = wilson(20, 20)
    assert high == 1.0 and 0.83 < low < 0.84  # 95 % Wilson lower bound of 20/20 is 0.839
    low, high = wilson(0, 20)
    assert low == 0.0 and 0.16 < high < 0.17
    low, high = wilson(10, 20)
    assert 0.29 < low < 0.30 and 0.70 < high < 0.71
    assert wilson(0, 0) is None and proportion([]) is None
    assert proportion([True, False, True, True]) == {"value": 0.75, "k": 3, "n": 4, "ci95": [round(wilson(3, 4)[0], 4), round(wilson(3, 4)[1], 4)]}
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert low < 2.0 < high and abs((high - low) / 2 - 1.96 / np.sqrt(3)) < 1e-3
    assert mean_interval([1.0]) is None


def test_copy_any_sees_every_input_frame():
    """Copy-any offers every frame of a clip (the world's clips never repeat a frame as the
    answer: tests/test_toy_tasks.py; here each frame is offered as a candidate answer)."""
    samples = [s for s in make_samples("video_next", 40, seed=0, split="eval") if s.variant == "shape"]
    sample = samples[0]
    candidates = copy_candidates(sample)
    assert len(candidates) == 4  # one per frame; no audio input to copy the sound from
    for k in range(4):
        assert any(np.array_equal(c[0][0][0].data, sample.media["v"].data[k]) for c in candidates)
    composition = make_samples("composition", 1, seed=0, split="eval")[0]
    assert len(copy_candidates(composition)) == 2  # either input image


@pytest.mark.parametrize("task", ["image_exemplar", "audio_exemplar"])
def test_mismatched_pair_shows_another_edit(task):
    for i, sample in enumerate(make_samples(task, 12, seed=1, split="eval")):
        wrong, follows = mismatched(sample, random.Random(i), lambda item, name: w.to_media(item, name=name))
        assert wrong.expected == sample.expected and wrong.media["c"] is sample.media["c"]
        assert wrong.inputs["b"] != sample.inputs["b"] and wrong.inputs["a"] == sample.inputs["a"]
        assert follows.expected != sample.expected  # the shown edit implies another answer
        reading = analyse_image(wrong.media["b"]) if task == "image_exemplar" else analyse_audio(wrong.media["b"])
        assert reading.item == wrong.inputs["b"]
        plain = unedited_pair(sample)
        assert plain.inputs["b"] == plain.inputs["a"] and plain.prompt == sample.prompt
