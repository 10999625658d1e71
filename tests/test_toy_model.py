"""The toy components (``codi2.plugins.toy``), the recipe's training path, and the shipped model."""

from __future__ import annotations

import pytest
import torch

from codi2.testing import check_decoder, check_encoder
from codi2.toy import world as w

SMALL = {"channels": [8, 16], "random_init": True, "encoder": {"random_init": True}}


def _registry():
    from codi2.toy.recipe import toy_registry

    return toy_registry()


@pytest.fixture(scope="module")
def registry():
    return _registry()


def test_toy_encoder_passes_the_contract_kit(registry):
    encoder = registry.load("encoder", {"plugin": "toy-encoder", "options": {"random_init": True}})
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


@pytest.mark.parametrize("plugin, items", [
    ("toy-image-decoder", [w.ImageItem("circle", "red"), w.ImageItem("triangle", "green", "small")]),
    ("toy-audio-decoder", [w.AudioItem("C4", "sine"), w.AudioItem("A4", "square", "bell")]),
])
def test_toy_decoders_pass_the_contract_kit(registry, plugin, items):
    decoder = registry.load("decoder", {"plugin": plugin, "options": SMALL})
    check_decoder(decoder, [w.to_media(i) for i in items])
    out = decoder.generate(torch.randn(1, 1, decoder.condition.dim), steps=2, generator=torch.Generator().manual_seed(0))[0]
    if plugin == "toy-image-decoder":
        assert out.data.shape == (32, 32, 3) and out.data.dtype.name == "uint8"
    else:
        assert out.sample_rate == 16000 and out.data.shape == (16000,)


def test_audio_representation_inverts_to_the_same_world_item():
    """The mel space + Griffin-Lim inversion keep pitch, waveform and overlay (analysers agree)."""
    from codi2.core.audio import mel_banks
    from codi2.plugins.toy.decoders import log_mel, mel_to_wave
    from codi2.toy.analysers import analyse_audio

    banks = mel_banks(128, 1024, 16000, 20.0, 8000.0)
    pinv, window = torch.linalg.pinv(banks), torch.hann_window(1024)
    for item in (w.AudioItem("G4", "square", "bell"), w.AudioItem("A4", "triangle", "rain"), w.AudioItem("C5", "sine")):
        signal = log_mel(w.to_media(item), banks, window)
        assert signal.shape == (1, 128, 16) and signal.abs().max() <= 1.05
        wave = mel_to_wave(signal, pinv, window, 32, torch.Generator().manual_seed(0))
        assert analyse_audio(wave).item == item


def test_a_short_training_run_lowers_the_loss(tmp_path, registry):
    """The recipe's MLLM path: toy LLM directory, toy components, the CoDi-2 objective."""
    from codi2.core.config import ModelConfig
    from codi2.core.messages import normalize_messages
    from codi2.core.model import CoDi2Model
    from codi2.plugins.toy.encoder import save_encoder
    from codi2.plugins.toy.llm import build_toy_llm_dir
    from codi2.toy import tasks
    from codi2.toy.recipe import (
        AUDIO_DECODER_FILE,
        ENCODER_FILE,
        IMAGE_DECODER_FILE,
        LLM_DIR,
        RecipeSettings,
        llm_corpus,
        model_config,
    )

    settings = RecipeSettings.smoke()
    encoder = registry.load("encoder", {"plugin": "toy-encoder", "options": {"random_init": True}})
    save_encoder(encoder.model, tmp_path / ENCODER_FILE)
    for plugin, name in (("toy-image-decoder", IMAGE_DECODER_FILE), ("toy-audio-decoder", AUDIO_DECODER_FILE)):
        options = {"channels": settings.decoder_channels, "random_init": True, "encoder": {"weights": str(tmp_path / ENCODER_FILE)}}
        registry.load("decoder", {"plugin": plugin, "options": options}).save_weights(tmp_path / name)
    build_toy_llm_dir(tmp_path / LLM_DIR, llm_corpus(), hidden_size=32, layers=1, heads=2)
    torch.manual_seed(0)
    model = CoDi2Model.from_config(ModelConfig.from_dict(model_config(settings, tmp_path, 64)), registry)
    model.set_trainable(llm="full", decoders="frozen")
    samples = [s for t in ("image_to_text", "text_to_image", "image_exemplar") for s in tasks.make_samples(t, 3, seed=1)]
    batch = model.batch([model.sequence(normalize_messages(s.conversation), training=True) for s in samples])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    first = None
    for _ in range(15):
        losses = model(batch)
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    last = {k: v.item() for k, v in model(batch).items()}
    assert last["text"] < 0.75 * first["text"] and last["feature"] < first["feature"], (first, last)
    # a toy word is one token: the tokenizer was learnt on the world's prompts
    assert len(model.llm.tokenize("triangle")) == 1


# --- the shipped model -----------------------------------------------------------------------------


def _shipped():
    from codi2.plugins.toy import asset_dir

    if not (asset_dir() / "config.json").is_file():
        pytest.fail(f"the shipped toy model is missing from {asset_dir()} (run `codi2 train --preset toy` and ship it)")
    return asset_dir()


@pytest.fixture(scope="module")
def toy_model(registry):
    from codi2.core.model import CoDi2Model

    return CoDi2Model.from_pretrained(_shipped(), registry)


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
