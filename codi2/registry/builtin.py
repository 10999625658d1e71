"""The plugins that ship with codi2.

They are ordinary plugins: each module implements the hooks of :mod:`codi2.registry.hookspecs`
and is registered through exactly the same path as a third-party package. Keep each module
light at import (no torch, transformers or diffusers at module level).
"""

from __future__ import annotations

BUILTIN_PLUGINS: tuple[str, ...] = (
    "codi2.plugins.modalities.image",
    "codi2.plugins.modalities.audio",
    "codi2.plugins.modalities.video",
    "codi2.plugins.modalities.text",
    "codi2.plugins.encoders.imagebind",
    "codi2.plugins.encoders.openclip",
    "codi2.plugins.encoders.hf_clip",
    "codi2.plugins.llms.hf_causal_lm",
    "codi2.plugins.decoders.sd_unclip",
    "codi2.plugins.decoders.audioldm2",
    "codi2.plugins.decoders.zeroscope",
    "codi2.plugins.decoders.diffusers_pipeline",
    "codi2.plugins.tiny",
    "codi2.plugins.toy",
    "codi2.presets",
    "codi2.toy.plugin",
    "codi2.evaluation.plugin",
    "codi2.training.builders",
)
