"""codi2-pointcloud: a modality codi2 has never heard of, added from outside.

Three registrations, all through codi2's ordinary hooks (see docs/modalities.md):

- the modality ``pointcloud``: ``Media("pointcloud", float32 [N, 3])``, read from and written
  to ASCII PLY files (:mod:`codi2_pointcloud.modality`);
- the encoder ``pointcloud-encoder``: a frozen PointNet-style feature (shared per-point MLP,
  max-pooled), so a model can read point clouds;
- the decoder ``pointcloud-decoder``: a small denoising-diffusion model over a fixed number of
  points, so a model can write them.

Importing this module imports no torch (codi2 lists plugins without loading any weights).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from codi2.registry import hookimpl

__version__ = "0.1.0"


class EncoderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(16, ge=1, description="feature width")
    seed: int = Field(0, description="seed of the frozen random weights")


class DecoderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: int = Field(32, ge=4, le=4096, description="points per generated cloud")
    tokens: int = Field(2, ge=1, description="conditioning vectors")
    dim: int = Field(8, ge=1, description="conditioning width")
    steps: int = Field(20, ge=1, description="default sampling steps")
    seed: int = 0


def _spec(options):
    from codi2_pointcloud.modality import spec

    return spec()


def _encoder(options: EncoderOptions):
    from codi2_pointcloud.components import PointCloudEncoder

    return PointCloudEncoder(**options.model_dump())


def _decoder(options: DecoderOptions):
    from codi2_pointcloud.components import PointCloudDecoder

    return PointCloudDecoder(**options.model_dump())


@hookimpl
def codi2_register_modalities(register):
    register("pointcloud", load=_spec, description="3-D point clouds, float32 [N, 3]; ASCII PLY files")


@hookimpl
def codi2_register_encoders(register):
    register("pointcloud-encoder", load=_encoder, options=EncoderOptions,
             description="frozen PointNet-style point-cloud encoder (example plugin)")


@hookimpl
def codi2_register_decoders(register):
    register("pointcloud-decoder", load=_decoder, options=DecoderOptions,
             description="small diffusion decoder of point clouds (example plugin)")
