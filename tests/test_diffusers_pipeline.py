"""The ``diffusers-pipeline`` decoder on tiny SD-1.x, SDXL, PixArt-alpha and AudioLDM pipelines.

Each pipeline is saved with ``save_pretrained`` and loaded back through the plugin. Generation
from ``target_features(caption)`` equals the stock pipeline given the same text conditioning
(the caption itself where the stock pipeline derives exactly that), the diffusion loss reaches
the conditioning and falls when the conditioning is optimised, and the decoder passes codi2's
contract kit.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, ConfigError, MediaError
from codi2.plugins.decoders import testing_prompt_pipelines as tiny
from codi2.registry import Registry
from codi2.testing import check_decoder

BUILDERS = {
    "sd": (tiny.build_tiny_sd, "StableDiffusionPipeline", (77, 32)),
    "sdxl": (tiny.build_tiny_sdxl, "StableDiffusionXLPipeline", (78, 64)),  # 77 tokens + the pooled one
    "pixart": (tiny.build_tiny_pixart_alpha, "PixArtAlphaPipeline", (120, 32)),
    "audioldm": (tiny.build_tiny_audioldm, "AudioLDMPipeline", (1, 8)),
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {name: build(root / name) for name, (build, _, _) in BUILDERS.items()}


def load(directory, **options):
    registry = Registry.create(entry_points=False)
    return registry.load("decoder", {"plugin": "diffusers-pipeline", "options": {
        "model": str(directory), "device": "cpu", "local_files_only": True, "steps": 2, **options}})  # fmt: skip


def item(modality, seed=0, caption="a red cat on a mat"):
    rng = np.random.default_rng(seed)
    if modality == "audio":
        t = np.arange(8000, dtype=np.float32) / 16000
        return Media("audio", (0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)).astype(np.float32), sample_rate=16000,
                     meta={"caption": caption})  # fmt: skip
    return Media("image", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), meta={"caption": caption})


def stock_output(name, directory, caption, seed):
    """The stock pipeline's own result for ``caption`` (2 steps, default guidance)."""
    import diffusers

    pipe = getattr(diffusers, BUILDERS[name][1]).from_pretrained(directory, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    if name == "pixart":  # the plugin attends every conditioning token: give the stock pipeline the same
        embeds, _, negative, negative_mask = pipe.encode_prompt(caption, True, negative_prompt="", device="cpu")
        out = pipe(prompt_embeds=embeds, prompt_attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                   negative_prompt=None, negative_prompt_embeds=negative, negative_prompt_attention_mask=negative_mask,
                   num_inference_steps=2, generator=generator, output_type="np", use_resolution_binning=False)  # fmt: skip
        return out.images[0]
    out = pipe(prompt=caption, num_inference_steps=2, generator=generator, output_type="np")
    return out.audios[0] if name == "audioldm" else out.images[0]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_generation_equals_the_stock_pipeline(name, dirs, one_torch_thread):
    decoder = load(dirs[name])
    assert type(decoder.pipeline).__name__ == BUILDERS[name][1]
    assert (decoder.condition.tokens, decoder.condition.dim) == BUILDERS[name][2]
    modality = "audio" if name == "audioldm" else "image"
    assert decoder.modality == modality
    target = item(modality)
    cond = decoder.target_features([target])
    assert cond.shape == (1, *BUILDERS[name][2]) and cond.dtype == torch.float32
    (ours,) = decoder.generate(cond, generator=torch.Generator().manual_seed(3))
    expected = stock_output(name, dirs[name], target.meta["caption"], seed=3)
    if modality == "audio":
        assert ours.sample_rate == 16000
        np.testing.assert_allclose(ours.data, np.clip(expected, -1, 1), atol=1e-6)
    else:
        assert ours.data.dtype == np.uint8
        np.testing.assert_array_equal(ours.data, (expected * 255).round().clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_diffusion_loss_trains_the_conditioning(name, dirs, one_torch_thread):
    decoder = load(dirs[name])
    modality = decoder.modality
    targets = [item(modality, 0), item(modality, 1, "a blue square")]
    cond = torch.nn.Parameter(decoder.target_features(targets) + 0.5)
    optimizer = torch.optim.Adam([cond], lr=0.05)
    losses = []
    for _ in range(4):  # the same noise and timesteps each time: only the conditioning changes
        loss = decoder.diffusion_loss(cond, targets, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        assert cond.grad is not None and cond.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", ["sdxl", "audioldm"])
def test_contract(name, dirs, one_torch_thread):
    decoder = load(dirs[name])
    check_decoder(decoder, [item(decoder.modality, 0), item(decoder.modality, 1, "a blue square")])
    decoder.set_trainable("full")
    assert all(p.requires_grad for p in decoder.unet.parameters())
    assert not any(p.requires_grad for p in decoder.vae.parameters())


def test_errors_are_clear(dirs, tmp_path):
    decoder = load(dirs["sd"])
    with pytest.raises(MediaError, match="needs a caption"):
        decoder.target_features([Media("image", np.zeros((8, 8, 3), np.uint8))])
    with pytest.raises(MediaError, match="needs image media"):
        decoder.target_features([item("audio")])
    with pytest.raises(ConfigError, match="no fidelity"):
        load(dirs["sd"], fidelity=True)
    with pytest.raises(ComponentLoadError, match="no diffusers pipeline class"):
        load(dirs["sd"], pipeline="NotAPipeline")
    with pytest.raises(ComponentLoadError, match="no model_index.json"):
        load(tmp_path)


def test_plugin_module_imports_no_torch():
    code = "import sys, codi2.plugins.decoders.diffusers_pipeline; assert not {'torch', 'diffusers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_caption_in_the_message_reaches_the_target_features(dirs, one_torch_thread):
    from codi2.core.model import CoDi2Model
    from codi2.testing import TinyEncoder, TinyLLM

    decoder = load(dirs["sdxl"])
    torch.manual_seed(0)
    model = CoDi2Model.from_components(encoders=[TinyEncoder()], llm=TinyLLM(), decoders={"image": decoder})
    picture = item("image")
    conversation = [
        {"role": "user", "content": "draw a cat"},
        {"role": "assistant", "content": [{"type": "image", "data": picture.data, "caption": "a red cat on a mat"}]},
    ]
    losses = model(model.collate([conversation]), generator=torch.Generator().manual_seed(0))
    assert float(losses["feature"].detach()) > 0 and float(losses["diffusion"].detach()) > 0
    conversation[1]["content"][0].pop("caption")
    with pytest.raises(MediaError, match="needs a caption"):
        model(model.collate([conversation]), generator=torch.Generator().manual_seed(0))


def test_the_docs_configurations_validate():
    import re
    from pathlib import Path

    import yaml

    from codi2.plugins.decoders.diffusers_pipeline import DiffusersPipelineOptions
    from codi2.plugins.encoders.hf_clip import HFClipOptions

    text = (Path(__file__).parents[1] / "docs" / "backbones.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    decoders = [d for b in blocks for d in b.get("decoders", {}).values()]
    encoders = [e for b in blocks for e in b.get("encoders", [])]
    assert len(decoders) == 2 and len(encoders) == 3
    for d in decoders:
        assert d["plugin"] == "diffusers-pipeline"
        DiffusersPipelineOptions.model_validate(d["options"])
    for e in encoders:
        assert e["plugin"] == "hf-clip"
        HFClipOptions.model_validate(e["options"])


def test_text_to_video_pipeline_equals_stock_and_trains(tmp_path, one_torch_thread):
    from diffusers import TextToVideoSDPipeline

    from codi2.plugins.decoders.testing_audio_video import build_tiny_zeroscope

    directory = build_tiny_zeroscope(tmp_path / "t2v")
    decoder = load(directory, num_frames=2)
    assert decoder.modality == "video" and (decoder.condition.tokens, decoder.condition.dim) == (77, 8)
    rng = np.random.default_rng(0)
    clip = Media("video", rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8), fps=8.0, meta={"caption": "waves"})
    cond = decoder.target_features([clip])
    (ours,) = decoder.generate(cond, generator=torch.Generator().manual_seed(1))
    stock = TextToVideoSDPipeline.from_pretrained(directory, local_files_only=True)
    stock.set_progress_bar_config(disable=True)
    frames = stock(prompt="waves", num_frames=2, num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="np").frames[0]
    np.testing.assert_array_equal(ours.data, (np.asarray(frames) * 255).round().clip(0, 255).astype(np.uint8))
    cond.requires_grad_(True)
    decoder.diffusion_loss(cond, [clip], generator=torch.Generator().manual_seed(0)).backward()
    assert cond.grad.abs().sum() > 0
