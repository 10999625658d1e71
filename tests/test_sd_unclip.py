"""The ``sd-unclip`` decoder on a tiny random SD-unCLIP saved in diffusers' layout, loaded offline.

Parity tests compare against diffusers' stock ``StableUnCLIPImg2ImgPipeline`` loaded from the
same folder, with the same conditioning and seed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from codi2.core.types import ConditionSpec, Media
from codi2.errors import CheckpointError, ComponentLoadError, ConfigError, MediaError
from codi2.plugins.decoders import sd_unclip
from codi2.plugins.decoders.testing_components import TINY_SD_UNCLIP_EMBED_DIM as DIM
from codi2.plugins.decoders.testing_components import build_tiny_sd_unclip
from codi2.registry import Registry
from codi2.testing import check_decoder, test_media

STEPS = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_sd_unclip(tmp_path_factory.mktemp("sd-unclip") / "pipe")


@pytest.fixture(scope="module")
def spec():
    """The component as registered through the plugin hook (the registry's real path)."""
    registry = Registry()
    registry.register_plugin(sd_unclip)
    assert not registry.failures
    return registry.get("decoder", "sd-unclip")


def load(spec, model_dir, **options):
    return spec.load({"model": str(model_dir), "device": "cpu", "local_files_only": True, **options})


@pytest.fixture(scope="module")
def decoder(spec, model_dir):
    return load(spec, model_dir)


@pytest.fixture(scope="module")
def stock(model_dir):
    from diffusers import StableUnCLIPImg2ImgPipeline

    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def images():
    return [test_media("image", 0), test_media("image", 1, size=20)]


def stock_images(pipe, cond, seed, **kwargs):
    out = pipe(
        prompt=[""] * len(cond), image_embeds=cond[:, 0], num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs,
    ).images
    return (out * 255).round().astype(np.uint8)


def test_plugin_module_imports_no_torch():
    code = (
        "import sys, codi2.plugins.decoders.sd_unclip as m; "
        "heavy = [n for n in ('torch', 'diffusers', 'transformers') if n in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_are_strict_and_documented_defaults(spec):
    opts = spec.validate_options({})
    assert (opts.model, opts.steps, opts.guidance, opts.noise_level) == (sd_unclip.DEFAULT_MODEL, 20, 10.0, 0)
    assert (opts.fidelity, opts.trainable, opts.height) == (False, "frozen", None)
    with pytest.raises(ConfigError, match="sd-unclip.*colour"):
        spec.validate_options({"colour": "red"})
    with pytest.raises(ConfigError, match="height"):
        spec.validate_options({"height": 30})


def test_contract(decoder, images):
    assert decoder.condition == ConditionSpec(tokens=1, dim=DIM)
    assert decoder.supports_reference is False and decoder.modality == "image"
    check_decoder(decoder, images, steps=STEPS)


def test_generate_equals_stock_pipeline(decoder, stock):
    cond = torch.randn(2, 1, DIM, generator=torch.Generator().manual_seed(3))
    ours = decoder.generate(cond, steps=STEPS, generator=torch.Generator().manual_seed(7))
    theirs = stock_images(stock, cond, seed=7, guidance_scale=10.0)
    assert [m.data.shape for m in ours] == [(16, 16, 3)] * 2 and ours[0].data.dtype == np.uint8
    np.testing.assert_array_equal(np.stack([m.data for m in ours]), theirs)
    assert theirs.std() > 5  # a real picture, not a constant
    other_seed = decoder.generate(cond, steps=STEPS, generator=torch.Generator().manual_seed(8))
    assert not np.array_equal(other_seed[0].data, ours[0].data)
    # the stock call must not leave the embedding normaliser trainable
    assert not any(p.requires_grad for p in decoder.parameters())


def test_target_features_are_the_pipelines_clip_embeddings(decoder, stock, images):
    feats = decoder.target_features(images)
    assert feats.shape == (2, 1, DIM) and feats.dtype == torch.float32 and not feats.requires_grad
    pixels = stock.feature_extractor(images=[m.data for m in images], return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = stock.image_encoder(pixels).image_embeds
    torch.testing.assert_close(feats[:, 0], expected)
    assert not torch.allclose(feats[0], feats[1])
    with pytest.raises(MediaError, match="audio"):
        decoder.target_features([test_media("audio")])


def test_diffusion_loss_is_seeded_and_trains_cond_only(decoder, images):
    cond = torch.randn(2, 1, DIM, requires_grad=True)
    loss = decoder.diffusion_loss(cond, images, generator=torch.Generator().manual_seed(0))
    again = decoder.diffusion_loss(cond, images, generator=torch.Generator().manual_seed(0))
    assert loss.item() == again.item()
    loss.backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in decoder.parameters())
    # gradient descent on cond lowers the (fixed-noise) loss: the gradient is meaningful
    with torch.no_grad():
        stepped = cond - 5.0 * cond.grad / cond.grad.norm()
    lower = decoder.diffusion_loss(stepped, images, generator=torch.Generator().manual_seed(0))
    assert lower.item() < loss.item()
    with pytest.raises(ValueError, match=r"\[B, 1, 32\]"):
        decoder.diffusion_loss(torch.zeros(2, 2, DIM), images)


def test_fidelity_starts_as_the_plain_model(spec, model_dir, decoder, stock, images):
    fid = load(spec, model_dir, fidelity=True, noise_level=50)
    assert fid.supports_reference and fid.unet.conv_in.weight.shape[1] == 8
    assert fid.unet.conv_in.weight[:, 4:].abs().sum() == 0
    cond = torch.randn(2, 1, DIM, generator=torch.Generator().manual_seed(4))
    # the own sampling loop, with a reference, reproduces the stock pipeline exactly
    ours = fid.generate(cond, reference=images, steps=STEPS, generator=torch.Generator().manual_seed(5))
    theirs = stock_images(stock, cond, seed=5, guidance_scale=10.0, noise_level=50)
    np.testing.assert_array_equal(np.stack([m.data for m in ours]), theirs)
    no_cfg = fid.generate(cond, reference=[images[0], None], steps=STEPS, guidance=1.0, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(np.stack([m.data for m in no_cfg]), stock_images(stock, cond, 5, guidance_scale=1.0, noise_level=50))
    # and the training loss with a reference equals the plain decoder's
    plain = load(spec, model_dir, noise_level=50)
    a = fid.diffusion_loss(cond, images, reference=images, generator=torch.Generator().manual_seed(1))
    b = plain.diffusion_loss(cond, images, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="fidelity is off"):
        decoder.generate(cond, reference=images, steps=1)


@pytest.mark.parametrize("guidance", [1.0, 10.0])
def test_one_generator_per_row_equals_each_row_alone_with_references(spec, model_dir, images, guidance):
    """Batched generation hands the decoder one generator per row (``per_item_generators``):
    rows with and without a reference, through the own sampling loop, each get the pixels it
    gets alone (the plain path is checked by ``check_decoder`` in ``test_contract``)."""
    fid = load(spec, model_dir, fidelity=True, noise_level=50)
    with torch.no_grad():  # the fidelity channels start at zero: give the reference an effect
        fid.unet.conv_in.weight[:, 4:].normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(3, 1, DIM, generator=torch.Generator().manual_seed(6))
    references, seeds = [images[0], None, images[1]], [7, 8, 9]
    rows = fid.generate(cond, reference=references, steps=STEPS, guidance=guidance,
                        generator=[torch.Generator().manual_seed(s) for s in seeds])
    for k, (row, seed) in enumerate(zip(rows, seeds)):
        [alone] = fid.generate(cond[k : k + 1], reference=[references[k]], steps=STEPS, guidance=guidance,
                               generator=torch.Generator().manual_seed(seed))
        assert np.abs(row.data.astype(int) - alone.data.astype(int)).max() <= 2, k


def test_fidelity_adapters_train_conv_in_and_round_trip(spec, model_dir, images):
    fid = load(spec, model_dir, fidelity=True, trainable="adapters")
    trainable = {n for n, p in fid.named_parameters() if p.requires_grad}
    assert trainable == {"unet.conv_in.weight", "unet.conv_in.bias"}
    before = {k: v.clone() for k, v in fid.state_dict().items()}
    opt = torch.optim.SGD([p for p in fid.parameters() if p.requires_grad], lr=0.5)
    cond = torch.randn(2, 1, DIM)
    losses = []
    for _ in range(3):
        loss = fid.diffusion_loss(cond, images, reference=images, generator=torch.Generator().manual_seed(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = fid.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"unet.conv_in.weight", "unet.conv_in.bias"}
    assert fid.unet.conv_in.weight[:, 4:].abs().sum() > 0  # the reference channels learned

    state = {k: v.clone() for k, v in fid.trained_state_dict().items()}
    assert set(state) == {"unet.conv_in.weight", "unet.conv_in.bias"}
    fresh = load(spec, model_dir, fidelity=True)
    kwargs = dict(reference=images, steps=STEPS, guidance=1.0)
    untrained = fresh.generate(cond, **kwargs, generator=torch.Generator().manual_seed(0))
    fresh.load_trained_state_dict(state)
    restored = fresh.generate(cond, **kwargs, generator=torch.Generator().manual_seed(0))
    trained = fid.generate(cond, **kwargs, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(restored[0].data, trained[0].data)
    assert not np.array_equal(untrained[0].data, trained[0].data)

    with pytest.raises(CheckpointError, match="unet.conv_in.weight"):
        fresh.load_trained_state_dict({"unet.conv_in.weight": torch.zeros(32, 5, 3, 3)})
    with pytest.raises(CheckpointError, match="vae.encoder"):
        fresh.load_trained_state_dict({"vae.encoder.conv_in.bias": torch.zeros(32)})
    plain = load(spec, model_dir)
    with pytest.raises(CheckpointError, match="fidelity=true"):
        plain.load_trained_state_dict(state)


def test_trainable_policies(spec, model_dir):
    dec = load(spec, model_dir, trainable="full")
    names = {n for n, p in dec.named_parameters() if p.requires_grad}
    assert names == {f"unet.{n}" for n, _ in dec.unet.named_parameters()}
    assert set(dec.trained_state_dict()) == {f"unet.{k}" for k in dec.unet.state_dict()}
    dec.set_trainable("frozen")
    assert dec.trained_state_dict() == {} and not any(p.requires_grad for p in dec.parameters())
    with pytest.raises(ConfigError, match="fidelity"):
        dec.set_trainable("adapters")
    with pytest.raises(ConfigError, match="lora"):
        dec.set_trainable("lora")


def test_size_options(spec, model_dir):
    dec = load(spec, model_dir, height=24, width=32, steps=1, guidance=1.0)
    out = dec.generate(torch.zeros(1, 1, DIM), generator=torch.Generator().manual_seed(0))
    assert out[0].data.shape == (24, 32, 3)


def test_load_errors_name_the_component(spec, model_dir, tmp_path):
    registry = Registry()
    registry.register_plugin(sd_unclip)
    config = {"plugin": "sd-unclip", "options": {"model": "nobody/no-such-unclip", "local_files_only": True}}
    with pytest.raises(ComponentLoadError, match="sd-unclip.*nobody/no-such-unclip"):
        registry.load("decoder", config)
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ComponentLoadError, match="'unet'"):
        load(spec, broken)
    with pytest.raises(ConfigError, match="noise_level"):
        load(spec, model_dir, noise_level=1000)


def test_real_unclip_unet_config_on_meta():
    """SD-2.1-unCLIP's UNet (the real config) builds on the meta device: its conditioning is
    1024-d, and the fidelity widening yields the paper's 8-channel conv_in."""
    from diffusers import UNet2DConditionModel

    from codi2.plugins.decoders._sd_unclip_impl import condition_dim, widen_conv_in

    config = dict(
        sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
        class_embed_type="projection", projection_class_embeddings_input_dim=2048,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    assert condition_dim(unet.config) == 1024
    assert unet.class_embedding.linear_1.in_features == 2048
    widen_conv_in(unet, 4)
    assert unet.conv_in.weight.shape == (320, 8, 3, 3) and unet.config.in_channels == 8
    with pytest.raises(ComponentLoadError, match="projection"):
        condition_dim(SimpleNamespace(class_embed_type=None, projection_class_embeddings_input_dim=None))


def test_bad_reference_media_is_named(spec, model_dir):
    fid = load(spec, model_dir, fidelity=True)
    bad = Media("image", np.zeros((8, 8), dtype=np.uint8), name="flat.png")
    with pytest.raises(MediaError, match="flat.png"):
        fid.generate(torch.zeros(1, 1, DIM), reference=[bad], steps=1)
