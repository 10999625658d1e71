"""The model configuration presets that ship with codi2, registered like any plugin's presets.

- ``codi2-paper``: the paper's stack (ImageBind-huge, Llama-2-7b-chat with LoRA, SD-2.1-unCLIP,
  AudioLDM2, zeroscope), weights from the hub;
- ``codi2-paper-openclip``: the same with OpenCLIP ViT-H/14 as the encoder;
- ``codi2-hf-encoders``: the same with transformers encoders (SigLIP for images and text, CLAP
  for audio) and ImageBind for video.

Each is a JSON file next to this module; ``codi2.load("codi2-paper")`` builds its components
through the registry (the core starts untrained). Light at import: no torch.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.registry.components import RegisterCallback

PRESETS = {
    "codi2-paper": "the paper's stack: ImageBind-huge, Llama-2-7b-chat (LoRA), SD-2.1-unCLIP, AudioLDM2, zeroscope",
    "codi2-paper-openclip": "codi2-paper with OpenCLIP ViT-H/14 as the encoder",
    "codi2-hf-encoders": "codi2-paper with transformers encoders: SigLIP (image, text), CLAP (audio); ImageBind (video)",
}


def _loader(name: str) -> Any:
    def load(options: Any = None) -> dict[str, Any]:
        return json.loads((resources.files(__name__) / f"{name}.json").read_text(encoding="utf-8"))

    return load


@hookimpl
def codi2_register_presets(register: RegisterCallback) -> None:
    for name, description in PRESETS.items():
        register(name, load=_loader(name), description=description)
