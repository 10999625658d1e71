"""The paper's stack end to end: all six backbone plugins, tiny, through the registry.

A whole CoDi-2 model is assembled from a config naming imagebind, hf-causal-lm, sd-unclip,
audioldm2 and zeroscope (every one built tiny and random, saved, and loaded back through the
plugin's real loading path), trains a step on all three loss terms and answers one prompt with
an image, an audio clip and a video. The real sizes are checked on the meta device.
"""

import copy

import numpy as np
import pytest
import torch

from codi2.assembly import assemble
from codi2.core.types import Media
from codi2.registry import Registry

TOWERS = ("vision", "text", "audio", "depth", "thermal", "imu")
TINY_IMAGEBIND = {"out_embed_dim": 16, **{f"{t}_{k}": v for t in TOWERS for k, v in (("embed_dim", 8), ("num_heads", 1), ("num_blocks", 1))}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from codi2.plugins.decoders.testing_audio_video import build_tiny_audioldm2, build_tiny_zeroscope
    from codi2.plugins.decoders.testing_components import build_tiny_sd_unclip
    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    root = tmp_path_factory.mktemp("stack")
    local = {"device": "cpu", "local_files_only": True}
    config = {
        "encoders": [{"plugin": "imagebind", "options": {"size": TINY_IMAGEBIND, "random_init": True, "device": "cpu"}}],
        "llm": {"plugin": "hf-causal-lm", "options": {"model": str(build_tiny_llama(root / "llm")), "trainable": "lora", **local}},
        "decoders": {
            "image": {"plugin": "sd-unclip", "options": {"model": str(build_tiny_sd_unclip(root / "sd")), "steps": 2, **local}},
            "audio": {"plugin": "audioldm2", "options": {"model": str(build_tiny_audioldm2(root / "ldm")), "steps": 2, **local}},
            "video": {"plugin": "zeroscope", "options": {"model": str(build_tiny_zeroscope(root / "zs")), "steps": 2,
                                                         "num_frames": 2, "height": 32, "width": 32, **local}},
        },
    }
    torch.manual_seed(0)
    return assemble(config, registry=Registry.create(entry_points=False))


def world():
    rng = np.random.default_rng(0)
    image = Media("image", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    t = np.arange(16000, dtype=np.float32) / 16000
    audio = Media("audio", (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=16000)
    video = Media("video", rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), fps=8.0, meta={"caption": "a red circle"})
    return image, audio, video


def conversation():
    image, audio, video = world()
    return [
        {"role": "user", "content": [{"type": "text", "text": "Show "}, {"type": "image", "data": image}, {"type": "text", "text": " as everything."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, {"type": "image", "data": image},
                                          {"type": "audio", "data": audio}, {"type": "video", "data": video}]},
    ]


def test_one_training_step_uses_all_three_terms_and_reaches_lora_and_projectors(stack):
    model = stack
    model.set_trainable(llm="lora")
    batch = model.collate([conversation()])
    losses = model(batch, generator=torch.Generator().manual_seed(0))
    assert all(float(losses[k].detach()) > 0 for k in ("text", "feature", "diffusion"))
    model.zero_grad()
    losses["total"].backward()
    touched = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_" in n for n in touched), "gradients must reach the LLM's LoRA adapters"
    for modality in ("image", "audio", "video"):
        assert any(n.startswith(f"out_proj.{modality}") for n in touched), modality
    assert any(n.startswith("in_proj.image") for n in touched)
    assert not any(n.startswith(("encoders.", "decoders.")) for n in touched), "backbones stay frozen"


def test_the_model_answers_with_an_image_an_audio_clip_and_a_video(stack):
    model = copy.deepcopy(stack)  # trained and reconfigured below: the module's other tests keep theirs
    model.set_trainable(llm="lora")
    model.config.loss = model.config.loss.model_copy(update={"feature": False, "diffusion": False})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = model.collate([conversation()])
    for _ in range(60):  # teach the answer's layout (text loss only: fast)
        loss = model(batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    image, _, _ = world()
    answer = model.generate("Show {a} as everything.", media={"a": image}, seed=0, max_new_tokens=16)
    assert [m.modality for m in answer.media] == ["image", "audio", "video"], answer.parts
    img, aud, vid = answer.media
    assert img.data.dtype == np.uint8 and img.data.ndim == 3
    assert aud.sample_rate == 16000 and aud.data.ndim == 1 and len(aud.data) > 0
    assert vid.data.shape[0] == 2 and vid.data.shape[-1] == 3


def test_paper_preset_shapes_line_up_at_real_size_on_meta(tmp_path):
    """ImageBind-huge 1024 -> Llama-2-7B 4096 -> SD-unCLIP 1x1024, AudioLDM2 8x768, zeroscope 77x1024."""
    from codi2.api import preset_config
    from codi2.core.config import ModelConfig
    from codi2.core.model import Projector
    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    tokenizer = str(build_tiny_llama(tmp_path / "tok"))  # Llama-2's own tokenizer is not on this machine

    config = ModelConfig.from_dict(preset_config("codi2-paper"))
    registry = Registry.create(entry_points=False)
    encoder = registry.load("encoder", {"plugin": "imagebind", "options": {**config.encoders[0].options, "random_init": True, "device": "meta"}})
    llm = registry.load("llm", {"plugin": "hf-causal-lm", "options": {
        **config.llm.options, "init": "random", "device": "meta", "tokenizer": tokenizer,
        "config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000}}})
    assert (encoder.embed_dim, llm.hidden_size, llm.vocab_size) == (1024, 4096, 32000)
    real_conditions = {"image": (1, 1024), "audio": (8, 768), "video": (77, 1024)}
    with torch.device("meta"):
        features = torch.empty(1, encoder.tokens_per_item("image"), encoder.embed_dim)
        embeds = Projector(encoder.embed_dim, llm.hidden_size, llm.hidden_size)(features)
        assert embeds.shape == (1, 1, 4096)
        for modality, (tokens, dim) in real_conditions.items():
            slots = torch.empty(1, tokens, 4096)
            hidden = llm.forward(torch.cat([embeds.to(llm_dtype(llm)), slots.to(llm_dtype(llm))], 1)).hidden
            cond = Projector(4096, 4096, dim)(hidden[:, 1:].float())
            assert cond.shape == (1, tokens, dim), modality


def llm_dtype(llm):
    return next(llm.parameters()).dtype
