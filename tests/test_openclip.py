"""The ``openclip`` encoder: a tiny OpenCLIP model through the plugin's real loading path, the
no-download rule, and ViT-H-14's shapes on the ``meta`` device."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, UnknownModalityError
from codi2.plugins.encoders import openclip as oc
from codi2.plugins.encoders.openclip import OpenCLIPOptions
from codi2.registry import Registry

open_clip = pytest.importorskip("open_clip")

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_CFG).eval()
    path = tmp_path_factory.mktemp("oc") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _options(path, **kw):
    return {"model": "tiny", "model_config": TINY_CFG, "pretrained": str(path), "device": "cpu", **kw}


def test_tiny_checkpoint_matches_open_clip(tiny, tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    model, path = tiny
    registry = Registry()
    registry.register_plugin(oc)
    enc = registry.load("encoder", {"plugin": "openclip", "options": _options(path)})
    assert enc.embed_dim == 16 and enc.modalities == ("image", "text") and enc.tokens_per_item("image") == 1
    pixels = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    transform = open_clip.image_transform(32, is_train=False)  # OpenCLIP's own inference transform
    tokens = open_clip.SimpleTokenizer(context_length=77)(["a dog on a sofa", "rain"])
    with torch.no_grad():
        image_ref = model.encode_image(transform(Image.fromarray(pixels))[None], normalize=True)
        text_ref = model.encode_text(tokens, normalize=True)
    image_out = enc.encode([enc.load_media(pixels, "image")], "image")
    torch.testing.assert_close(image_out[:, 0], image_ref, rtol=0, atol=1e-6)
    text_out = enc.encode([Media("text", "a dog on a sofa"), Media("text", "rain")], "text")
    torch.testing.assert_close(text_out[:, 0], text_ref, rtol=0, atol=1e-6)

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "tiny.safetensors")
    again = oc.load(OpenCLIPOptions.model_validate(_options(tmp_path / "tiny.safetensors")))
    torch.testing.assert_close(again.encode([Media("image", pixels)], "image"), image_out, rtol=0, atol=0)
    assert again.identity != enc.identity  # another weights file, another feature cache


def test_contract(tiny):
    from codi2.testing import check_encoder

    enc = oc.load(OpenCLIPOptions.model_validate(_options(tiny[1])))
    check_encoder(enc, {"image": np.full((20, 24, 3), 200, np.uint8), "text": "a red square"})
    with pytest.raises(UnknownModalityError):
        enc.encode([Media("audio", np.zeros(1600, np.float32), sample_rate=16000)], "audio")


def test_weights_are_never_downloaded(tiny, tmp_path):
    from codi2.plugins.encoders._openclip_impl import resolve_pretrained

    with pytest.raises(ComponentLoadError, match="never downloads.*laion/CLIP-ViT-H-14"):
        oc.load(OpenCLIPOptions(cache_dir=str(tmp_path), device="cpu"))  # the default: ViT-H-14 laion2b
    with pytest.raises(ComponentLoadError, match=r"did you mean .*ViT-H-14"):
        oc.load(OpenCLIPOptions(model="ViT-H-41", random_init=True, device="cpu"))
    with pytest.raises(ComponentLoadError, match="laion2b_s32b_b79k"):
        oc.load(OpenCLIPOptions(pretrained="no-such-tag", device="cpu"))
    # a tag whose file is in the local Hugging Face cache resolves to it, offline
    repo = tmp_path / "models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"stand-in")
    found, tag_cfg = resolve_pretrained("ViT-H-14", "laion2b_s32b_b79k", str(tmp_path))
    assert found == weights and tag_cfg["hf_hub"].startswith("laion/")
    # weights of another shape: the error names the tensor
    wider = {**TINY_CFG, "embed_dim": 8}
    with pytest.raises(ComponentLoadError, match="text_projection"):
        oc.load(OpenCLIPOptions.model_validate(_options(tiny[1], model_config=wider)))


def test_vit_h_14_shapes_on_meta():
    enc = oc.load(OpenCLIPOptions(random_init=True, device="meta"))
    assert enc.embed_dim == 1024
    image = Media("image", np.zeros((300, 200, 3), np.uint8))
    assert enc.encode([image, image], "image").shape == (2, 1, 1024)
    assert enc.encode([Media("text", "a photo of a cat")], "text").shape == (1, 1, 1024)


def test_plugin_module_imports_no_torch():
    code = "import sys, codi2.plugins.encoders.openclip; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
