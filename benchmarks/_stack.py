"""The CPU benchmarks' model: the paper's stack with tiny, randomly initialised REAL backbones.

ImageBind (our model code, ``random_init``) -> Llama (transformers, through the ``hf-causal-lm``
plugin with ``init: random``) -> SD-2.1-unCLIP (the stock diffusers pipeline with diffusers'
own tiny test shapes, through the ``sd-unclip`` plugin). Every component is built through the
registry, exactly as a user's config would build it; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOWERS = ("vision", "text", "audio", "depth", "thermal", "imu")


def imagebind_size(width: int = 8, blocks: int = 1, heads: int = 1, out: int = 16) -> dict[str, int]:
    """An ImageBind config of the real architecture, every tower ``width`` wide and ``blocks`` deep."""
    size = {"out_embed_dim": out}
    for tower in TOWERS:
        size.update({f"{tower}_embed_dim": width, f"{tower}_num_heads": heads, f"{tower}_num_blocks": blocks})
    return size


#: LLM shapes (Llama architecture). ``tiny`` is the test suite's; ``small`` is the CPU default.
LLM_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4},
    "small": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4},
}
ENCODER_SIZES: dict[str, dict[str, int]] = {
    "tiny": imagebind_size(8, 1, 1, 16),
    "small": imagebind_size(64, 2, 2, 64),
    "medium": imagebind_size(256, 4, 4, 256),
}


def tokenizer_dir(workdir: str | Path) -> Path:
    """A Llama-style tokenizer (and a tiny config the size overrides start from), built offline once."""
    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    path = Path(workdir) / "llama"
    if not (path / "config.json").is_file():
        build_tiny_llama(path)
    return path


def sd_unclip_dir(workdir: str | Path) -> Path:
    from codi2.plugins.decoders.testing_components import build_tiny_sd_unclip

    path = Path(workdir) / "sd-unclip"
    if not (path / "model_index.json").is_file():
        build_tiny_sd_unclip(path)
    return path


def model_config(
    workdir: str | Path,
    *,
    llm: str = "small",
    encoder: str = "tiny",
    decoder: bool = True,
    max_positions: int = 1024,
    trainable: str = "lora",
    steps: int = 2,
) -> dict[str, Any]:
    """The model config (plugin names + options) of the benchmark stack."""
    overrides = {**LLM_SIZES[llm], "max_position_embeddings": max_positions}
    config: dict[str, Any] = {
        "encoders": [{"plugin": "imagebind", "options": {
            "size": ENCODER_SIZES[encoder], "random_init": True, "device": "cpu", "modalities": ["image"]}}],
        "llm": {"plugin": "hf-causal-lm", "options": {
            "model": str(tokenizer_dir(workdir)), "init": "random", "config": overrides,
            "trainable": trainable, "device": "cpu", "local_files_only": True}},
        "decoders": {},
    }
    if decoder:
        config["decoders"]["image"] = {"plugin": "sd-unclip", "options": {
            "model": str(sd_unclip_dir(workdir)), "steps": steps, "device": "cpu", "local_files_only": True}}
    return config


def build_model(workdir: str | Path, *, seed: int = 0, **options: Any):
    """A :class:`~codi2.core.model.CoDi2Model` of :func:`model_config` built through the registry."""
    import torch

    from codi2.assembly import assemble
    from codi2.registry import Registry

    config = model_config(workdir, **options)
    torch.manual_seed(seed)
    return assemble(config, registry=Registry.create(entry_points=False))


def images(count: int, *, seed: int = 0, side: int = 40) -> list:
    """``count`` distinct random RGB images as :class:`~codi2.core.types.Media`."""
    import numpy as np

    from codi2.core.types import Media

    rng = np.random.default_rng(seed)
    return [Media("image", rng.integers(0, 256, (side, side, 3), dtype=np.uint8), name=f"img{i}") for i in range(count)]


def edit_conversation(source, target, *, request: str = "Show this as a painting, please.", answer: str = "Here it is:") -> list[dict]:
    """One training conversation: an input image and an instruction, answered with text and an image."""
    return [
        {"role": "user", "content": [{"type": "image", "data": source}, {"type": "text", "text": " " + request}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer + " "}, {"type": "image", "data": target}]},
    ]
