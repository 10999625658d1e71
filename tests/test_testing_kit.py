"""The contract kit accepts the tiny reference components and rejects broken ones."""

import numpy as np
import pytest
import torch

from codi2.testing import TinyDecoder, TinyEncoder, TinyLLM, check_decoder, check_encoder, check_llm, test_media


def test_tiny_encoder_passes(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(test_media("image").data).save(path)
    check_encoder(TinyEncoder(), {"image": path, "audio": test_media("audio"), "video": test_media("video"), "text": "a red circle"})


def test_tiny_llm_passes():
    check_llm(TinyLLM())


@pytest.mark.parametrize("modality", ["image", "audio", "video"])
@pytest.mark.parametrize("fidelity", [False, True])
def test_tiny_decoder_passes(modality, fidelity):
    decoder = TinyDecoder(modality, fidelity=fidelity)
    decoder.set_trainable("adapters")
    check_decoder(decoder, [test_media(modality, 0), test_media(modality, 1)])


class DetachingDecoder(TinyDecoder):
    def diffusion_loss(self, cond, media, reference=None, generator=None):
        return super().diffusion_loss(cond.detach() + 0 * cond, media, reference, generator)


class NondeterministicDecoder(TinyDecoder):
    def generate(self, cond, reference=None, *, steps=None, guidance=None, generator=None):
        return super().generate(cond, reference, steps=steps, guidance=guidance, generator=None)


class SharedNoiseDecoder(TinyDecoder):
    """Claims one generator per row but draws every row's noise from the first one."""

    def generate(self, cond, reference=None, *, steps=None, guidance=None, generator=None):
        if isinstance(generator, list):
            generator = generator[0]
        return super().generate(cond, reference, steps=steps, guidance=guidance, generator=generator)


class LeakyEncoder(TinyEncoder):
    def encode(self, items, modality):
        return super().encode(items, modality).requires_grad_(True)


class NoCacheLLM(TinyLLM):
    def forward(self, inputs_embeds, attention_mask=None, past=None):
        return super().forward(inputs_embeds, attention_mask, None)


@pytest.mark.parametrize("check, component, args, message", [
    (check_decoder, DetachingDecoder(), None, "back-propagate into cond"),
    (check_decoder, NondeterministicDecoder(), None, "not deterministic"),
    (check_decoder, SharedNoiseDecoder(), None, "per_item_generators: row 1"),
    (check_encoder, LeakyEncoder(), {"image": test_media("image")}, "must not build a graph"),
    (check_llm, NoCacheLLM(), None, "KV cache"),
])
def test_the_kit_catches_broken_components(check, component, args, message):
    if args is None and check is check_decoder:
        args = [test_media("image", 0), test_media("image", 1)]
    with pytest.raises(AssertionError, match=message):
        check(component, args) if args is not None else check(component)


def test_test_media_is_valid_for_every_modality():
    assert test_media("image").data.shape == (16, 16, 3)
    assert test_media("audio").sample_rate == 16000 and np.isfinite(test_media("audio").data).all()
    assert test_media("video").fps == 4.0 and torch.tensor(test_media("video").data).dim() == 4
