"""Training augmentation (codi2.toy.augment) and the toy encoder's loudness normalisation."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from codi2.toy import augment as A
from codi2.toy import world as w
from codi2.toy.analysers import analyse_audio, analyse_image
from codi2.toy.world import AudioItem, ImageItem


def _square32(data: np.ndarray) -> np.ndarray:
    """The centre square at 32 px: what the encoder's resize-and-centre-crop sees."""
    h, wd = data.shape[:2]
    s = min(h, wd)
    top, left = (h - s) // 2, (wd - s) // 2
    return np.asarray(Image.fromarray(data[top : top + s, left : left + s]).resize((32, 32), Image.BOX))


@pytest.mark.parametrize("shape", w.SHAPES)
@pytest.mark.parametrize("size", w.SIZES)
def test_coverage_is_the_world_geometry(shape, size):
    """One sample per pixel, no shift or scale: exactly the world's footprint; more samples:
    anti-aliased edges covering the outline's true area, at any canvas size."""
    hard = A.coverage(shape, size, 32, 1, 0.0, 0.0, 1.0)
    assert np.array_equal(hard > 0.5, w.shape_mask(shape, size))
    side = w.SIZE_FRACTION[size] * w.IMAGE_SIDE
    area = {"circle": np.pi * side**2 / 4, "square": side**2, "triangle": side**2 / 2}[shape]
    soft = A.coverage(shape, size, 32, 4, 0.5, 0.25, 1.0)  # off the pixel grid: partial pixels
    assert ((soft > 0) & (soft < 1)).any()
    assert abs(soft.sum() - area) / area < 0.06
    big = A.coverage(shape, size, 128, 2, 0.0, 0.0, 1.1)
    assert abs(big.sum() / 16 - 1.21 * area) / area < 0.06  # 4x the side: 16x the area


def test_image_views_go_through_the_loader_vary_and_read_back():
    item = ImageItem("triangle", "purple", "small")
    views = [A.image_view(item, seed) for seed in range(30)]
    assert all(v.modality == "image" and v.data.dtype == np.uint8 and v.data.ndim == 3 for v in views)
    assert {v.meta["format"] for v in views} >= {"png", "jpeg", "webp"}
    assert len({v.data.shape for v in views}) > 10 and any(v.data.shape[0] != v.data.shape[1] for v in views)
    assert A.image_view(item, 3).data.tobytes() == A.image_view(item, 3).data.tobytes()
    for v in views:  # still the same item, where the definition puts it
        assert analyse_image(_square32(v.data)).item == item, v.meta
    transparent = A.image_view(item, 0, style={**A.image_style(random.Random(0)), "alpha": True, "format": "PNG", "aspect": 1.0})
    assert tuple(transparent.data[0, 0]) == w.BACKGROUND  # alpha composited on white by the loader


def test_video_views_share_one_style():
    clip = w.video_sequence(ImageItem("circle", "red", "large"), "colour", 4)
    media = A.view(clip, 5)
    assert media.modality == "video" and media.data.shape[0] == 4 and media.fps == w.VIDEO_FPS
    assert [analyse_image(_square32(f)).item.colour for f in media.data] == ["red", "green", "blue", "yellow"]
    with pytest.raises(TypeError, match="world item"):
        A.view("a red circle", 0)


def test_audio_views_cover_rates_channels_formats_and_read_back():
    rates, formats = set(), set()
    for k, item in enumerate(w.all_audio_items()[::4]):
        data = A.audio_file(item, k)
        info = soundfile.info(io.BytesIO(data))
        rates.add(info.samplerate)
        formats.add(info.format)
        media = A.audio_view(item, k)
        assert media.sample_rate == w.SAMPLE_RATE and media.data.ndim == 1
        assert analyse_audio(media).item == item, (info, item)
    assert len(rates) >= 4 and formats >= {"WAV", "FLAC", "OGG", "MP3"}
    gains = [np.abs(A.audio_samples(AudioItem("C4", "sine"), random.Random(s))).max() for s in range(40)]
    assert min(gains) < w.TONE_AMPLITUDE * 10 ** (-12 / 20) and max(gains) <= w.TONE_AMPLITUDE + 1e-6


def test_training_does_not_use_the_test_renderer():
    """The foreign split stays a test: neither the augmentation nor the recipe imports it."""
    import ast

    from codi2.toy import recipe, recipe_decoders, recipe_encoder, recipe_mllm, recipe_settings

    for module in (A, recipe, recipe_settings, recipe_encoder, recipe_decoders, recipe_mllm):
        tree = ast.parse(Path(module.__file__).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
        assert names and not [n for n in names if "foreign" in n], module.__name__


def test_augmented_conversations_replace_inputs_only():
    from codi2.toy.tasks import make_samples

    pool = A.ViewPool(2, seed=0, exact=0.0)
    for sample in make_samples("image_exemplar", 3, seed=0, split="train"):
        convo = A.augment_conversation(sample, pool, random.Random(0))
        user = [p for m in convo if m["role"] == "user" for p in m["content"] if p.get("data") is not None]
        assert user and all(p["data"] is not sample.media[p["name"]] for p in user)
        assert [m for m in convo if m["role"] == "assistant"] == [m for m in sample.conversation if m["role"] == "assistant"]
    same = A.augment_conversation(sample, A.ViewPool(2, exact=1.0), random.Random(0))
    assert same == sample.conversation
    assert A.augment_conversation(sample, A.ViewPool(0), random.Random(0)) == sample.conversation


def test_rms_loudness_makes_audio_features_gain_invariant():
    import torch

    from codi2.core.types import Media
    from codi2.plugins.toy import ToyEncoderOptions, load_encoder
    from codi2.plugins.toy.encoder import loudness_normalised

    wave = w.render_audio(AudioItem("E4", "square", "rain"), seed=1)
    quiet = wave * 10 ** (-12 / 20)
    features = {}
    for loudness in ("none", "rms"):
        encoder = load_encoder(ToyEncoderOptions(random_init=True, seed=0, audio_loudness=loudness))
        out = encoder.encode([Media("audio", wave, sample_rate=16000), Media("audio", quiet, sample_rate=16000)], "audio")
        features[loudness] = (out[0] - out[1]).abs().max().item()
        assert loudness in encoder.identity
    assert features["rms"] < 1e-4 < features["none"]
    assert np.array_equal(loudness_normalised(np.zeros(100, np.float32)), np.zeros(100))  # silence stays silence
    assert np.abs(loudness_normalised(np.full(100, 1e-6, np.float32))).max() <= 1e-4 + 1e-9  # gain capped
    assert torch.is_tensor(encoder.inputs([Media("audio", wave, sample_rate=16000)], "audio"))


def test_content_centring_places_the_drawing_and_leaves_world_renders_alone():
    from codi2.core.types import Media
    from codi2.plugins.toy import ToyEncoderOptions, load_encoder
    from codi2.plugins.toy.encoder import content_centred

    for item in w.all_image_items():  # the world draws every shape centred: nothing moves
        data = np.asarray(w.to_media(item).data)
        assert np.array_equal(content_centred(data), data)
    world = np.asarray(w.to_media(ImageItem("triangle", "blue", "small")).data)
    for dy, dx in ((3, -2), (-3, 3), (0, 2)):  # a shifted drawing comes back to the world's place
        shifted = np.full_like(world, 255)
        shifted[max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)] = world[max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)]
        assert np.array_equal(content_centred(shifted), world)
    # anti-aliased, JPEG'd, on a dark background, off-centre on a wider canvas: box centred to 1 px
    canvas = np.zeros((40, 60, 3), np.uint8)
    canvas[5:15, 8:20] = (200, 60, 60)
    canvas[5, 8:20] = canvas[14, 8:20] = (90, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "JPEG", quality=70)
    placed = content_centred(np.asarray(Image.open(buffer).convert("RGB")))
    rows, cols = np.nonzero(np.abs(placed.astype(int)).sum(-1) > 150)
    assert abs((rows.min() + rows.max()) / 2 - 19.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 29.5) <= 1
    assert placed[0, 0].sum() < 30  # the uncovered border takes the background colour
    flat = np.full((16, 16, 3), 128, np.uint8)
    assert content_centred(flat) is flat or np.array_equal(content_centred(flat), flat)
    # the option reaches the features, and the encoder's identity (feature caches) names it
    encoders = {c: load_encoder(ToyEncoderOptions(random_init=True, seed=0, image_centring=c)) for c in ("none", "content")}
    shifted_item, world_item = Media("image", shifted), Media("image", world)
    moved = {c: (e.encode([shifted_item], "image") - e.encode([world_item], "image")).abs().max().item() for c, e in encoders.items()}
    assert moved["content"] < 1e-6 < moved["none"]
    assert "image_centring=content" in encoders["content"].identity


def test_rolled_shifts_each_image_within_the_bound():
    import torch

    x = torch.zeros(6, 3, 20, 20)
    x[:, :, 10, 10] = 1.0
    out = A.rolled(x, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    where = [tuple(torch.nonzero(img[0])[0].tolist()) for img in out]
    assert all(abs(r - 10) <= 3 and abs(c - 10) <= 3 for r, c in where) and len(set(where)) > 1


def test_every_task_input_can_be_augmented():
    """Every user-supplied medium of every task is named after one of the sample's inputs, so the
    MLLM dataset can swap it for a view (a new task shape that broke this would train on exact
    renders only, silently)."""
    from codi2.toy.tasks import TASKS, make_samples

    pool = A.ViewPool(1, exact=0.0)
    for task in TASKS:
        for sample in make_samples(task, 2, seed=0, split="train"):
            convo = A.augment_conversation(sample, pool, random.Random(0))
            before = [p for m in sample.conversation if m["role"] == "user" for p in m["content"] if p.get("data") is not None]
            after = [p for m in convo if m["role"] == "user" for p in m["content"] if p.get("data") is not None]
            assert all(p["name"] in sample.inputs for p in before), task
            assert all(a["data"] is not b["data"] for a, b in zip(before, after)), task
