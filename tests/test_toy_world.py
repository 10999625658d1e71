"""The toy world, its tasks and its analysers: generator and analysers agree on every item,
captions and the cross-modal rule hold, held-out combinations never reach a training answer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from codi2.core.messages import MediaPart, normalize_messages
from codi2.core.types import Media
from codi2.toy import world as w
from codi2.toy.analysers import analyse, analyse_audio, analyse_image, judge, lsd
from codi2.toy.tasks import NO_EXAMPLES, TASKS, expected_held_out, make_samples, vocabulary
from codi2.toy.world import AudioItem, ImageItem

# --- the world as defined --------------------------------------------------------------------------


def test_world_matches_its_definition():
    assert w.SHAPES == ("circle", "square", "triangle") and w.SIZES == ("small", "large")
    assert w.COLOURS == {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
                         "yellow": (230, 200, 40), "purple": (150, 60, 190), "orange": (240, 130, 30)}
    assert w.PITCHES == {"C4": 261.63, "E4": 329.63, "G4": 392.00, "A4": 440.00, "C5": 523.25, "D5": 587.33}
    assert w.WAVEFORMS == ("sine", "square", "triangle") and w.OVERLAYS == ("none", "rain", "bell")
    assert len(w.all_image_items()) == 36 and len(set(w.all_image_items())) == 36
    assert len(w.all_audio_items()) == 54 and len(set(w.all_audio_items())) == 54
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        ImageItem("circle", "pink")


@pytest.mark.parametrize("item", w.all_image_items(), ids=w.caption)
def test_image_rendering(item):
    image = w.render_image(item)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    colours = {tuple(p) for p in image.reshape(-1, 3)}
    assert colours == {(255, 255, 255), w.COLOURS[item.colour]}  # hard edges, exact colour
    ys, xs = np.nonzero((image != 255).any(-1))
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(width / 32 - {"small": 0.40, "large": 0.75}[item.size]) < 0.05
    assert abs(height - width) <= 1
    assert abs((xs.min() + xs.max() + 1) / 2 - 16) <= 0.5 and abs((ys.min() + ys.max() + 1) / 2 - 16) <= 1  # centred
    assert np.array_equal(image, w.render_image(item))


def test_audio_rendering():
    a = w.render_audio(AudioItem("A4", "sine"))
    assert a.shape == (16000,) and a.dtype == np.float32 and np.abs(a).max() <= 1
    spectrum = np.abs(np.fft.rfft(a))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over 1 s
    rain0, rain1 = (w.render_audio(AudioItem("A4", "sine", "rain"), seed=s) for s in (0, 1))
    assert np.array_equal(rain0, w.render_audio(AudioItem("A4", "sine", "rain"), seed=0))  # deterministic
    assert not np.array_equal(rain0, rain1)  # the seed draws the rain
    noise = np.abs(np.fft.rfft(rain0 - a))
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    assert noise[(freqs > 3000) & (freqs < 6000)].mean() > 100 * noise[(freqs < 2900) | (freqs > 6100)].mean()
    bell = w.render_audio(AudioItem("A4", "sine", "bell")) - a
    energy = np.abs(bell).reshape(16, 1000).max(1)  # strikes at 0, 250, 500, 750 ms
    assert all(energy[k] > 5 * energy[k + 2] for k in (0, 4, 8, 12))
    square = np.abs(np.fft.rfft(w.render_audio(AudioItem("A4", "square"))))
    triangle = np.abs(np.fft.rfft(w.render_audio(AudioItem("A4", "triangle"))))
    for n in (3, 5, 7):  # odd harmonics at 1/n (square) and 1/n^2 (triangle); 1 Hz bins, A4 = 440 Hz
        assert square[n * 440] / square[440] == pytest.approx(1 / n, rel=0.02)
        assert triangle[n * 440] / triangle[440] == pytest.approx(1 / n**2, rel=0.02)
        assert square[(n - 1) * 440] < 1e-3 * square[440]  # no even harmonics


def test_captions_and_parsing():
    assert w.caption(ImageItem("circle", "red", "large")) == "a large red circle"
    assert w.caption(AudioItem("E4", "sine", "rain")) == "a sine tone at E4 with rain"
    assert w.caption(AudioItem("G4", "square", "bell")) == "a square tone at G4 with bells"
    assert w.caption(AudioItem("C5", "triangle")) == "a triangle tone at C5"
    for item in w.all_image_items() + w.all_audio_items():
        assert w.parse_caption(f"It is {w.caption(item)}.") == item
    assert w.parse_caption("nothing here") is None


def test_cross_modal_rule():
    rule = {"red": "C4", "green": "E4", "blue": "G4", "yellow": "A4", "purple": "C5", "orange": "D5"}
    for item in w.all_image_items():
        sound = w.sound_of(item)
        assert sound.pitch == rule[item.colour] and sound.overlay == "none"
        assert sound.waveform == {"circle": "sine", "square": "square", "triangle": "triangle"}[item.shape]
        assert w.look_of(sound) == item.with_(size="large")
    assert w.look_of(AudioItem("G4", "square", "bell")) == ImageItem("square", "blue", "large")


def test_video_sequences():
    clip = w.video_sequence(ImageItem("circle", "yellow", "small"), "colour")
    assert [f.colour for f in clip.frames] == ["yellow", "purple", "orange", "red"]  # wraps
    assert clip.following == ImageItem("circle", "green", "small")
    clip = w.video_sequence(ImageItem("square", "blue"), "shape")
    assert [(f.shape, f.size) for f in clip.frames] == [("square", "large"), ("triangle", "small"), ("circle", "large"), ("square", "small")]
    assert clip.following == ImageItem("triangle", "blue", "large")  # shape and size: period 6
    media = w.to_media(clip, name="v")
    assert media.modality == "video" and media.data.shape == (4, 32, 32, 3) and media.fps


def test_held_out_definition():
    held = {i for i in w.all_image_items() if w.is_held_out(i)}
    assert held == {ImageItem(s, c, z) for s, c in (("triangle", "purple"), ("circle", "orange")) for z in w.SIZES}
    assert [a for a in w.all_audio_items() if w.is_held_out(a)] == [AudioItem("G4", "square", "bell")]
    assert not w.is_held_out("a large purple triangle")  # strings are judged through tasks.expected_held_out
    assert expected_held_out("a large purple triangle")


# --- analysers: 100 % on the clean world, robust to mild damage ---------------------------------------


def test_analysers_read_every_clean_item():
    for item in w.all_image_items():
        reading = analyse_image(w.render_image(item))
        assert reading.item == item, (item, reading)
        assert reading.confidence > 0.9
    for item in w.all_audio_items():
        for seed in (0, 1):
            reading = analyse_audio(w.render_audio(item, seed))
            assert reading.item == item, (item, reading)


def _blur(image):
    padded = np.pad(image.astype(float), ((1, 1), (1, 1), (0, 0)), mode="edge")
    total = sum(padded[1 + dy : 33 + dy, 1 + dx : 33 + dx] * (2 if dy == dx == 0 else 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return (total / 10).round().astype(np.uint8)


def test_image_analyser_is_robust_to_mild_damage():
    rng = np.random.default_rng(0)
    damages = {
        "noise": lambda x: np.clip(x + rng.normal(0, 25, x.shape), 0, 255).astype(np.uint8),
        "blur": _blur,
        "shift": lambda x: np.roll(x, (2, -2), (0, 1)),
        "specks": lambda x: np.where(rng.random(x.shape[:2])[..., None] < 0.01, rng.integers(0, 256, x.shape), x).astype(np.uint8),
        "blur+noise": lambda x: np.clip(_blur(x) + rng.normal(0, 15, x.shape), 0, 255).astype(np.uint8),
        "upscaled": lambda x: np.repeat(np.repeat(x, 2, 0), 2, 1),
    }
    for name, damage in damages.items():
        wrong = [i for i in w.all_image_items() if analyse_image(damage(w.render_image(i))).item != i]
        assert not wrong, (name, wrong)
    assert analyse_image(np.full((32, 32, 3), 255, np.uint8)).item is None  # blank
    with pytest.raises(ValueError, match="RGB"):
        analyse_image(np.zeros((32, 32)))


def _mel_round_trip(wave, rng):
    """What a log-mel diffusion decoder at its best gives back: magnitude STFT (1024/256) ->
    128 mel bands (pooled 4 frames) -> pseudo-inverse -> Griffin-Lim (32 iterations)."""
    n_fft, hop, mels = 1024, 256, 128
    window = np.hanning(n_fft + 1)[:-1]

    def stft(x):
        x = np.pad(x, n_fft // 2)
        idx = np.arange(n_fft)[None] + hop * np.arange(1 + (len(x) - n_fft) // hop)[:, None]
        return np.fft.rfft(x[idx] * window, axis=-1)

    def istft(spec, length):
        frames = np.fft.irfft(spec, n_fft, axis=-1) * window
        out = np.zeros(length + n_fft)
        norm = np.zeros(length + n_fft)
        for k, frame in enumerate(frames):
            out[k * hop : k * hop + n_fft] += frame
            norm[k * hop : k * hop + n_fft] += window**2
        return (out / np.maximum(norm, 1e-8))[n_fft // 2 : n_fft // 2 + length]

    mel = lambda f: 1127 * np.log1p(f / 700)
    edges = np.linspace(mel(20), mel(8000), mels + 2)
    bins = mel(np.fft.rfftfreq(n_fft, 1 / 16000))
    fb = np.clip(np.minimum((bins - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                            (edges[2:, None] - bins) / (edges[2:, None] - edges[1:-1, None])), 0, None)
    magnitude = np.abs(stft(wave)).T  # [513, frames]
    banded = fb @ magnitude
    pooled = np.repeat(banded[:, : banded.shape[1] // 4 * 4].reshape(mels, -1, 4).mean(-1), 4, 1)
    pooled = np.pad(pooled, ((0, 0), (0, banded.shape[1] - pooled.shape[1])), mode="edge")
    target = np.clip(np.linalg.pinv(fb) @ pooled, 0, None).T
    angles = np.exp(2j * np.pi * rng.random(target.shape))
    for _ in range(32):
        rebuilt = stft(istft(target * angles, len(wave)))
        angles = rebuilt / np.maximum(np.abs(rebuilt), 1e-8)
    return istft(target * angles, len(wave)).astype(np.float32)


def test_audio_analyser_is_robust_to_mild_damage():
    rng = np.random.default_rng(0)
    damages = {
        "noise": lambda x: x + rng.normal(0, 0.01, x.shape).astype(np.float32),
        "quieter": lambda x: 0.3 * x,
        "shifted": lambda x: np.roll(x, 1234),
        "cropped": lambda x: x[:12800],
        "mel round trip": lambda x: _mel_round_trip(x, rng),
    }
    items = [AudioItem(p, wf, w.OVERLAYS[k % 3]) for k, (p, wf) in enumerate((p, wf) for p in w.PITCHES for wf in w.WAVEFORMS)]
    items.insert(0, AudioItem("G4", "square", "bell"))  # a harmonic at 1960 Hz, beside the bell
    for name, damage in damages.items():
        subset = items[::2] if name == "mel round trip" else items  # Griffin-Lim is the slow one
        wrong = [(i, r.item) for i in subset if (r := analyse_audio(damage(w.render_audio(i, 5)))).item != i]
        assert not wrong, (name, wrong)
    assert analyse_audio(np.zeros(16000, np.float32)).item is None
    media = w.to_media(AudioItem("E4", "triangle", "rain"))
    assert analyse(media).item == AudioItem("E4", "triangle", "rain")


def test_lsd():
    target = w.render_audio(AudioItem("C4", "square", "rain"), seed=1)
    clean = w.render_audio(AudioItem("C4", "square"))
    assert lsd(target, target) == 0
    louder = target * np.float32(10 ** 0.5)  # 10 dB
    assert lsd(louder, target, floor_db=-300) == pytest.approx(1.0, abs=1e-3)
    assert 0.5 < lsd(louder, target) < 1.0  # the floor hides differences in near-silence
    other_rain = w.render_audio(AudioItem("C4", "square", "rain"), seed=2)
    assert lsd(other_rain, target) < 0.5 * lsd(clean, target)  # a correct edit beats copying
    assert lsd(Media("audio", target, sample_rate=16000), target[:8000]) == pytest.approx(lsd(target[:8000], target[:8000]))


def test_judge():
    image = w.to_media(ImageItem("square", "blue", "small"))
    audio = w.to_media(AudioItem("G4", "square"))
    checks = judge([ImageItem("square", "blue", "small"), AudioItem("G4", "square")], [audio, image], "Here it is:")
    assert [c.passed for c in checks] == [True, True]
    checks = judge([ImageItem("square", "red", "small"), AudioItem("G4", "sine")], [image], "")
    assert [c.passed for c in checks] == [False, False]
    assert checks[0].got == "a small blue square" and "no audio" in checks[1].reason
    assert judge(["a small blue square"], [], "a small blue square")[0].passed
    assert not judge(["a small blue square"], [], "a large blue square")[0].passed


# --- tasks ---------------------------------------------------------------------------------------------


def _assistant_targets(conversation):
    """Every caption an assistant turn answers with: target media (by their captions) and text."""
    out = []
    for msg in normalize_messages(conversation):
        if msg.role != "assistant":
            continue
        out += [p.source.meta["caption"] for p in msg.parts if isinstance(p, MediaPart)]
        out += [msg.text]
    return out


def test_train_split_never_answers_with_a_held_out_combination():
    for task in TASKS:
        for seed in range(3):
            for sample in make_samples(task, 40, seed=seed):
                assert not sample.held_out
                for answer in _assistant_targets(sample.conversation):
                    item = w.parse_caption(answer)
                    assert not w.is_held_out(item), (task, seed, answer)


@pytest.mark.parametrize("task", list(TASKS))
def test_task_samples_are_well_formed(task):
    samples = make_samples(task, 6, seed=3, split="eval")
    again = make_samples(task, 6, seed=3, split="eval")
    assert [s.prompts for s in samples] == [s.prompts for s in again]  # deterministic
    assert [s.expected for s in samples] == [s.expected for s in again]
    for s in samples:
        messages = normalize_messages(s.conversation)
        assert [m.role for m in messages] == ["user", "assistant"] * len(s.prompts)
        assert sum(s.rounds) == len(s.expected) == len(s.targets)
        used = {name for p in s.prompts for name in re.findall(r"\{(\w+)\}", p)}
        assert used == set(s.media) == set(s.inputs)
        for prompt in s.prompts:
            normalize_messages(prompt, {k: v for k, v in s.media.items() if "{" + k + "}" in prompt})
        # ground truth is what it claims: the rendered targets read back as the expected items
        for expected, target in zip(s.expected, s.targets):
            if isinstance(expected, str):
                assert target == expected == w.caption(w.parse_caption(expected))
            else:
                assert analyse(target).item == expected
        for name, item in s.inputs.items():
            if not isinstance(item, w.VideoItem):
                assert analyse(s.media[name]).item == item
        # only the last turn's media are generation targets (earlier ones are history input)
        for k, msg in enumerate(m for m in messages if m.role == "assistant"):
            last = k == len(s.prompts) - 1
            assert all(p.target == last for p in msg.media)
        if TASKS[task].exemplar:
            prompt, media = s.without_examples()
            assert prompt == NO_EXAMPLES[task] and set(media) == {"c"}
        else:
            assert s.without_examples() is None


def test_eval_split_focuses_on_held_out():
    for task, info in TASKS.items():
        seen = make_samples(task, 5, seed=1, split="eval", held_out=False)
        assert not any(s.held_out for s in seen)
        if info.can_hold_out:
            held = make_samples(task, 5, seed=1, split="eval", held_out=True)
            assert all(s.held_out for s in held)
        else:
            with pytest.raises(ValueError, match="no held-out"):
                make_samples(task, 1, split="eval", held_out=True)
    with pytest.raises(ValueError, match="unknown toy task"):
        make_samples("juggling", 1)
    with pytest.raises(ValueError, match="never holds held-out"):
        make_samples("text_to_image", 1, split="train", held_out=True)


def test_task_semantics():
    s = make_samples("composition", 1, seed=0)[0]
    a, b = s.inputs["a"], s.inputs["b"]
    assert s.expected == [ImageItem(a.shape, b.colour, a.size)] != [b]
    for s in make_samples("image_exemplar", 10, seed=0):
        a, b, c = (s.inputs[k] for k in "abc")
        changed = [f for f in ("shape", "colour", "size") if getattr(a, f) != getattr(b, f)]
        assert len(changed) == 1 and s.expected == [c.with_(**{changed[0]: getattr(b, changed[0])})] != [c]
        assert s.expected[0] not in (a, b)  # no input is the answer
    for s in make_samples("audio_exemplar", 10, seed=0):
        assert s.expected == [s.inputs["c"].with_(overlay=s.inputs["b"].overlay)] and s.inputs["a"].overlay == "none"
    s = make_samples("multi_round", 1, seed=0, split="eval")[0]
    assert len(s.prompts) == 3 and s.prompts[1].startswith("Make it ") and s.prompts[2].startswith("Now make it ")
    first, second, third = s.expected
    assert second == first.with_(colour=second.colour) and third == second.with_(size=third.size) != second
    s = make_samples("video_next", 1, seed=0)[0]
    assert s.expected == [s.inputs["v"].following, w.sound_of(s.inputs["v"].following)]
    content = s.conversation[-1]["content"]
    assert [p["type"] for p in content] == ["text", "image", "text", "audio"]
    assert content[0]["text"] == "Here it is: " and content[2]["text"] == " and its sound: "
    assert make_samples("image_to_text", 1, seed=0)[0].conversation[-1]["content"][0]["text"].startswith("a ")
    words = vocabulary()
    assert {"Draw", "transformation", "purple", "G4", "bells", "overlaid"} <= set(words)
