"""The ``zeroscope`` decoder on a tiny random text-to-video model saved in diffusers' layout,
loaded offline; parity against diffusers' stock ``TextToVideoSDPipeline`` from the same folder."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from codi2.core.types import Media
from codi2.errors import CheckpointError, ComponentLoadError, ConfigError, MediaError
from codi2.plugins.decoders import zeroscope
from codi2.plugins.decoders.testing_audio_video import build_tiny_zeroscope
from codi2.registry import Registry
from codi2.testing import check_decoder, test_media

STEPS = 2
SHAPE = {"num_frames": 3, "height": 16, "width": 24}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_zeroscope(tmp_path_factory.mktemp("zeroscope") / "pipe")


@pytest.fixture(scope="module")
def spec():
    registry = Registry()
    registry.register_plugin(zeroscope)
    assert not registry.failures
    return registry.get("decoder", "zeroscope")


def load(spec, model_dir, **options):
    base = {"model": str(model_dir), "device": "cpu", "local_files_only": True, "steps": STEPS, **SHAPE}
    return spec.load({**base, **options})


@pytest.fixture(scope="module")
def decoder(spec, model_dir):
    return load(spec, model_dir)


@pytest.fixture(scope="module")
def stock(model_dir):
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def captioned(seed: int, caption: str, **kwargs) -> Media:
    item = test_media("video", seed, **kwargs)
    item.meta["caption"] = caption
    return item


@pytest.fixture(scope="module")
def clips():
    return [captioned(0, "a red ball bounces"), captioned(1, "waves on a beach", size=20)]


def test_plugin_module_imports_no_torch():
    code = (
        "import sys; import codi2.plugins.decoders.zeroscope; "
        "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_are_strict(spec):
    defaults = spec.validate_options({})
    assert (defaults.model, defaults.num_frames, defaults.height, defaults.width) == ("cerspense/zeroscope_v2_576w", 24, 320, 576)
    with pytest.raises(ConfigError, match="zeroscope.*colour"):
        spec.validate_options({"colour": "red"})
    with pytest.raises(ConfigError, match="fidelity"):
        spec.validate_options({"fidelity": True})
    with pytest.raises(ConfigError, match="height"):
        spec.validate_options({"height": 30})


def test_condition_is_the_clip_text_sequence(decoder):
    assert (decoder.condition.tokens, decoder.condition.dim) == (77, 8)
    assert decoder.modality == "video" and not decoder.supports_reference


def test_contract(decoder, clips):
    check_decoder(decoder, clips, steps=STEPS)


def test_target_features_are_the_pipelines_caption_encoding(decoder, stock, clips):
    target = decoder.target_features(clips)
    with torch.no_grad():
        expected, _ = stock.encode_prompt([c.meta["caption"] for c in clips], "cpu", 1, False)
    assert target.shape == (2, 77, 8) and target.dtype == torch.float32
    torch.testing.assert_close(target, expected)
    with pytest.raises(MediaError, match="caption"):
        decoder.target_features([test_media("video", 0)])


@pytest.mark.parametrize("guidance", [1.0, 9.0])
def test_generate_equals_stock_pipeline(decoder, stock, guidance):
    cond = torch.randn(2, 77, 8, generator=torch.Generator().manual_seed(3))
    ours = decoder.generate(cond, guidance=guidance, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        empty, _ = stock.encode_prompt([""] * 2, "cpu", 1, False)
    frames = stock(
        prompt_embeds=cond, negative_prompt_embeds=empty, num_inference_steps=STEPS, guidance_scale=guidance,
        generator=torch.Generator().manual_seed(0), output_type="np", **SHAPE,
    ).frames
    expected = (np.asarray(frames) * 255).round().astype(np.uint8)
    assert len(ours) == 2
    for item, ref in zip(ours, expected, strict=True):
        assert item.modality == "video" and item.fps == 8.0
        assert item.data.dtype == np.uint8 and item.data.shape == (3, 16, 24, 3)
        # same float frames up to rounding: at most one uint8 step apart, almost all identical
        diff = np.abs(item.data.astype(int) - ref.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_diffusion_loss_is_seeded_and_backpropagates_into_cond(decoder, clips):
    cond = torch.randn(2, 77, 8, requires_grad=True)
    a = decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(0))
    b = decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(0))
    assert a.item() == b.item()
    a.backward()
    assert cond.grad.abs().sum() > 0
    assert all(p.grad is None for p in decoder.parameters())
    opt = torch.optim.Adam([cond], lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_video_frames_are_picked_cropped_and_resized():
    from codi2.plugins.decoders._zeroscope_impl import video_tensor

    data = np.zeros((5, 20, 40, 3), np.uint8)
    for i in range(5):
        data[i] = i * 50
    data[:, :, :10] = 255  # a white band that the centre crop to 1:1 must remove
    x = video_tensor(Media("video", data, fps=4.0), 3, 8, 8)
    assert x.shape == (3, 3, 8, 8)
    torch.testing.assert_close(x[:, 0, 4, 4], torch.tensor([0, 100, 200]) / 127.5 - 1)  # frames 0, 2, 4
    assert x.max() < 0.6  # the band is outside the crop
    short = video_tensor(Media("video", data[:1], fps=4.0), 4, 8, 8)
    assert short.shape == (4, 3, 8, 8) and torch.equal(short[0], short[3])
    with pytest.raises(MediaError, match="uint8"):
        video_tensor(Media("video", data.astype(np.float32), name="v.mp4"), 3, 8, 8)


def test_trainable_full_round_trip(spec, model_dir):
    full = load(spec, model_dir, trainable="full")
    assert {n.split(".")[0] for n, p in full.named_parameters() if p.requires_grad} == {"unet"}
    with torch.no_grad():
        full.unet.conv_in.bias.add_(1.0)
    other = load(spec, model_dir)  # not the shared fixture: the parity tests compare it with the stock pipeline
    other.load_trained_state_dict(full.trained_state_dict())
    torch.testing.assert_close(other.unet.conv_in.bias, full.unet.conv_in.bias)
    with pytest.raises(CheckpointError, match="unet.conv_in.bias"):
        other.load_trained_state_dict({"unet.conv_in.bias": torch.zeros(3)})
    full.train()
    assert full.unet.training and not full.text_encoder.training and not full.vae.training


def test_reference_is_rejected(decoder, clips):
    with pytest.raises(MediaError, match="fidelity"):
        decoder.generate(torch.zeros(1, 77, 8), [clips[0]])


def test_unknown_hub_id_offline_names_component_and_id(spec):
    with pytest.raises(ComponentLoadError, match="zeroscope.*nobody/no-such-zeroscope"):
        spec.load({"model": "nobody/no-such-zeroscope", "device": "cpu"})


def test_real_zeroscope_unet_takes_1024d_text_on_meta():
    """zeroscope_v2_576w's UNet3D (diffusers' default block layout) cross-attends to 1024-d
    states: the width ``ConditionSpec.dim`` takes from its OpenCLIP-H text encoder."""
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        unet = UNet3DConditionModel(cross_attention_dim=1024, attention_head_dim=64)
    cross = [m for m in unet.modules() if getattr(m, "is_cross_attention", False)]
    assert cross and {m.to_k.in_features for m in cross} == {1024}
