"""The presets that swap encoders, every component tiny: ``codi2-paper-openclip`` (OpenCLIP for
images and text, ImageBind for audio and video) and ``codi2-hf-encoders`` (SigLIP for images and
text, CLAP for audio, ImageBind for video); one training step each, one answered prompt.

The preset's own file gives the plugins and the routing; only the sizes and the weights'
locations are replaced (tiny random backbones saved and loaded back the real way).
"""

import numpy as np
import pytest
import torch

from codi2.api import preset_config
from codi2.assembly import assemble
from codi2.core.types import Media
from codi2.registry import Registry

open_clip = pytest.importorskip("open_clip")

TOWERS = ("vision", "text", "audio", "depth", "thermal", "imu")
TINY_IMAGEBIND = {"out_embed_dim": 16, **{f"{t}_{k}": v for t in TOWERS for k, v in (("embed_dim", 8), ("num_heads", 1), ("num_blocks", 1))}}
TINY_OPENCLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


ROUTES = {
    "codi2-paper-openclip": {"image": "openclip", "text": "openclip", "audio": "imagebind", "video": "imagebind"},
    "codi2-hf-encoders": {"image": "hf-clip", "text": "hf-clip", "audio": "hf-clip", "video": "imagebind"},
}


@pytest.fixture(scope="module", params=sorted(ROUTES))
def model(request, tmp_path_factory):
    from safetensors.torch import save_file

    from codi2.plugins.decoders.testing_audio_video import build_tiny_audioldm2, build_tiny_zeroscope
    from codi2.plugins.decoders.testing_components import build_tiny_sd_unclip
    from codi2.plugins.encoders.hf_clip_testing import build_tiny_clap, build_tiny_siglip
    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    root = tmp_path_factory.mktemp("openclip-stack")
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(**TINY_OPENCLIP)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, root / "openclip.safetensors")
    tiny = {
        "openclip": {"model": "tiny", "model_config": TINY_OPENCLIP, "pretrained": str(root / "openclip.safetensors")},
        "imagebind": {"size": TINY_IMAGEBIND, "random_init": True},
        "google/siglip-so400m-patch14-384": {"model": str(build_tiny_siglip(root / "siglip"))},
        "laion/clap-htsat-unfused": {"model": str(build_tiny_clap(root / "clap"))},
    }
    local = {"device": "cpu", "local_files_only": True}
    config = preset_config(request.param)
    for encoder in config["encoders"]:
        which = encoder["options"]["model"] if encoder["plugin"] == "hf-clip" else encoder["plugin"]
        encoder["options"] = {**tiny[which], "device": "cpu"}
    config["llm"]["options"].update(model=str(build_tiny_llama(root / "llm")), dtype="float32", **local)
    decoders = config["decoders"]
    decoders["image"]["options"].update(model=str(build_tiny_sd_unclip(root / "sd")), steps=2, **local)
    decoders["audio"]["options"].update(model=str(build_tiny_audioldm2(root / "ldm")), steps=2, **local)
    decoders["video"]["options"].update(model=str(build_tiny_zeroscope(root / "zs")), steps=2, num_frames=2, height=32, width=32, **local)
    torch.manual_seed(0)
    return request.param, assemble(config, registry=Registry.create(entry_points=False))


def media():
    rng = np.random.default_rng(0)
    image = Media("image", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    t = np.arange(16000, dtype=np.float32) / 16000
    audio = Media("audio", (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=16000)
    return image, audio


def test_the_preset_routes_each_modality_to_its_encoder(model):
    preset, model = model
    assert {m: e.name for m, e in model.encoder_for.items()} == ROUTES[preset]
    assert set(model.decoders) == {"image", "audio", "video"} and model.llm.name == "hf-causal-lm"


def test_one_training_step_then_one_answered_prompt(model, one_torch_thread):
    _, model = model
    image, audio = media()
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Hear "}, {"type": "audio", "data": audio},
                                     {"type": "text", "text": " and see "}, {"type": "image", "data": image}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, {"type": "image", "data": image},
                                          {"type": "audio", "data": audio}]},
    ]  # fmt: skip
    model.set_trainable(llm="lora")
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    losses = model(model.collate([conversation]), generator=torch.Generator().manual_seed(0))
    assert all(float(losses[k].detach()) > 0 for k in ("text", "feature", "diffusion"))
    optimizer.zero_grad()
    losses["total"].backward()
    touched = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("in_proj.image") for n in touched) and any(n.startswith("in_proj.audio") for n in touched)
    assert any("lora_" in n for n in touched)
    optimizer.step()
    assert any(not torch.equal(p, b) for p, b in zip(params, before))

    model.eval()
    answer = model.generate("Describe {a}.", media={"a": image}, seed=0, max_new_tokens=4)
    assert isinstance(answer.text, str) and answer.parts
