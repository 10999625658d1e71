"""The old private names of the diffusers-decoder plumbing, now public in
:mod:`codi2.plugins.base` (kept so that decoders written against them still import; new code
imports ``codi2.plugins.base``)."""

from codi2.plugins.base import (
    DiffusersDecoder,
    check_cond,
    check_media,
    check_no_reference,
    noise_and_timesteps,
    prediction_target,
    resolve_device,
)

DiffusersDecoderBase = DiffusersDecoder
load_pipeline = DiffusersDecoder.load_pipeline

__all__ = ["DiffusersDecoderBase", "check_cond", "check_media", "check_no_reference", "load_pipeline",
           "noise_and_timesteps", "prediction_target", "resolve_device"]  # fmt: skip
