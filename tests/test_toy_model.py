"""The toy components (``codi2.plugins.toy``), the recipe's training path, and the shipped model."""

from __future__ import annotations

import pytest
import torch

from codi2.testing import check_decoder, check_encoder
from codi2.toy import world as w

SMALL = {"random_init": True, "encoder": {"random_init": True}}


def _registry():
    from codi2.toy.recipe import toy_registry

    return toy_registry()


@pytest.fixture(scope="module")
def registry():
    return _registry()


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_toy_encoder_passes_the_contract_kit(registry, stem):
    encoder = registry.load("encoder", {"plugin": "toy-encoder", "options": {"random_init": True, "vision_stem": stem}})
    clip = w.to_media(w.video_sequence(w.ImageItem("circle", "red"), "colour", 4))
    check_encoder(encoder, {
        "image": w.to_media(w.ImageItem("square", "blue")),
        "audio": w.to_media(w.AudioItem("G4", "sine", "rain")),
        "video": clip,
        "text": "a large red circle",
    })
    assert encoder.tokens_per_item("video") == 4  # one token per frame: the clip's order survives
    feats = encoder.encode([clip], "video")[0]
    assert not torch.allclose(feats[0], feats[1])  # different frames, different tokens


def test_the_vision_stem_is_saved_loaded_and_checked(tmp_path):
    """A conv-stem encoder round-trips through its file; read with the other stem, the file is a
    one-line load error that names the option, not a silently re-initialised layer."""
    from codi2.errors import ComponentLoadError
    from codi2.plugins.toy import ToyEncoderOptions, load_encoder
    from codi2.plugins.toy.encoder import ConvStem, save_encoder

    trained = load_encoder(ToyEncoderOptions(random_init=True, seed=3, vision_stem="conv"))
    stem = trained.model.modality_preprocessors["vision"].rgbt_stem.proj
    assert isinstance(stem, ConvStem)
    path = save_encoder(trained.model, tmp_path / "encoder.safetensors")
    item = w.to_media(w.ImageItem("triangle", "orange", "small"))
    loaded = load_encoder(ToyEncoderOptions(weights=str(path), vision_stem="conv"))
    assert torch.equal(loaded.encode([item], "image"), trained.encode([item], "image"))
    assert "vision_stem=conv" in loaded.identity  # feature caches keep the stems apart
    with pytest.raises(ComponentLoadError, match="vision_stem='patch'"):
        load_encoder(ToyEncoderOptions(weights=str(path), vision_stem="patch"))


@pytest.mark.parametrize("plugin, channels, items", [
    ("toy-image-decoder", [8, 16], [w.ImageItem("circle", "red"), w.ImageItem("triangle", "green", "small")]),
    ("toy-audio-decoder", [16], [w.AudioItem("C4", "sine"), w.AudioItem("A4", "square", "bell")]),
])
def test_toy_decoders_pass_the_contract_kit(registry, plugin, channels, items):
    decoder = registry.load("decoder", {"plugin": plugin, "options": {**SMALL, "channels": channels}})
    check_decoder(decoder, [w.to_media(i) for i in items])
    out = decoder.generate(torch.randn(1, 1, decoder.condition.dim), steps=2, generator=torch.Generator().manual_seed(0))[0]
    if plugin == "toy-image-decoder":
        assert out.data.shape == (32, 32, 3) and out.data.dtype.name == "uint8"
    else:
        assert out.sample_rate == 16000 and out.data.shape == (16000,)


def test_bad_decoder_widths_are_config_errors(registry):
    from codi2.errors import Codi2Error

    with pytest.raises(Codi2Error, match="one width"):
        registry.load("decoder", {"plugin": "toy-audio-decoder", "options": {**SMALL, "channels": [16, 32]}})
    with pytest.raises(Codi2Error, match="multiple of 8"):
        registry.load("decoder", {"plugin": "toy-image-decoder", "options": {**SMALL, "channels": [12, 16]}})


def test_audio_representation_inverts_to_the_same_world_item():
    """The mel space + Griffin-Lim inversion keep pitch, waveform and overlay (analysers agree)."""
    from codi2.core.audio import mel_banks
    from codi2.plugins.toy.decoders import log_mel, mel_to_wave
    from codi2.toy.analysers import analyse_audio, lsd

    banks = mel_banks(128, 1024, 16000, 20.0, 8000.0)
    window = torch.hann_window(1024)
    for item in (w.AudioItem("G4", "square", "bell"), w.AudioItem("A4", "triangle", "rain"), w.AudioItem("C5", "sine")):
        signal = log_mel(w.to_media(item), banks, window)
        assert signal.shape == (1, 128, 16) and signal.abs().max() <= 1.05
        wave = mel_to_wave(signal, banks, window, 32, torch.Generator().manual_seed(0))
        assert analyse_audio(wave).item == item
        assert lsd(wave, w.to_media(item)) < 0.5  # a square wave's harmonics stay lines (0.63 with a pseudo-inverse)


def test_the_recipe_runs_every_phase_and_the_mllm_run_lowers_the_loss(tmp_path, registry):
    """``codi2 train --preset toy`` at a tiny size: every phase writes its file, the MLLM phase is
    codi2's trainer on a JSONL dataset of the task conversations, and its loss goes down."""
    import json

    import codi2
    from codi2.toy.recipe import PhaseBudget, RecipeSettings, run_recipe
    from codi2.toy.tasks import TASKS
    from codi2.training.data import validate_files

    settings = RecipeSettings.smoke()
    settings.mllm = PhaseBudget(1.0, 25, 8, 1e-2)
    settings.samples_per_task, settings.eval_per_task = 3, 0
    report = run_recipe(tmp_path, settings, log=lambda line: None, registry=registry)
    assert report["mllm"]["steps"] == 25
    assert report["mllm"]["conversations"] == sum(3 * settings.task_weight.get(task, 1) for task in TASKS) > 3 * 14
    assert not validate_files([tmp_path / "data" / "train.jsonl"], decode=True).problems
    assert json.loads((tmp_path / "mllm-train.json").read_text())["stage"] == "custom"  # a `codi2 train --config` file
    logged = [json.loads(line) for line in (tmp_path / "mllm-run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["text"] < 0.8 * logged[0]["text"] and logged[-1]["feature"] < logged[0]["feature"], logged
    model = codi2.load(tmp_path, registry=registry)  # the output directory is a codi2 model
    assert len(model.llm.tokenize("triangle")) == 1  # a toy word is one token: the tokenizer learnt the world's prompts
    again = run_recipe(tmp_path, settings, log=lambda line: None, registry=registry)  # every phase done: all skipped
    assert again["mllm"] == report["mllm"]


# --- the shipped model -----------------------------------------------------------------------------


def _shipped():
    from codi2.plugins.toy import asset_dir

    if not (asset_dir() / "config.json").is_file():
        pytest.fail(f"the shipped toy model is missing from {asset_dir()} (run `codi2 train --preset toy` and ship it)")
    return asset_dir()


@pytest.fixture(scope="module")
def toy_model(registry):
    from codi2.assembly import assemble

    return assemble(_shipped(), registry=registry)


def test_shipped_model_fits_the_size_budget():
    total = sum(p.stat().st_size for p in _shipped().rglob("*") if p.is_file())
    assert total <= 25 * 2**20, f"the shipped toy model is {total / 2**20:.1f} MiB"


def test_codi2_load_toy(registry):
    import codi2

    model = codi2.load("toy", registry=registry)
    assert set(model.decoders) == {"image", "audio"}


def test_shipped_model_draws_the_asked_colour(toy_model):
    from codi2.toy.analysers import analyse_image

    for colour, shape in (("red", "circle"), ("blue", "square")):
        answer = toy_model.generate(f"Draw a large {colour} {shape}.", seed=0, steps=10)
        assert answer.media, f"no image in {answer.parts}"
        reading = analyse_image(answer.media[0])
        assert reading.item is not None and reading.item.colour == colour, (colour, reading)


def test_shipped_model_captions_an_image(toy_model):
    item = w.ImageItem("triangle", "green", "small")
    answer = toy_model.generate("What is in {a}?", media={"a": w.to_media(item)}, seed=0)
    assert w.parse_caption(answer.text) == item, answer.text


def test_shipped_model_applies_an_exemplar_edit(toy_model):
    from codi2.toy.analysers import analyse_image

    a, b, c = w.ImageItem("circle", "red"), w.ImageItem("circle", "blue"), w.ImageItem("square", "yellow")
    answer = toy_model.generate(
        "Given the transformation between {a} and {b}, apply the same editing to {c}.",
        media={"a": w.to_media(a), "b": w.to_media(b), "c": w.to_media(c)}, seed=0, steps=10,
    )
    assert answer.media and analyse_image(answer.media[0]).item == w.ImageItem("square", "blue"), answer.parts
