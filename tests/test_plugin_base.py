"""The public base classes of codi2.plugins.base, used directly as a plugin author would: each
subclass (or instance) passes the contract kit with only the component-specific code written."""

import numpy as np
import pytest
import torch
from torch import nn

from codi2.core.types import ConditionSpec, Media
from codi2.errors import CheckpointError, ConfigError, MediaError, UnknownModalityError
from codi2.plugins.base import DecoderBase, FrozenEncoder, TransformersLLM
from codi2.testing import check_decoder, check_encoder, check_llm, test_media

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class MeanColour(FrozenEncoder):
    name, modalities, embed_dim = "mean-colour", ("image",), 3
    identity = "mean-colour/v1"

    def tokens_per_item(self, modality):
        self.check_modality(modality)
        return 1

    def encode(self, items, modality):
        items = self.check_items(items, modality)
        return torch.stack([torch.from_numpy(np.asarray(m.data)).float().mean((0, 1)) / 255 for m in items])[:, None]


class Blur(DecoderBase):
    """A one-layer 'diffusion' decoder: enough to exercise the base's policy and checks."""

    name, modality = "blur", "image"
    frozen_parts = ("target",)

    def __init__(self):
        super().__init__()
        self.condition = ConditionSpec(1, 3)
        self.net = nn.Linear(3 + 3, 3)
        self.target = nn.Linear(3, 3).requires_grad_(False)
        self.set_trainable("frozen")

    def _colour(self, media):
        return torch.stack([torch.from_numpy(np.asarray(m.data)).float().mean((0, 1)) / 127.5 - 1 for m in self.check_media(media)])

    def target_features(self, media):
        return self.target(self._colour(media))[:, None]

    def diffusion_loss(self, cond, media, reference=None, generator=None):
        self.check_cond(cond, batch=len(media))
        self.check_reference(reference)
        x0 = self._colour(media)
        noisy = x0 + torch.randn(x0.shape, generator=generator)
        return nn.functional.mse_loss(self.net(torch.cat([noisy, cond[:, 0]], -1)), x0)

    def generate(self, cond, reference=None, *, steps=None, guidance=None, generator=None):
        self.check_cond(cond)
        x = self.net(torch.cat([torch.randn((len(cond), 3), generator=generator), cond[:, 0]], -1))
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return [Media("image", np.broadcast_to(p.numpy(), (8, 8, 3)).copy()) for p in pixels]


def test_a_frozen_encoder_needs_only_its_own_code():
    encoder = MeanColour()
    check_encoder(encoder, {"image": test_media("image")})
    with pytest.raises(ConfigError, match="frozen"):
        encoder.set_trainable("full")
    with pytest.raises(CheckpointError, match="no trained state"):
        encoder.load_trained_state_dict({"x": torch.zeros(1)})
    with pytest.raises(UnknownModalityError, match="encodes image"):
        encoder.load_media(b"...", "audio")
    encoder.train()
    assert not encoder.training  # stays in eval mode inside a training model


def test_decoder_base_gives_the_policy_the_state_and_the_checks():
    decoder = Blur()
    check_decoder(decoder, [test_media("image", 0), test_media("image", 1)])
    decoder.set_trainable("full")
    assert {n for n, p in decoder.named_parameters() if p.requires_grad} == {"net.weight", "net.bias"}
    assert set(decoder.trained_state_dict()) == {"net.weight", "net.bias"}
    decoder.train()
    assert decoder.net.training and not decoder.target.training  # frozen parts stay in eval mode
    with pytest.raises(CheckpointError, match="unexpected tensor 'target.weight'"):
        decoder.load_trained_state_dict({"target.weight": torch.zeros(3, 3)})
    with pytest.raises(ConfigError, match="unknown trainable policy 'lora'"):
        decoder.set_trainable("lora")
    with pytest.raises(MediaError, match="no fidelity path"):
        decoder.diffusion_loss(torch.zeros(1, 1, 3), [test_media("image")], reference=[test_media("image")])
    with pytest.raises(MediaError, match="needs image media, got audio"):
        decoder.target_features([test_media("audio")])
    with pytest.raises(ValueError, match=r"cond must be \[B, 1, 3\]"):
        decoder.generate(torch.zeros(1, 2, 3))


def test_transformers_llm_wraps_any_causal_lm_and_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    folder = build_tiny_llama(tmp_path / "llama")
    llm = TransformersLLM(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))
    check_llm(llm)
    llm.set_trainable("lora")
    assert llm.trained_state_dict() and all("lora_" in k for k in llm.trained_state_dict())
