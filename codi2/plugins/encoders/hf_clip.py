"""The ``hf-clip`` encoder: a transformers CLIP, SigLIP (image + text) or CLAP (audio + text) model.

The contrastive towers most recent multimodal LLMs read through, one ``from_pretrained`` away:
``openai/clip-vit-large-patch14``, ``google/siglip-so400m-patch14-384``, ``laion/clap-htsat-unfused``
and any other ``CLIPModel`` / ``SiglipModel`` / ``ClapModel`` checkpoint, by hub id or a local
directory written by ``save_pretrained``. This module is the registration and the options; it
imports no torch (the component is in ``_hf_clip_impl``).

- **Features**: the model's own ``get_image_features`` / ``get_text_features`` /
  ``get_audio_features`` (the projected, pooled embedding), one vector per item, L2-normalised
  by default (``normalize: false`` keeps the raw projection). That is exactly ``image_embeds``
  / ``text_embeds`` of the model's forward pass, the space its contrastive loss aligned.
- **Preprocessing**: the checkpoint's own image processor / feature extractor / tokenizer
  (SigLIP text padded to its full length, as it was trained; CLAP audio at the extractor's
  48 kHz, which ``load_media`` resamples to).
- **Modalities**: what the model has towers for; ``modalities`` narrows them (e.g. CLIP for
  images only, leaving text to the LLM).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.encoders._hf_clip_impl import HFContrastiveEncoder
    from codi2.registry.components import RegisterCallback

NAME = "hf-clip"


class HFClipOptions(BaseModel):
    """Options of the ``hf-clip`` encoder."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: hub id or local directory of a CLIPModel, SiglipModel or ClapModel checkpoint
    model: str = "openai/clip-vit-large-patch14"
    revision: str | None = None
    #: which of the model's modalities to serve; None = all it has
    modalities: list[Literal["image", "text", "audio"]] | None = Field(None, min_length=1)
    #: unit vectors (the contrastive space); false = the raw projection
    normalize: bool = True
    batch_size: int = Field(32, ge=1)
    #: torch device; None = "cuda" when available, else "cpu"
    device: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: never reach the hub (default: on when HF_HUB_OFFLINE is set)
    local_files_only: bool | None = None


def load(options: HFClipOptions) -> HFContrastiveEncoder:
    """Build the encoder (imports torch and transformers; loads the weights)."""
    from codi2.plugins.encoders._hf_clip_impl import HFContrastiveEncoder

    return HFContrastiveEncoder.from_options(options)


@hookimpl
def codi2_register_encoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=HFClipOptions,
        description="transformers CLIP / SigLIP (image, text) or CLAP (audio, text), by hub id or local directory",
    )


def __getattr__(name: str) -> Any:
    if name == "HFContrastiveEncoder":
        from codi2.plugins.encoders._hf_clip_impl import HFContrastiveEncoder

        return HFContrastiveEncoder
    raise AttributeError(name)
