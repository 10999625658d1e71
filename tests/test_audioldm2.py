"""The ``audioldm2`` decoder on a tiny random AudioLDM2 saved in diffusers' layout, loaded offline.

Parity tests compare against diffusers' stock ``AudioLDM2Pipeline`` loaded from the same folder.
Where the stock pipeline needs its GPT-2 generation loop (broken for a bare ``GPT2Model`` under
transformers 5), the stock copy gets a ``GPT2LMHeadModel`` holding the same weights, for which
the stock loop runs.
"""

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
from codi2.plugins.decoders import audioldm2
from codi2.plugins.decoders.testing_audio_video import build_tiny_audioldm2
from codi2.registry import Registry
from codi2.testing import check_decoder, test_media

STEPS = 2
# raised by the stock pipeline's own GPT-2 loop (the reference side of the parity tests)
pytestmark = [
    pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_audioldm2(tmp_path_factory.mktemp("audioldm2") / "pipe")


@pytest.fixture(scope="module")
def spec():
    registry = Registry()
    registry.register_plugin(audioldm2)
    assert not registry.failures
    return registry.get("decoder", "audioldm2")


def load(spec, model_dir, **options):
    return spec.load({"model": str(model_dir), "device": "cpu", "local_files_only": True, "steps": STEPS, **options})


@pytest.fixture(scope="module")
def decoder(spec, model_dir):
    return load(spec, model_dir)


@pytest.fixture(scope="module")
def stock(model_dir):
    """The stock pipeline, its GPT-2 swapped for a GPT2LMHeadModel with the same weights."""
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    pipe = AudioLDM2Pipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    lm = GPT2LMHeadModel(pipe.language_model.config).eval()
    lm.transformer.load_state_dict(pipe.language_model.state_dict())
    pipe.language_model = lm
    return pipe


@pytest.fixture(scope="module")
def clips():
    return [test_media("audio", 0), test_media("audio", 1)]


def test_plugin_modules_import_no_torch():
    code = (
        "import sys; import codi2.plugins.decoders.audioldm2, codi2.plugins.decoders.zeroscope; "
        "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_are_strict(spec):
    assert spec.validate_options({}).model == "cvssp/audioldm2"
    with pytest.raises(ConfigError, match="audioldm2.*colour"):
        spec.validate_options({"colour": "red"})
    assert spec.validate_options({"fidelity": True}).fidelity


def test_condition_is_the_gpt2_stream(decoder):
    assert (decoder.condition.tokens, decoder.condition.dim) == (8, 16)
    assert decoder.modality == "audio" and not decoder.supports_reference
    assert decoder.sample_rate == 16000 and decoder.frames == 16


def test_contract(decoder, clips):
    check_decoder(decoder, clips, steps=STEPS)


def test_language_model_loop_equals_stock_generation(decoder, stock):
    from codi2.plugins.decoders._audioldm2_impl import language_model_vectors

    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        ours = language_model_vectors(decoder.language_model, x, mask, 8)
        theirs = stock.generate_language_model(x, max_new_tokens=8, attention_mask=mask)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_unconditional_streams_equal_the_pipelines_empty_prompt(decoder, stock):
    with torch.no_grad():
        t5, mask, generated = stock.encode_prompt("", "cpu", 1, False)
    torch.testing.assert_close(decoder.t5_empty, t5)
    assert torch.equal(decoder.t5_empty_mask, mask)
    torch.testing.assert_close(decoder.generated_empty, generated, rtol=0, atol=1e-6)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_generate_equals_stock_pipeline(decoder, stock, guidance):
    cond = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(3))
    ours = decoder.generate(cond, guidance=guidance, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t5, mask, empty_generated = stock.encode_prompt([""] * 2, "cpu", 1, False)
    negative = {}
    if guidance > 1:
        negative = {"negative_prompt_embeds": t5, "negative_attention_mask": mask, "negative_generated_prompt_embeds": empty_generated}
    theirs = stock(
        prompt_embeds=t5, attention_mask=mask, generated_prompt_embeds=cond, num_inference_steps=STEPS,
        guidance_scale=guidance, generator=torch.Generator().manual_seed(0), output_type="np", **negative,
    ).audios
    assert len(ours) == 2
    for item, ref in zip(ours, theirs, strict=True):
        assert item.modality == "audio" and item.sample_rate == 16000 and item.data.dtype == np.float32
        assert item.data.shape == (2560,)  # 0.16 s: the tiny UNet's default length
        np.testing.assert_allclose(item.data, np.clip(ref, -1, 1), atol=1e-6)


def test_target_features(decoder, clips):
    target = decoder.target_features(clips)
    assert target.shape == (2, 8, 16) and target.dtype == torch.float32 and torch.isfinite(target).all()
    assert not torch.allclose(target[0], target[1]), "different clips must give different targets"
    # loudness-normalised (AudioLDM's convention) and independent of the input's sample rate
    quiet = Media("audio", clips[0].data * 0.1, sample_rate=16000)
    from codi2.core.audio import resample

    at_48k = Media("audio", resample(clips[0].data, 16000, 48000), sample_rate=48000)
    again = decoder.target_features([quiet, at_48k])
    torch.testing.assert_close(again[0], target[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again[1], target[0], rtol=0, atol=5e-3)


def test_diffusion_loss_is_seeded_and_backpropagates_into_cond(decoder, clips):
    cond = torch.randn(2, 8, 16, requires_grad=True)
    a = decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(0))
    b = decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(0))
    assert a.item() == b.item()
    a.backward()
    assert cond.grad.abs().sum() > 0
    assert all(p.grad is None for p in decoder.parameters()), "a frozen decoder's weights get no gradient"
    # descending the gradient (same noise draw) lowers the loss: cond really steers the UNet
    opt = torch.optim.Adam([cond], lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_mel_front_end_matches_audioldm_definition():
    from codi2.plugins.decoders._audioldm2_impl import MelSettings, log_mel

    settings = MelSettings(16000, 160, 64)
    filters = settings.filters()
    assert filters.shape == (513, 64)
    t = np.arange(16000) / 16000
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    mel = log_mel(torch.stack([tone, torch.zeros(16000)]), settings, filters)
    assert mel.shape == (2, 100, 64)  # samples / hop frames
    peak_band = int(mel[0, 50].argmax())
    band_peak_hz = float(filters[:, peak_band].argmax()) * 16000 / 1024
    assert abs(band_peak_hz - 1000) < 80
    torch.testing.assert_close(mel[1], torch.full((100, 64), float(np.log(1e-5))))
    # Slaney normalisation: each triangle has area 1 in Hz (height 2 / bandwidth), so the
    # weight sums times the bin width are ~1 away from the band edges
    area = filters.sum(0) * 16000 / 1024
    assert torch.allclose(area[8:56], torch.ones(48), atol=0.1)


def test_trainable_full_round_trip(spec, model_dir):
    # its own plain decoder: loading the changed weights into the module's shared `decoder`
    # would break the parity tests that run after this one (found by a shuffled run)
    decoder = load(spec, model_dir)
    full = load(spec, model_dir, trainable="full")
    trainable = {n.split(".")[0] for n, p in full.named_parameters() if p.requires_grad}
    assert trainable == {"unet"}
    state = full.trained_state_dict()
    assert state and all(k.startswith("unet.") for k in state)
    with torch.no_grad():
        full.unet.conv_in.bias.add_(1.0)
    decoder.load_trained_state_dict(full.trained_state_dict())
    torch.testing.assert_close(decoder.unet.conv_in.bias, full.unet.conv_in.bias)
    with pytest.raises(CheckpointError, match="unet.conv_in.bias"):
        decoder.load_trained_state_dict({"unet.conv_in.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="nonsense"):
        decoder.load_trained_state_dict({"nonsense": torch.zeros(3)})
    full.train()
    assert full.unet.training and not full.language_model.training and not full.text_encoder.training


def test_bad_inputs_are_named(decoder, clips):
    with pytest.raises(MediaError, match="needs audio"):
        decoder.target_features([test_media("image", 0)])
    with pytest.raises(MediaError, match="sample_rate"):
        decoder.target_features([Media("audio", np.zeros(100, np.float32), name="x.wav")])
    with pytest.raises(MediaError, match="fidelity"):
        decoder.diffusion_loss(torch.zeros(2, 8, 16), clips, reference=clips)
    with pytest.raises(ValueError, match=r"\[B, 8, 16\]"):
        decoder.generate(torch.zeros(1, 4, 16))


def test_unknown_hub_id_offline_names_component_and_id(spec):
    with pytest.raises(ComponentLoadError, match="audioldm2.*nobody/no-such-audioldm2"):
        spec.load({"model": "nobody/no-such-audioldm2", "device": "cpu"})


def test_missing_component_folder_is_named(spec, model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "vocoder")
    with pytest.raises(ComponentLoadError, match="'vocoder'"):
        spec.load({"model": str(broken), "device": "cpu", "local_files_only": True})


# --- fidelity (paper §5.1): reference mel latents through a widened conv_in ----------------------


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_fidelity_starts_as_the_plain_model(spec, model_dir, guidance, clips):
    fid, decoder = load(spec, model_dir, fidelity=True), load(spec, model_dir)
    assert fid.supports_reference and fid.unet.conv_in.weight.shape[1] == 8
    assert fid.unet.conv_in.weight[:, 4:].abs().sum() == 0
    cond = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(3))
    # the own sampling loop, with a reference, renders what the stock pipeline renders
    ours = fid.generate(cond, reference=[clips[0], None], guidance=guidance, generator=torch.Generator().manual_seed(0))
    plain = decoder.generate(cond, guidance=guidance, generator=torch.Generator().manual_seed(0))
    for a, b in zip(ours, plain, strict=True):
        assert a.data.shape == b.data.shape == (2560,) and a.sample_rate == 16000
        assert np.abs(b.data).max() > 0
        # (the tiny model's output is quiet: compare relative to its scale)
        np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-4 * np.abs(b.data).max())
    # and the training loss with a reference equals the plain decoder's
    torch.testing.assert_close(
        fid.diffusion_loss(cond, clips, reference=clips, generator=torch.Generator().manual_seed(1)),
        decoder.diffusion_loss(cond, clips, generator=torch.Generator().manual_seed(1)),
    )


def test_fidelity_adapters_train_conv_in_and_round_trip(spec, model_dir, clips):
    fid = load(spec, model_dir, fidelity=True, trainable="adapters")
    assert {n for n, p in fid.named_parameters() if p.requires_grad} == {"unet.conv_in.weight", "unet.conv_in.bias"}
    cond = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(4))
    reference = list(reversed(clips))
    opt = torch.optim.SGD([p for p in fid.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(3):
        loss = fid.diffusion_loss(cond, clips, reference=reference, generator=torch.Generator().manual_seed(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert fid.unet.conv_in.weight[:, 4:].abs().sum() > 0, "the reference channels learned"

    state = {k: v.clone() for k, v in fid.trained_state_dict().items()}
    assert set(state) == {"unet.conv_in.weight", "unet.conv_in.bias"}
    fresh = load(spec, model_dir, fidelity=True)
    kwargs = dict(reference=reference, guidance=1.0)
    untrained = fresh.generate(cond, **kwargs, generator=torch.Generator().manual_seed(0))
    fresh.load_trained_state_dict(state)
    restored = fresh.generate(cond, **kwargs, generator=torch.Generator().manual_seed(0))
    trained = fid.generate(cond, **kwargs, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(restored[0].data, trained[0].data)
    assert not np.array_equal(untrained[0].data, trained[0].data)
    with pytest.raises(CheckpointError, match="unet.conv_in.weight"):
        load(spec, model_dir).load_trained_state_dict(state)
    with pytest.raises(ConfigError, match="fidelity"):
        load(spec, model_dir).set_trainable("adapters")


def test_fidelity_through_the_model_trains_and_saves_the_adapter(spec, model_dir, clips, tmp_path):
    """An audio edit with ``fidelity: true``: the input clip is the reference, the widened
    conv_in trains in the model and is saved with the codi2 checkpoint."""
    from safetensors.torch import load_file

    from codi2.core.model import CoDi2Model
    from codi2.testing import TinyEncoder, TinyLLM

    torch.manual_seed(0)
    model = CoDi2Model.from_components(encoders=[TinyEncoder()], llm=TinyLLM(),
                                       decoders={"audio": load(spec, model_dir, fidelity=True)}, fidelity=True)  # fmt: skip
    model.set_trainable(llm="frozen", decoders="adapters")
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "louder "}, {"type": "audio", "data": clips[0]}]},
        {"role": "assistant", "content": [{"type": "audio", "data": clips[1]}]},
    ]
    losses = model(model.collate([conversation]), generator=torch.Generator().manual_seed(0))
    losses["total"].backward()
    extra = model.decoders["audio"].unet.conv_in.weight.grad[:, 4:]
    assert extra.abs().sum() > 0, "the reference channels get a gradient: the input clip was the reference"
    saved = load_file(str(model.save_pretrained(tmp_path / "m") / "model.safetensors"))
    assert {k for k in saved if k.startswith("decoder.audio.")} == {"decoder.audio.unet.conv_in.weight", "decoder.audio.unet.conv_in.bias"}
    torch.testing.assert_close(saved["decoder.audio.unet.conv_in.weight"], model.decoders["audio"].unet.conv_in.weight.detach())
