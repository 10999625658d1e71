"""The example plugin's own tests — what a third-party plugin author would write.

The components go through codi2's contract kit (``codi2.testing``), the same checks codi2's
built-in plugins pass, plus a few tests of this plugin's own promises.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import codi2_example_plugin
from codi2.core.types import Media
from codi2.errors import ComponentLoadError, ConfigError
from codi2.registry import Registry
from codi2.testing import check_decoder, check_encoder


@pytest.fixture
def registry() -> Registry:
    """An empty registry with only this plugin: no built-ins, no other installed plugins."""
    reg = Registry(strict=True)  # strict: a registration mistake fails the test loudly
    reg.register_plugin(codi2_example_plugin, name="example")
    return reg


def picture(rgb: tuple[int, int, int], size: int = 24, seed: int = 0) -> Media:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-20, 21, (size, size, 3))
    data = np.clip(np.array(rgb)[None, None] + noise, 0, 255).astype(np.uint8)
    return Media("image", data, name=f"picture{seed}")


def tone(freq: float, seconds: float = 0.25) -> Media:
    t = np.arange(int(16000 * seconds)) / 16000
    return Media("audio", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sample_rate=16000, name=f"{freq}Hz")


def test_registers_its_components(registry):
    assert registry.names("encoder") == ["example-encoder"]
    assert registry.names("decoder") == ["example-decoder"]
    (info,) = registry.plugins()
    assert info.error is None
    assert info.components == {"encoder": ["example-encoder"], "decoder": ["example-decoder"]}


def test_encoder_contract(registry):
    encoder = registry.load("encoder", {"plugin": "example-encoder", "options": {"embed_dim": 8}})
    check_encoder(encoder, {"image": picture((200, 30, 30)), "audio": tone(440)})


def test_encoder_features_follow_content(registry):
    encoder = registry.load("encoder", "example-encoder")
    red, red2, blue = encoder.encode([picture((220, 20, 20)), picture((220, 20, 20), size=40, seed=1), picture((20, 20, 220))], "image")[:, 0]
    assert torch.dot(red, red2) > 0.95 > torch.dot(red, blue)
    low, low2, high = encoder.encode([tone(300), tone(300, seconds=0.5), tone(5000)], "audio")[:, 0]
    assert torch.dot(low, low2) > 0.95 > torch.dot(low, high)


def test_decoder_contract(registry):
    decoder = registry.load("decoder", {"plugin": "example-decoder", "options": {"image_size": 8}})
    check_decoder(decoder, [picture((200, 30, 30)), picture((30, 30, 200), seed=1)])


def test_decoder_learns(registry):
    """A few optimiser steps lower the diffusion loss (measured on fixed noise draws)."""
    decoder = registry.load("decoder", {"plugin": "example-decoder", "options": {"image_size": 8}})
    decoder.set_trainable("full")
    media = [picture((220, 20, 20)), picture((20, 20, 220), seed=1)]
    cond = decoder.target_features(media)

    def held_out_loss() -> float:
        with torch.no_grad():
            return sum(decoder.diffusion_loss(cond, media, generator=torch.Generator().manual_seed(s)).item() for s in range(8))

    before = held_out_loss()
    opt = torch.optim.Adam([p for p in decoder.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small only pay for thread hand-offs (10x slower on busy CPUs)
    try:
        for _ in range(40):
            opt.zero_grad()
            decoder.diffusion_loss(cond, media, generator=gen).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert held_out_loss() < 0.5 * before  # measured: about 0.1x


def test_decoder_weights_round_trip(registry, tmp_path):
    decoder = registry.load("decoder", {"plugin": "example-decoder", "options": {"seed": 1}})
    path = decoder.save_weights(tmp_path / "decoder.safetensors")
    # seed 2 would give other weights; the file must override them
    again = registry.load("decoder", {"plugin": "example-decoder", "options": {"seed": 2, "weights": str(path)}})
    cond = torch.randn(1, 1, 16)
    a = decoder.generate(cond, steps=3, generator=torch.Generator().manual_seed(0))[0].data
    b = again.generate(cond, steps=3, generator=torch.Generator().manual_seed(0))[0].data
    np.testing.assert_array_equal(a, b)

    with pytest.raises(ComponentLoadError, match="not found"):
        registry.load("decoder", {"plugin": "example-decoder", "options": {"weights": str(tmp_path / "nope.safetensors")}})


def test_options_are_validated(registry):
    with pytest.raises(ConfigError, match=r"decoder 'example-decoder'.*image_size"):
        registry.load("decoder", {"plugin": "example-decoder", "options": {"image_size": 2}})
    with pytest.raises(ConfigError, match=r"encoder 'example-encoder'.*embed_dimm"):
        registry.load("encoder", {"plugin": "example-encoder", "options": {"embed_dimm": 8}})


def test_import_is_light():
    """Registering the plugin must not import torch (keeps ``codi2 --help`` fast)."""
    src = Path(codi2_example_plugin.__file__).resolve().parents[1]
    code = (
        "import sys, codi2_example_plugin\n"
        "from codi2.registry import Registry\n"
        "reg = Registry(strict=True); reg.register_plugin(codi2_example_plugin)\n"
        "assert reg.names('decoder') == ['example-decoder']\n"
        "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
