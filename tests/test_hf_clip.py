"""The ``hf-clip`` encoder on tiny CLIP, SigLIP and CLAP checkpoints saved and loaded back the
real way: its vectors are the transformers model's own embeddings."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, MediaError, UnknownModalityError
from codi2.plugins.encoders.hf_clip_testing import build_tiny_clap, build_tiny_clip, build_tiny_siglip
from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama
from codi2.registry import Registry
from codi2.testing import check_encoder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-clip")
    return {"clip": build_tiny_clip(root / "clip"), "siglip": build_tiny_siglip(root / "siglip"), "clap": build_tiny_clap(root / "clap")}


def load(directory, **options):
    registry = Registry.create(entry_points=False)
    return registry.load("encoder", {"plugin": "hf-clip", "options": {"model": str(directory), "device": "cpu", **options}})


def image(seed):
    return np.random.default_rng(seed).integers(0, 256, (40, 30, 3), dtype=np.uint8)


def tone(freq):
    t = np.arange(48000, dtype=np.float32) / 48000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


TEXTS = ["a red cat", "the sound of rain falling on a roof"]


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_image_and_text_vectors_are_the_models_own_embeddings(name, dirs, one_torch_thread):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    encoder = load(dirs[name])
    assert encoder.modalities == ("image", "text")
    images = [encoder.load_media(image(s), "image") for s in (0, 1)]
    texts = [encoder.load_media(t, "text") for t in TEXTS]
    ours_image, ours_text = encoder.encode(images, "image"), encoder.encode(texts, "text")
    assert ours_image.shape == (2, 1, encoder.embed_dim) == ours_text.shape

    model = AutoModel.from_pretrained(dirs[name]).eval()
    padding = "max_length" if name == "siglip" else True
    tokens = AutoTokenizer.from_pretrained(dirs[name])(TEXTS, padding=padding, truncation=True, return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(dirs[name])(images=[image(0), image(1)], return_tensors="pt").pixel_values
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.get("attention_mask") if name == "clip" else None, pixel_values=pixels)
    torch.testing.assert_close(ours_image[:, 0], out.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text[:, 0], out.text_embeds, atol=1e-5, rtol=1e-5)

    raw = load(dirs[name], normalize=False).encode(images, "image")
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels)
    expected = expected.pooler_output if hasattr(expected, "pooler_output") else expected
    torch.testing.assert_close(raw[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_clap_audio_and_text_vectors_are_the_models_own_embeddings(dirs, one_torch_thread):
    from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

    encoder = load(dirs["clap"])
    assert encoder.modalities == ("audio", "text") and encoder.sample_rate == 48000
    clips = [encoder.load_media((tone(f), 48000), "audio") for f in (440, 880)]
    resampled = encoder.load_media((tone(440)[::3].copy(), 16000), "audio")
    assert resampled.sample_rate == 48000, "load_media brings audio to the extractor's rate"
    ours_audio = encoder.encode(clips, "audio")
    ours_text = encoder.encode([encoder.load_media(t, "text") for t in TEXTS], "text")

    model = ClapModel.from_pretrained(dirs["clap"]).eval()
    tokens = AutoTokenizer.from_pretrained(dirs["clap"])(TEXTS, padding=True, truncation=True, return_tensors="pt")
    features = AutoFeatureExtractor.from_pretrained(dirs["clap"])([tone(440), tone(880)], sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                    input_features=features.input_features, is_longer=features.is_longer)  # fmt: skip
    torch.testing.assert_close(ours_audio[:, 0], out.audio_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text[:, 0], out.text_embeds, atol=1e-5, rtol=1e-5)


def test_contract_and_modalities_option(dirs, one_torch_thread):
    check_encoder(load(dirs["clip"]), {"image": image(0), "text": "a red cat"})
    only_images = load(dirs["siglip"], modalities=["image"])
    assert only_images.modalities == ("image",)
    with pytest.raises(UnknownModalityError, match="does not encode 'text'"):
        only_images.encode([Media("text", "x")], "text")


def test_errors_are_clear(dirs, tmp_path):
    with pytest.raises(ComponentLoadError, match="no audio tower; it encodes image, text"):
        load(dirs["clip"], modalities=["audio"])
    with pytest.raises(ComponentLoadError, match="cannot load"):
        load(tmp_path / "missing")
    with pytest.raises(ComponentLoadError, match="cannot load 'nobody/no-such-clip'"):
        load("nobody/no-such-clip", local_files_only=True)
    with pytest.raises(ComponentLoadError, match="not a CLIP, SigLIP or CLAP model"):
        load(build_tiny_llama(tmp_path / "llama"))
    encoder = load(dirs["clip"])
    with pytest.raises(MediaError, match="uint8"):
        encoder.encode([Media("image", np.zeros((4, 4), np.float32))], "image")


def test_plugin_module_imports_no_torch():
    code = "import sys, codi2.plugins.encoders.hf_clip; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
