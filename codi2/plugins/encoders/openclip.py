"""The ``openclip`` encoder: an OpenCLIP model (open_clip_torch) for images and text.

OpenCLIP ViT-H-14 trained on LAION-2B is the image encoder that SD-2.1-unCLIP was trained
with, and ImageBind's vision tower is that model's, frozen; so ``openclip`` vectors live in
the same image space the ``sd-unclip`` decoder consumes. This module is only the registration
and the options; it imports no torch. The component is
:class:`~codi2.plugins.encoders._openclip_impl.OpenCLIPEncoder`, imported inside :func:`load`.

Choices worth knowing:

- Weights are never downloaded. ``pretrained`` is a local file, or an OpenCLIP tag whose file
  is already in the local cache (the Hugging Face cache, or ``~/.cache/clip`` for URL-hosted
  weights); otherwise loading fails with a ComponentLoadError that says how to fetch it once.
- ``model_config`` builds a custom architecture from an OpenCLIP model config (the dict of
  ``embed_dim``, ``vision_cfg``, ``text_cfg``); ``model`` is then just its label.
- Features are pooled: one unit vector per item (``encode_image`` / ``encode_text``,
  normalised), 1024-d for ViT-H-14. Preprocessing is OpenCLIP's own inference transform.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.encoders._openclip_impl import OpenCLIPEncoder
    from codi2.registry.components import RegisterCallback

NAME = "openclip"


class OpenCLIPOptions(BaseModel):
    """Options of the ``openclip`` encoder."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: OpenCLIP architecture name (``open_clip.list_models()``), or a label for ``model_config``
    model: str = "ViT-H-14"
    #: an OpenCLIP pretrained tag (found in the local cache only) or a local weights file
    pretrained: str | None = "laion2b_s32b_b79k"
    #: a custom OpenCLIP model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...)
    model_config_: dict[str, Any] | None = Field(None, alias="model_config")
    #: one pooled vector per item (the only mode: OpenCLIP exposes no aligned token sequence)
    image_tokens: Literal["pooled"] = "pooled"
    #: which modalities to serve; None = image and text
    modalities: list[Literal["image", "text"]] | None = Field(None, min_length=1)
    #: cache folder for tagged weights (as open_clip's ``cache_dir``); None = the default caches
    cache_dir: str | None = None
    #: items per forward pass
    batch_size: int = Field(32, ge=1)
    #: torch device; None = "cuda" when available, else "cpu"
    device: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: build with random weights instead of loading any (shape checks, tests only)
    random_init: bool = False

    @model_validator(mode="after")
    def _weights_named(self) -> OpenCLIPOptions:
        if not self.random_init and not self.pretrained:
            raise ValueError("pretrained must name a tag or a local file (or set random_init=true)")
        return self


def load(options: OpenCLIPOptions) -> OpenCLIPEncoder:
    """Build the encoder (imports torch and open_clip; loads the weights)."""
    from codi2.plugins.encoders._openclip_impl import OpenCLIPEncoder

    return OpenCLIPEncoder.from_options(options)


@hookimpl
def codi2_register_encoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=OpenCLIPOptions,
        description="OpenCLIP image and text encoder (default ViT-H-14 laion2b_s32b_b79k, "
        "the SD-2.1-unCLIP image space; local weights only)",
    )


def __getattr__(name: str) -> Any:
    # ``from codi2.plugins.encoders.openclip import OpenCLIPEncoder`` works, lazily
    if name == "OpenCLIPEncoder":
        from codi2.plugins.encoders._openclip_impl import OpenCLIPEncoder

        return OpenCLIPEncoder
    raise AttributeError(name)
